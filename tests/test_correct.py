"""The corrector: prompts, the parser (table + fuzz), the reference corrector, and `correct()`."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lema_hub import correct as correct_stage
from lema_hub import formats
from lema_hub.artifacts import load_rows, save_dataset_config
from lema_hub.calculator import numbers_in
from lema_hub.correct import CorrectConfig, correct
from lema_hub.corrector import parse
from lema_hub.corrector.parse import MAX_CORRECTION_CHARS, parse_correction
from lema_hub.corrector.prompt import build_corrector_input, corrector_prompt, split_demonstrations
from lema_hub.corrector.reference import reference_correction, reference_step
from lema_hub.grading import grade
from lema_hub.problems import load_sample
from lema_hub.schema import CORRECTION_COLUMNS, CORRECTOR_TOKENS, REJECT_REASONS
from tests.regex_linearity import linearity_problems

# (task, answer of each demonstration's corrected solution) for the bundled prompts.
DEMO_ANSWERS = {"gsm8k": ["288", "3", "840", "100"], "math": ["\\frac{7}{2}", "125", "8\\sqrt{2}", "72"]}


def _demo_parts(demo: str) -> tuple[str, list[str], str]:
    """(question, original steps, the corrector's part after `Incorrect Step:`) of one demonstration."""
    question, _, rest = demo.partition("\nOriginal Solution:")
    original, _, correction = rest.partition("Incorrect Step:")
    steps = [s for _, s in formats.parse_rendered_steps(original)]
    return question.removeprefix("Question:").strip(), steps, correction


# ------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize("task", ["gsm8k", "math"])
def test_bundled_prompt_has_four_sound_demonstrations(task):
    prompt = corrector_prompt(task)
    assert re.fullmatch(rf"lema-hub/corrector_{task}@sha256:[0-9a-f]{{12}}", prompt.ref)
    instruction, demos = split_demonstrations(prompt.text)
    assert "incorrect" in instruction.lower() and "explain" in instruction.lower()
    assert len(demos) == 4
    for demo, answer in zip(demos, DEMO_ANSWERS[task]):
        question, steps, correction = _demo_parts(demo)
        # The paper's exact layout: labels, braces, `...` when the fix starts after step 1.
        assert demo.startswith("Question: ") and "\nOriginal Solution:\n{\nStep 1: " in demo
        assert re.search(r"\nIncorrect Step: Step \d+\.\nExplanation: \S.*\nCorrect Solution:\n\{\n", demo)
        assert demo.endswith("\n}")
        parsed = parse_correction(correction, len(steps), task)
        assert parsed.ok, parsed.detail
        assert ("\n...\n" in demo) == (parsed.incorrect_step > 1)
        assert grade("\n".join(parsed.corrected_steps), answer, task).verdict == "correct"
        # ... and the original solution's answer is wrong: a demonstration of a real mistake.
        assert grade(steps[-1], answer, task).verdict == "wrong"


@pytest.mark.parametrize("style", ["plain", "chat"])
def test_query_ends_at_incorrect_step(style):
    prompt = corrector_prompt("gsm8k")
    steps = ["She has 3 + 4 = 8 apples.", "The answer is 8."]
    out = build_corrector_input(prompt, "Ann has 3 apples and gets 4 more. How many?", steps, style)
    text = out if style == "plain" else out[0]["content"]
    if style == "chat":
        assert out == [{"role": "user", "content": text}]
    assert text.startswith(prompt.text.rstrip("\n"))
    assert text.endswith(formats.corrector_query("Ann has 3 apples and gets 4 more. How many?", steps))
    assert text.endswith("Step 2: The answer is 8.\n}\nIncorrect Step:")
    _, demos = split_demonstrations(text)
    assert len(demos) == 5


def test_prompt_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        corrector_prompt("gsm8k", str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="corrector prompt"):
        corrector_prompt("gsm8k", str(bad))
    with pytest.raises(ValueError, match="task"):
        corrector_prompt("physics")


@pytest.mark.shared_data
@pytest.mark.parametrize("task", ["gsm8k", "math"])
def test_paper_prompt_file_verbatim(shared_data, task):
    path = shared_data / "lema" / "prompts" / f"prompt_correction_{task}.txt"
    prompt = corrector_prompt(task, str(path))
    raw = path.read_bytes().decode()
    assert prompt.text == raw and prompt.name == f"prompt_correction_{task}" and prompt.newline == "\r\n"
    steps = ["Tom has 5 * 2 = 12 marbles.", "The answer is 12."]
    query = build_corrector_input(prompt, "Tom has 5 bags of 2 marbles. How many marbles?", steps)
    assert query.startswith(raw)  # verbatim, then a blank line, then the query in the file's CRLF
    tail = query[len(raw) :]
    assert tail.startswith("\r\n\r\nQuestion: Tom has") and tail.endswith("\r\n}\r\nIncorrect Step:")
    assert "\n" not in tail.replace("\r\n", "")
    instruction, demos = split_demonstrations(query)
    assert instruction.startswith("For the following math") and len(demos) == 5
    # Our parser reads the paper's own demonstrations (the last demo's question is ours).
    for demo in demos[:-1]:
        _, dsteps, correction = _demo_parts(demo)
        parsed = parse_correction(correction, len(dsteps), task)
        assert parsed.incorrect_step is not None and parsed.explanation
        assert parsed.ok, parsed.detail


# ------------------------------------------------------------------------------------------- parser
GOOD = " Step 2.\nExplanation: 48 / 2 halves the muffins; twice means times 2.\nCorrect Solution:\n{\n...\nStep 2: It sold 48 * 2 = 96 cookies.\nStep 3: The answer is 96.\n}"

PARSER_TABLE = [
    ("clean", GOOD, 3, None, 2, "96"),
    ("crlf", GOOD.replace("\n", "\r\n"), 3, None, 2, "96"),
    ("label repeated", "Incorrect Step: Step 2.\n" + GOOD.split("\n", 1)[1], 3, None, 2, "96"),
    ("colon after number", GOOD.replace(" Step 2.", " Step 2:"), 3, None, 2, "96"),
    (
        "markdown bold",
        GOOD.replace("Explanation:", "**Explanation:**").replace(" Step 2.", " **Step 2.**"),
        3,
        None,
        2,
        "96",
    ),
    ("no braces", GOOD.replace("{\n", "").replace("\n}", ""), 3, None, 2, "96"),
    ("extra braces", GOOD.replace("{\n", "{{\n").replace("\n}", "\n}}"), 3, None, 2, "96"),
    ("inline braces", GOOD.replace("{\n...\n", "{ ").replace(" 96.\n}", " 96. }"), 3, None, 2, "96"),
    (
        "steps as 'Step 2.'",
        GOOD.replace("Step 2: It", "Step 2. It").replace("Step 3:", "Step 3."),
        3,
        None,
        2,
        "96",
    ),
    (
        "runs into next demo",
        GOOD + "\n\nQuestion: Another one?\nOriginal Solution:\n{\nStep 1: x\n}",
        3,
        None,
        2,
        "96",
    ),
    ("restates earlier steps", GOOD.replace("...", "Step 1: It made $144 from muffins."), 3, None, 2, "96"),
    (
        "bare number",
        " 2\nExplanation: wrong.\nCorrect Solution:\n{\nStep 2: The answer is 96.\n}",
        3,
        None,
        2,
        "96",
    ),
    ("boxed answer", GOOD.replace("The answer is 96.", "So $\\boxed{96}$."), 3, None, 2, "96"),
    (
        "no solution label",
        " Step 2.\nExplanation: twice means times 2.\nStep 2: 48 * 2 = 96.\nStep 3: The answer is 96.",
        3,
        None,
        2,
        "96",
    ),
    ("step zero", GOOD.replace(" Step 2.", " Step 0."), 3, "step_out_of_range", 0, None),
    ("step beyond", GOOD.replace(" Step 2.", " Step 7."), 3, "step_out_of_range", 7, None),
    (
        "empty explanation",
        GOOD.replace("48 / 2 halves the muffins; twice means times 2.", "  "),
        3,
        "empty_explanation",
        2,
        None,
    ),
    (
        "no explanation",
        " Step 2.\nCorrect Solution:\n{\nStep 2: The answer is 96.\n}",
        3,
        "empty_explanation",
        2,
        None,
    ),
    (
        "no final answer",
        GOOD.replace("Step 3: The answer is 96.", "Step 3: So 96 cookies."),
        3,
        "no_answer",
        2,
        None,
    ),
    ("empty solution", " Step 2.\nExplanation: twice.\nCorrect Solution:\n{\n}", 3, "parse_error", 2, None),
    (
        "starts after k",
        GOOD.replace("Step 2: It", "Step 3: It").replace("Step 3: The", "Step 4: The"),
        3,
        "inconsistent_steps",
        2,
        None,
    ),
    ("no index", "I think the solution is wrong.\nExplanation: x", 3, "parse_error", None, None),
    ("empty", "", 3, "parse_error", None, None),
    ("failed", None, 3, "generation_failed", None, None),
]


@pytest.mark.parametrize(
    "raw,num_steps,reason,step,answer", [t[1:] for t in PARSER_TABLE], ids=[t[0] for t in PARSER_TABLE]
)
def test_parser_table(raw, num_steps, reason, step, answer):
    parsed = parse_correction(raw, num_steps)
    assert parsed.reject_reason == reason, parsed.detail
    assert parsed.incorrect_step == step
    if reason is None:
        assert parsed.corrected_answer == answer
        assert parsed.corrected_steps[0].startswith(("It sold", "48 * 2", "The answer", "So"))
        assert parsed.explanation and "Step" not in parsed.explanation.split()[0]
        assert not any("}" in s and "{" not in s for s in parsed.corrected_steps)


def test_parser_keeps_latex_braces():
    raw = " Step 1.\nExplanation: bad.\nCorrect Solution:\n{\nStep 1: $x = \\frac{1}{2}$.\nStep 2: The answer is \\frac{1}{2}.\n}"
    parsed = parse_correction(raw, 2, "math")
    assert parsed.ok and parsed.corrected_answer == "\\frac{1}{2}"
    assert parsed.corrected_steps == ["$x = \\frac{1}{2}$.", "The answer is \\frac{1}{2}."]


FRAGMENTS = [
    "Incorrect Step:",
    " Step ",
    "Step 2.",
    "Step 3:",
    "Explanation:",
    "Correct Solution:",
    "{",
    "}",
    "...",
    "\n",
    "\r\n",
    "**",
    "The answer is ",
    "42",
    "\\boxed{",
    "Question:",
    " ",
    "-1",
    "99999999999",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=30),
    st.integers(min_value=0, max_value=12),
)
def test_parser_fuzz_never_raises_and_every_reject_has_a_reason(parts, num_steps):
    parsed = parse_correction("".join(parts), num_steps)
    assert parsed.reject_reason is None or parsed.reject_reason in REJECT_REASONS
    if parsed.reject_reason is None:
        assert 1 <= parsed.incorrect_step <= num_steps
        assert parsed.explanation.strip() and parsed.corrected_steps and parsed.corrected_answer
    else:
        assert parsed.detail


# ------------------------------------------------------------------- parser: adversarial inputs
# The patterns the parser used before it was made linear: 16,000 newlines took 4.6 s (x4 per doubling).
_QUADRATIC_PATTERNS = [
    (re.compile(r"\s*[>#*]*\s*incorrect\s+step\s*[:\-]?", re.I), "match"),
    (re.compile(r"\n\s*(?:Question|Original Solution)\s*:", re.I), "search"),
    (re.compile(r"step\s*#?\s*(\d+)", re.I), "search"),
    (re.compile(r"^\s*[-*>]?\s*step\s*(\d+)\s*[:.)\-]\s*(.*)$", re.I), "match"),
    (re.compile(r"\n\s*\n(?=Question:)"), "search"),
]


def test_parser_patterns_cannot_backtrack_quadratically():
    # The check bites: it flags every pattern that made the old parser quadratic.
    for pattern, mode in _QUADRATIC_PATTERNS:
        assert linearity_problems(pattern, mode), pattern.pattern
    listed = {id(p) for p, _ in parse._PARSER_PATTERNS}
    module_patterns = [v for k, v in vars(parse).items() if isinstance(v, re.Pattern)]
    assert module_patterns and all(id(p) in listed for p in module_patterns)  # none left unchecked
    for pattern, mode in parse._PARSER_PATTERNS:
        assert linearity_problems(pattern, mode) == [], pattern.pattern


def _pad(text: str, n: int, ws: str) -> str:
    """GOOD with `n` characters of whitespace `ws` after every line (the shape that was quadratic)."""
    return text.replace("\n", "\n" + ws * (n // (len(ws) * text.count("\n"))))


@pytest.mark.parametrize("ws", ["\n", " ", "\t", "\n \t", "\r\n"], ids=["nl", "sp", "tab", "mixed", "crlf"])
def test_parser_reads_a_correction_padded_to_the_cap(ws):
    raw = _pad(GOOD, MAX_CORRECTION_CHARS - len(GOOD), ws)
    assert len(GOOD) < len(raw) <= MAX_CORRECTION_CHARS
    parsed = parse_correction(raw, 3)
    assert parsed.ok, parsed.detail
    assert (parsed.incorrect_step, parsed.corrected_answer) == (2, "96")
    assert parsed.corrected_steps == ["It sold 48 * 2 = 96 cookies.", "The answer is 96."]


@pytest.mark.parametrize(
    "raw,reason",
    [
        ("x" + "\n" * (MAX_CORRECTION_CHARS - 2) + "x", "parse_error"),
        ("Step" + "\n" * (MAX_CORRECTION_CHARS - 4), "parse_error"),
        (" Step 2.\nExplanation: a\n" + "\n" * (MAX_CORRECTION_CHARS - 30), "parse_error"),
        (" Step 2.\nExplanation: a\nCorrect Solution:\n{" + "{ " * 15000 + "\nStep 2: The answer is 5", None),
        (" Step 2.\nExplanation: a\nCorrect Solution:\nStep 2: The answer is 5." + "}" * 30000, None),
        ("x" * (MAX_CORRECTION_CHARS + 1), "too_long"),
        ("\n" * MAX_CORRECTION_CHARS + " Step 2.", "too_long"),
    ],
    ids=["newlines", "step-newlines", "explanation-newlines", "open-braces", "close-braces", "long", "ws"],
)
def test_parser_on_degenerate_outputs(raw, reason):
    parsed = parse_correction(raw, 3)
    assert parsed.reject_reason == reason, parsed.detail
    if reason is None:
        assert parsed.corrected_answer == "5" and parsed.corrected_steps[0].startswith("The answer is 5")
    if reason == "too_long":
        assert f"{MAX_CORRECTION_CHARS:,}" in parsed.detail and parsed.incorrect_step is None


REPEATED = (
    " Step 2.\nExplanation: twice means times 2.\nCorrect Solution: {\nStep 2: It sold 2 * 2 = 4.\n"
    "Step 3: The answer is 5.\n}\nIncorrect Step: Step 2.\nExplanation: again.\nCorrect Solution: {\n"
    "Step 2: The answer is 7.\n}"
)


@pytest.mark.parametrize(
    "raw",
    [
        REPEATED,  # the model starts its block again after the closing brace
        REPEATED.replace("{", "").replace("}", ""),  # ... with no braces at all
        REPEATED.replace("\nIncorrect Step: Step 2.", ""),  # ... or goes on without the label
        REPEATED.replace("The answer is 5.\n}", "The answer is 5. }"),  # ... after an inline brace
    ],
    ids=["repeat", "repeat-no-braces", "chatter-after-brace", "inline-brace"],
)
def test_parser_keeps_only_the_first_block(raw):
    parsed = parse_correction(raw, 3)
    assert parsed.ok, parsed.detail
    assert parsed.explanation == "twice means times 2."
    assert parsed.corrected_steps == ["It sold 2 * 2 = 4.", "The answer is 5."]
    assert parsed.corrected_answer == "5"


def test_parser_huge_step_numbers_are_out_of_range():
    for digits in (19, 4301, 20000):
        parsed = parse_correction(GOOD.replace(" Step 2.", f" Step {'9' * digits}."), 3)
        assert parsed.reject_reason == "step_out_of_range", parsed.detail
        assert parsed.incorrect_step is None and f"{digits:,}-digit step" in parsed.detail
    # 18 digits still fit an int64 column: the number is kept.
    parsed = parse_correction(GOOD.replace(" Step 2.", f" Step {'9' * 18}."), 3)
    assert (parsed.reject_reason, parsed.incorrect_step) == ("step_out_of_range", 10**18 - 1)
    # A huge number inside the corrected solution is a step after the others, not a parser error.
    parsed = parse_correction(GOOD.replace("Step 3:", f"Step {'9' * 5000}:"), 3)
    assert parsed.ok and parsed.corrected_steps == ["It sold 48 * 2 = 96 cookies.", "The answer is 96."]


# ------------------------------------------------------------------------------ reference corrector
def _perturbed_paths():
    """(problem, wrong steps, perturbed step) for every gold step with a computed result, the result
    changed to a value that appears nowhere in the problem or its reference computation."""
    out = []
    for p in load_sample("train") + load_sample("test"):
        steps = formats.gold_steps(p)
        known = set(numbers_in(p.question)) | set(
            numbers_in(p.gold_solution.replace("<<", " ").replace(">>", " "))
        )
        for j, step in enumerate(steps[:-1]):
            head, eq, seg = step.rpartition("=")
            m = re.search(r"\d[\d,]*(?:\.\d+)?", seg)
            if not eq or not m:
                continue
            value = float(m.group(0).replace(",", ""))
            new = next(
                value + d for d in (7, 13, 29, 101, 1009) if all(abs(value + d - k) > 0.01 for k in known)
            )
            new_s = str(int(new)) if new.is_integer() else f"{new:.2f}"
            wrong = list(steps)
            wrong[j] = head + eq + seg[: m.start()] + new_s + seg[m.end() :]
            out.append((p, wrong, j + 1))
    return out


def test_reference_corrector_finds_the_perturbed_step():
    cases = _perturbed_paths()
    assert len(cases) >= 80
    for problem, wrong, k in cases:
        d = problem.to_dict()
        assert reference_step(d, wrong) == k, wrong
        fix = reference_correction(d, wrong)
        assert fix is not None and fix.incorrect_step == k
        # Rendered in the training format, the fix parses back and reaches gold.
        raw = formats.correction_target(fix.incorrect_step, fix.explanation, fix.corrected_steps)
        parsed = parse_correction(raw, len(wrong))
        assert parsed.ok, (parsed.detail, raw)
        assert grade("\n".join(parsed.corrected_steps), problem.gold_answer).verdict == "correct"
        assert numbers_in(wrong[k - 1].rpartition("=")[2])[0] != 0 and "Step" in fix.explanation


def test_reference_corrector_when_the_path_stops_early():
    problem = load_sample("train")[0]  # 4*18=72, 72-15=57, 57/3=19
    steps = formats.gold_steps(problem)
    wrong = steps[:2] + ["The answer is 57."]
    assert reference_step(problem.to_dict(), wrong) == 3
    fix = reference_correction(problem.to_dict(), wrong)
    assert fix.incorrect_step == 3 and fix.corrected_steps == steps[2:]


def test_reference_corrector_does_not_apply_without_annotations():
    problem = {
        "source": "math",
        "question": "Find x.",
        "gold_solution": "So $x=\\boxed{2}$.",
        "gold_answer": "2",
    }
    assert reference_step(problem, ["x = 3.", "The answer is 3."]) is None
    assert reference_correction(problem, ["x = 3.", "The answer is 3."]) is None


# --------------------------------------------------------------------------------------- correct()
def _mistakes_folder(tmp_path, n_problems: int = 6):
    rows = []
    cases = _perturbed_paths()
    seen = set()
    for problem, wrong, _k in cases:
        if problem.problem_id in seen or len(seen) >= n_problems:
            continue
        seen.add(problem.problem_id)
        rows.append(
            {
                **problem.to_dict(),
                "generator": "perturb",
                "sample_index": 0,
                "sampling": {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": 0},
                "completion": " ".join(wrong),
                "steps": wrong,
                "predicted_answer": "0",
                "verdict": "wrong",
                "finish_reason": "stop",
                "prompt_tokens": 1,
                "completion_tokens": 1,
            }
        )
    # One MATH-style mistake: the reference rules do not apply to it.
    rows.append(
        {
            **rows[0],
            "problem_id": "mathlike/0",
            "source": "math",
            "gold_solution": "$\\boxed{7}$",
            "gold_answer": "7",
            "level": 2,
            "subject": "Algebra",
        }
    )
    folder = tmp_path / "mistakes"
    save_dataset_config(folder, "sample", {"train": rows})
    return folder, rows


def test_correct_with_reference_backend(tmp_path):
    folder, rows = _mistakes_folder(tmp_path)
    out = tmp_path / "corrections"
    summary = correct(CorrectConfig(mistakes=str(folder), output_dir=str(out)))
    assert summary["n"] == len(rows) == summary["accepted"] + summary["rejected"]
    assert summary["accepted"] == len(rows) - 1 and summary["reject_reasons"] == {"no_reference": 1}
    accepted = load_rows(str(out), "sample")
    rejected = load_rows(str(out), "sample-rejected")
    assert len(accepted) + len(rejected) == len(rows)
    row = accepted[0]
    assert row["corrector"] == "reference" and row["corrector_kind"] == "rule-based"
    assert re.fullmatch(r"reference-rules@sha256:[0-9a-f]{12}", row["corrector_prompt"])
    assert row["accepted"] and row["reject_reason"] is None and row["reference_step"] == row["incorrect_step"]
    assert row["raw_output"].startswith(" Step ") and row["steps"] and row["question"]
    assert rejected[0]["reject_reason"] == "no_reference" and not rejected[0]["accepted"]
    assert summary["reference_agreement"]["rate"] == 1.0
    assert set(summary["by_generator"]) == {"perturb"} and "2" in summary["by_level"]
    assert (out / "README.md").is_file() and (out / "run_summary.json").is_file()


def test_correct_writes_the_schema_columns_and_types(tmp_path):
    import pyarrow.parquet as pq

    folder, rows = _mistakes_folder(tmp_path)
    out = tmp_path / "corrections"
    correct(CorrectConfig(mistakes=str(folder), output_dir=str(out)))
    for config in ("sample", "sample-rejected"):
        schema = pq.read_schema(next((out / "data" / config).glob("*.parquet")))
        assert set(schema.names) == set(rows[0]) | set(CORRECTION_COLUMNS)
        # The reference corrector reports no tokens: the columns are null but still int64 on disk.
        for name in (CORRECTOR_TOKENS.prompt, CORRECTOR_TOKENS.completion, "incorrect_step"):
            assert str(schema.field(name).type) == "int64", name
    assert {r[CORRECTOR_TOKENS.prompt] for r in load_rows(str(out), "sample")} == {None}
    card = (out / "README.md").read_text()
    assert f"| `reference` | {len(rows)} | 0 | 0 | none (rule-based) | $0 (rule-based, no model) |" in card


def test_correct_config_errors():
    with pytest.raises(ValueError, match="model"):
        CorrectConfig(mistakes="x", backend="openai")
    with pytest.raises(ValueError, match="backend"):
        CorrectConfig(mistakes="x", backend="gpt")
    with pytest.raises(ValueError, match="num_attempts"):
        CorrectConfig(mistakes="x", num_attempts=0)


def test_grading_a_correction_maps_each_verdict_to_its_reject_reason():
    def row(steps: list[str], gold: str) -> dict:
        return dict(source="gsm8k", gold_answer=gold, corrected_steps=steps, corrected_answer=None,
                    reject_reason=None, reject_detail=None, accepted=False)  # fmt: skip

    rows = [
        row(["Step 2: 4 + 1 = 5.", "The answer is 5."], "5"),
        row(["Step 2: 4 + 2 = 6.", "The answer is 6."], "5"),
        row(["Step 2: she keeps going and never says how many."], "5"),  # no final answer
        row(["Step 2: 4 + 1 = 5.", "The answer is 5."], "five"),  # a gold that is no number
    ]
    correct_stage._grade_corrections(rows, workers=1)
    assert [(r["accepted"], r["reject_reason"]) for r in rows] == [
        (True, None),
        (False, "wrong_answer"),
        (False, "no_answer"),
        (False, "ungradeable"),
    ]
    assert "no final answer" in rows[2]["reject_detail"]


@pytest.mark.slow
def test_correct_with_the_tiny_local_model(tmp_path, tiny_model):
    """A real (random-weight) corrector through the transformers backend: every row is kept, with a reason."""
    folder, rows = _mistakes_folder(tmp_path, n_problems=2)
    summary = correct(
        CorrectConfig(
            mistakes=str(folder),
            output_dir=str(tmp_path / "out"),
            backend="transformers",
            model=tiny_model,
            prompt_style="plain",
            max_tokens=8,
            progress=False,
        )
    )
    assert summary["n"] == len(rows) == summary["accepted"] + summary["rejected"]
    assert sum(summary["reject_reasons"].values()) == summary["rejected"]
    assert set(summary["reject_reasons"]) <= set(REJECT_REASONS)
    rejected = load_rows(summary["output_dir"], "sample-rejected")
    assert len(rejected) == summary["rejected"] and all(r["reject_reason"] for r in rejected)
    assert all(r["corrector"] == tiny_model and r["corrector_kind"] == "llm" for r in rejected)
    assert summary["tokens"]["prompt_tokens"] > 500 * len(rows)  # the 4-shot prompt went in
    assert len(load_rows(summary["output_dir"], "sample", missing_ok=True)) == summary["accepted"]


def test_the_old_import_paths_still_import_the_moved_names():
    from lema_hub import claims, correction
    from lema_hub.corrector import claims as new_claims

    assert correction.correct is correct and correction.CorrectConfig is CorrectConfig
    assert correction.parse_correction is parse_correction and correction.REJECT_REASONS is REJECT_REASONS
    assert correction.reference_correction is reference_correction and correction.load_rows is load_rows
    assert {name for name in correction.__all__ if not hasattr(correction, name)} == set()
    assert claims.first_false_step is new_claims.first_false_step and claims.rules_ref is new_claims.rules_ref
