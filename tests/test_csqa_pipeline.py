"""CommonsenseQA end to end, offline: load -> collect -> correct -> build -> evaluate -> cards.

The generator and the LLM corrector are one fake OpenAI-compatible server on 127.0.0.1 that answers
CSQA CoT prompts with right, misspelt (mapping needed), wrong and answer-less paths, and corrector
prompts in the paper's CSQA correction format. Every card is read from a folder a stage wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lema_hub import csqa
from lema_hub.corrector.parse import MAX_CORRECTION_CHARS, parse_correction
from lema_hub.problems import ProblemArgs, load_csqa_sample, load_problems
from tests.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
TRAIN_FILE = REPO / "lema_hub" / "data" / "csqa_sample_train.jsonl"
TEST_FILE = REPO / "lema_hub" / "data" / "csqa_sample_test.jsonl"
PROBLEMS = {p.question: p for split in ("train", "test") for p in load_csqa_sample(split)}
# Corrector behaviour by question: most get a right correction; these a wrong one / an unreadable one.
PROBLEMS_LIST = sorted(PROBLEMS)
_TRAIN = sorted(p.question for p in load_csqa_sample("train"))
WRONG_FIX, MALFORMED_FIX, MISSPELT_FIX = {_TRAIN[0]}, {_TRAIN[1]}, {_TRAIN[2]}


def _text(payload: dict) -> str:
    return payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]


def _other(p) -> str:
    return next(c for c in p.candidates if c != p.gold_answer)


def cot_path(p, kind: int) -> str:
    """0: right as written; 1: right but misspelt (the mapping is needed); 2: wrong; 3: no answer."""
    lines = [f"{c.capitalize()}: this candidate is considered." for c in p.candidates]
    if kind == 0:
        return "\n".join(lines + [f"The answer is {p.gold_answer}."])
    if kind == 1:
        return "\n".join(lines + [f"The answer is {p.gold_answer[:-1]}."])
    if kind == 2:
        return "\n".join(lines + [f"It fits best, so the answer is {_other(p)}."])
    return "\n".join(lines + ["I am not sure."])


def responder(payload: dict) -> str:
    text = _text(payload)
    if text.rstrip().endswith(csqa.MISTAKES_LABEL):  # the corrector: answer the last query
        question = text.rsplit("\nQuestion: ", 1)[1].split("\n", 1)[0].strip()
        p = PROBLEMS[question]
        if question in MALFORMED_FIX:
            return " The original answer is wrong, and here is no corrected block."
        answer = _other(p) if question in WRONG_FIX else p.gold_answer
        if question in MISSPELT_FIX:  # maps to the gold candidate, but is not it as written: rejected
            answer = p.gold_answer[:-1]
        return (
            f" The original answer dismisses {p.gold_answer!r} without a reason.\n"
            f"{csqa.CORRECTED_ANSWER_LABEL}\n{{\n"
            + "\n".join(f"{c.capitalize()}: judged again." for c in p.candidates)
            + f"\nThe answer is {answer}.\n}}\n{csqa.MISTAKES_LABEL} a second block that is ignored"
        )
    question, _ = csqa.parse_csqa_prompt(text if text.endswith("\n") else text + "\n")
    p = PROBLEMS[question]
    if payload.get("temperature", 0) == 0:  # evaluation (greedy): behaviour by problem
        return cot_path(p, PROBLEMS_LIST.index(question) % 4)
    return cot_path(p, payload.get("seed", 0) % 4)


def _endpoint(url: str) -> dict:
    return dict(backend="openai", base_urls=[url], concurrency=4, request_timeout=5.0, max_retries=2)


def _rows(folder: Path, config: str, split: str = "train") -> list[dict]:
    """Rows as the stage wrote them (the parquet files of the config)."""
    import pyarrow.parquet as pq

    files = sorted((folder / "data" / config).glob(f"{split}-*.parquet"))
    assert files, f"no {split} parquet for {config} in {folder}"
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def _card(folder: Path) -> str:
    return (folder / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """collect -> correct -> build -> evaluate on CSQA rows in the Hub's shape (`problems: csqa`)."""
    from lema_hub.build import BuildConfig, build
    from lema_hub.collect import CollectConfig, collect
    from lema_hub.correct import CorrectConfig, correct
    from lema_hub.evaluate import EvalConfig, evaluate

    tmp = tmp_path_factory.mktemp("csqa")
    out: dict = {"tmp": tmp}
    with FakeOpenAIServer(responder=responder) as srv:
        out["collect"] = collect(
            CollectConfig(
                problems="csqa", problems_path=str(TRAIN_FILE), problems_split="train",
                output_dir=str(tmp / "mistakes"), model="fake-model", prompt_style="chat",
                num_samples=4, temperature=0.8, max_tokens=512, seed=0, progress=False, **_endpoint(srv.base_url),
            )
        )  # fmt: skip
        out["collect_prompts"] = [_text(p) for p in srv.payloads]
        srv.payloads.clear()
        out["correct"] = correct(
            CorrectConfig(
                mistakes=str(tmp / "mistakes"), output_dir=str(tmp / "corrections"), model="fake-model",
                prompt_style="plain", max_tokens=512, progress=False, **_endpoint(srv.base_url),
            )
        )  # fmt: skip
        out["corrector_prompts"] = [_text(p) for p in srv.payloads]
        out["build"] = build(
            BuildConfig(
                corrections=str(tmp / "corrections"), mistakes=str(tmp / "mistakes"),
                include_correct_samples=True, problems="csqa", problems_path=str(TRAIN_FILE),
                output_dir=str(tmp / "mixture"), shuffle=False, decontaminate="csqa_sample_test",
            )
        )  # fmt: skip
        out["evaluate"] = evaluate(
            EvalConfig(
                models=["fake-model"], model_labels=["fake"], problems="csqa", problems_path=str(TEST_FILE),
                problems_split="validation", prompt_style="plain", max_new_tokens=512,
                output_dir=str(tmp / "eval"), **_endpoint(srv.base_url),
            )
        )  # fmt: skip
    return out


def test_collect_prompts_grades_and_card(pipeline):
    folder = pipeline["tmp"] / "mistakes"
    problems = load_problems(ProblemArgs(problems="csqa", problems_path=str(TRAIN_FILE)))
    assert len(problems) == 12 and all(p.candidates and p.gold_answer in p.candidates for p in problems)
    # Every request is the paper's CSQA prompt with the problem's candidates (not the math prompt).
    assert sorted(x.strip() for x in pipeline["collect_prompts"]) == sorted(
        csqa.csqa_prompt(p.question, p.candidates).strip() for p in problems for _ in range(4)
    )
    samples = _rows(folder, "csqa-samples")
    assert len(samples) == 48 and all(s["candidates"] for s in samples)
    verdicts = {(s["sample_index"] % 4, s["verdict"]) for s in samples}
    # right, misspelt-but-right (mapped), wrong candidate, no answer
    assert verdicts == {(0, "correct"), (1, "correct"), (2, "wrong"), (3, "no_answer")}
    misspelt = [s for s in samples if s["sample_index"] == 1]
    assert all(s["predicted_answer"] == s["gold_answer"][:-1] for s in misspelt)
    mistakes = _rows(folder, "csqa")
    assert len(mistakes) == 12 and {m["verdict"] for m in mistakes} == {"wrong"}
    assert pipeline["collect"]["wrong"] == 12 and pipeline["collect"]["correct"] == 24
    card = _card(folder)
    assert "license: mit" in card and "tau/commonsense_qa" in card and "CommonsenseQA: MIT" in card


def test_correct_uses_the_csqa_schema_and_rejects_mapped_gold(pipeline):
    folder = pipeline["tmp"] / "corrections"
    # The query shows the original answer in braces and ends at `Mistakes:`; the bundled prompt is ours.
    (first, *_) = pipeline["corrector_prompts"]
    assert first.startswith(csqa_prompt_instruction()) and first.endswith(f"}}\n{csqa.MISTAKES_LABEL}")
    assert "Incorrect Step:" not in first
    accepted, rejected = _rows(folder, "csqa"), _rows(folder, "csqa-rejected")
    assert len(accepted) == 9 and len(rejected) == 3
    assert {r["reject_reason"] for r in rejected} == {"wrong_answer", "parse_error", "inexact_choice"}
    assert not {r["question"] for r in accepted} & (MISSPELT_FIX | WRONG_FIX | MALFORMED_FIX)
    for r in accepted:
        assert r["incorrect_step"] is None and r["corrected_answer"] == r["gold_answer"]
        assert r["explanation"].startswith("The original answer dismisses")
        assert r["corrected_steps"][-1] == f"The answer is {r['gold_answer']}."
        assert "second block" not in "\n".join(r["corrected_steps"])  # the first block only
        assert r["corrector_prompt"].startswith("lema-hub/corrector_csqa@sha256:")
    # Graded correct (it maps to the gold candidate) but not the candidate as written: no training row.
    (inexact,) = [r for r in rejected if r["reject_reason"] == "inexact_choice"]
    assert inexact["question"] in MISSPELT_FIX and inexact["corrected_answer"] == inexact["gold_answer"][:-1]
    assert "edit-distance mapping" in inexact["reject_detail"]
    s = pipeline["correct"]
    assert s["accepted"] == 9
    assert s["reject_reasons"] == {"wrong_answer": 1, "parse_error": 1, "inexact_choice": 1}
    assert "unparsed" not in s["by_step_position"]  # no step index in this schema
    card = _card(folder)
    assert "75.0%" in card and "CommonsenseQA: MIT" in card
    assert "| inexact_choice | 1 |" in card


def csqa_prompt_instruction() -> str:
    from importlib import resources

    text = resources.files("lema_hub").joinpath("prompts", "corrector_csqa.txt").read_text()
    return text.split("\n", 1)[0]


def test_build_rows_in_the_csqa_formats(pipeline):
    folder = pipeline["tmp"] / "mixture"
    assert pipeline["build"]["gold_cot_rows"] == 0 and pipeline["build"]["no_gold_rationale"] == 12
    lema = _rows(folder, "csqa-lema")
    cot = [r for r in lema if r["kind"] == "cot"]
    fixes = [r for r in lema if r["kind"] == "correction"]
    # 24 correct paths: 12 name the gold candidate as written; 12 are misspelt, correct only through
    # the edit-distance mapping, and left out (training data is stricter than evaluation).
    assert len(cot) == 12 and {r["origin"] for r in cot} == {"sample"} and len(fixes) == 9
    assert pipeline["build"]["sample_inexact_dropped"] == 12
    assert pipeline["build"]["sample_duplicates_dropped"] == 0
    assert pipeline["build"]["inexact_corrections_dropped"] == 0  # correct rejected it already
    samples = {s["completion"]: s for s in _rows(pipeline["tmp"] / "mistakes", "csqa-samples")}
    for r in cot:  # each row is a path that stated the gold candidate as written, verbatim
        assert r["completion"] in samples and samples[r["completion"]]["sample_index"] % 4 == 0
    decontamination = pipeline["build"]["decontamination"]  # the held-out CSQA sample shares no 8-gram
    assert decontamination["test_questions"] == 8 and decontamination["dropped_cot_rows"] == 0
    p = PROBLEMS[cot[0]["question"]]
    assert cot[0]["prompt"] == csqa.csqa_prompt(p.question, p.candidates)
    assert all(r["completion"].endswith(f"The answer is {PROBLEMS[r['question']].gold_answer}.") for r in cot)
    fix = next(r for r in fixes if r["question"] not in MISSPELT_FIX)
    p = PROBLEMS[fix["question"]]
    assert fix["prompt"].startswith(csqa.CORRECTION_INSTRUCTION + "\nQuestion: " + p.question)
    assert fix["prompt"].endswith(f"\n{csqa.ORIGINAL_ANSWER_LABEL}\n{{\n{cot_path(p, 2)}\n}}\n")
    assert fix["completion"].startswith(f"{csqa.MISTAKES_LABEL} The original answer dismisses")
    assert f"\n{csqa.CORRECTED_ANSWER_LABEL}\n{{\n" in fix["completion"]
    assert fix["completion"].endswith(f"The answer is {p.gold_answer}.\n}}")
    # The misspelt correction was rejected: no view holds it.
    for view in ("lema", "cot_corrected", "no_explanation", "no_incorrect_step", "no_corrected_solution"):
        assert not {r["question"] for r in _rows(folder, f"csqa-{view}") if r["origin"] == "correction"} & (
            MISSPELT_FIX
        )
    by_q = {r["question"]: r for r in _rows(folder, "csqa-no_explanation") if r["kind"] == "correction"}
    assert by_q[fix["question"]]["completion"].startswith(csqa.CORRECTED_ANSWER_LABEL)
    by_q = {
        r["question"]: r for r in _rows(folder, "csqa-no_corrected_solution") if r["kind"] == "correction"
    }
    assert csqa.CORRECTED_ANSWER_LABEL not in by_q[fix["question"]]["completion"]
    # No step index to hide: the no_incorrect_step rows are the lema rows.
    no_step = {r["question"]: r for r in _rows(folder, "csqa-no_incorrect_step") if r["kind"] == "correction"}
    assert no_step[fix["question"]]["completion"] == fix["completion"]
    corrected = [r for r in _rows(folder, "csqa-cot_corrected") if r["origin"] == "correction"]
    assert len(corrected) == 9 and all(r["kind"] == "cot" for r in corrected)
    assert corrected[0]["prompt"] == csqa.csqa_prompt(
        corrected[0]["question"], PROBLEMS[corrected[0]["question"]].candidates
    )
    card = _card(folder)
    assert f"| `csqa-lema` | train | {len(lema)} |" in card
    assert f"| `csqa-lema` | {len(lema)} | {len(cot)} | {len(fixes)} | plain text |" in card
    assert "CommonsenseQA: MIT" in card


def test_evaluate_grades_with_the_mapping_and_reports_it(pipeline):
    folder = pipeline["tmp"] / "eval"
    rows = _rows(folder, "fake-csqa", "test")
    assert len(rows) == 8
    for r in rows:
        p = PROBLEMS[r["question"]]
        assert r["prompt"] == csqa.csqa_prompt(p.question, p.candidates)
        kind = PROBLEMS_LIST.index(r["question"]) % 4
        assert r["verdict"] == ["correct", "correct", "wrong", "no_answer"][kind]
        assert r["mapping_needed"] == [False, True, False, None][kind]
        assert r["mapped_answer"] == [p.gold_answer, p.gold_answer, _other(p), None][kind]
    n_correct = sum(r["verdict"] == "correct" for r in rows)
    mapped = sum(bool(r["mapping_needed"]) for r in rows)
    answered = sum(r["mapping_needed"] is not None for r in rows)
    entry = pipeline["evaluate"]["results"]["fake-csqa"]
    assert entry["accuracy"] == n_correct / 8
    assert [r["mapping"] for r in rows if r["mapping_needed"]] == ["edit_distance"] * mapped
    assert entry["choice_mapping"] == {
        "rule": "lema_hub",
        "answered": answered,
        "mapping_needed": mapped,
        "mapping_rate": mapped / answered,
        "by_kind": {
            "exact": answered - mapped,
            "label": 0,
            "contains": 0,
            "edit_distance": mapped,
            "no_match": 0,
        },
    }
    assert entry["protocol"]["choice_mapping"] == "lema_hub"
    assert (
        entry["protocol"]["prompt"] == "csqa-cot" and entry["protocol"]["prompt_template"] == csqa.CSQA_PROMPT
    )
    assert entry["benchmark_dataset"] == "tau/commonsense_qa"
    assert entry["protocol"]["stop"] == list(csqa.PLAIN_STOP)  # plain prompts stop at the next CSQA example
    card = _card(folder)
    assert f"| `fake-csqa` | 8 | {100 * n_correct / 8:.1f}% |" in card
    row = f"| `fake-csqa` | lema_hub | {answered} | {answered - mapped} | 0 | 0 | {mapped} | 0 | {100 * mapped / answered:.1f}% |"
    assert row in card
    assert "CommonsenseQA: MIT" in card


def test_reference_corrector_sets_csqa_rows_aside(pipeline, tmp_path):
    from lema_hub.correct import CorrectConfig, correct

    s = correct(CorrectConfig(mistakes=str(pipeline["tmp"] / "mistakes"), output_dir=str(tmp_path / "ref")))
    assert s["accepted"] == 0 and s["reject_reasons"] == {"no_reference": 12}
    assert {r["reject_reason"] for r in _rows(tmp_path / "ref", "csqa-rejected")} == {"no_reference"}


# ----------------------------------------------------------------------------- sample and paper files


def test_bundled_csqa_sample_loads_by_name():
    train = load_problems(ProblemArgs(problems="csqa_sample", problems_split="train"))
    test = load_problems(ProblemArgs(problems="csqa_sample", problems_split="test"))
    assert (len(train), len(test)) == (12, 8)
    assert train[0].problem_id == "csqa_sample/train/lema-csqa-train-00" and train[0].gold_solution == ""
    assert all(len(p.candidates) == 5 and p.gold_answer in p.candidates for p in train + test)
    assert not {p.question for p in train} & {p.question for p in test}
    from lema_hub.problems import task_of
    from lema_hub.schema import TRAIN_TASKS, task_dataset_id

    assert task_of(train[0]) == "csqa" and task_of(train[0].to_dict()) == "csqa" and task_of("csqa") == "csqa"
    assert "csqa" in TRAIN_TASKS and "csqa_sample" in TRAIN_TASKS
    assert task_dataset_id("csqa_sample") == "lema-hub/bundled-csqa-sample"


def test_a_csqa_file_of_another_shape_fails_with_one_line(tmp_path):
    from lema_hub.problems import ProblemSourceError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(ProblemSourceError, match=r"bad\.jsonl: rows need `choices`"):
        load_problems(ProblemArgs(problems="csqa", problems_path=str(bad)))


@pytest.mark.shared_data
def test_csqa_dev_prompts_in_collect_and_evaluate_are_the_papers(shared_data, tmp_path):
    """The paper's dev file loads as `problems: csqa`; collect sends and evaluate records its `prompt`
    field byte for byte."""
    from lema_hub.collect import CollectConfig, collect
    from lema_hub.evaluate import EvalConfig, evaluate

    path = shared_data / "lema" / "test_data" / "csqa_dev.jsonl"
    paper = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][:6]
    for p in load_problems(ProblemArgs(problems="csqa", problems_path=str(path), problems_limit=6)):
        PROBLEMS.setdefault(p.question, p)
    with FakeOpenAIServer(responder=responder) as srv:
        collect(
            CollectConfig(
                problems="csqa", problems_path=str(path), problems_split="validation", problems_limit=6,
                output_dir=str(tmp_path / "m"), model="fake-model", prompt_style="plain", num_samples=1,
                temperature=0.8, max_tokens=512, write_card=False, **_endpoint(srv.base_url),
            )
        )  # fmt: skip
        assert sorted(p["prompt"] for p in srv.payloads) == sorted(r["prompt"] for r in paper)
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        "".join(json.dumps({"completion": f"The answer is {r['answer']}."}) + "\n" for r in paper)
    )
    summary = evaluate(
        EvalConfig(
            models=["m"], problems="csqa", problems_path=str(path), problems_split="validation",
            problems_limit=6, predictions_path=str(preds), output_dir=str(tmp_path / "e"),
        )
    )  # fmt: skip
    (config,) = summary["results"]
    rows = _rows(tmp_path / "e", config, "test")
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in paper]
    assert summary["results"][config]["accuracy"] == 1.0


@pytest.mark.shared_data
def test_the_papers_csqa_corrector_prompt_works_by_path(shared_data, tmp_path):
    """`corrector_prompt_file: prompt_correction_csqa.txt` (CRLF): the query follows its line ends."""
    from lema_hub.corrector.prompt import build_choice_corrector_input, corrector_prompt, split_demonstrations

    path = shared_data / "lema" / "prompts" / "prompt_correction_csqa.txt"
    prompt = corrector_prompt("csqa", str(path))
    assert prompt.newline == "\r\n" and prompt.ref.startswith("prompt_correction_csqa@sha256:")
    text = build_choice_corrector_input(prompt, "Q?", ["a", "b"], "orig\nThe answer is a.")
    assert text.endswith(
        "\r\n\r\nQuestion: Q?\r\nCandidate Answers: a, b.\r\nOriginal Answer:\r\n{\r\norig\r\nThe answer is a.\r\n}\r\nMistakes:"
    )
    assert "\n" not in text.replace("\r\n", "")
    _, demos = split_demonstrations(prompt.text)
    assert len(demos) == 4
    # The paper's own demonstrations parse with our parser (continuations after `Mistakes:`).
    for demo in demos:
        parsed = parse_correction(demo.split(csqa.MISTAKES_LABEL, 1)[1], 0, "csqa")
        assert parsed.ok and parsed.corrected_answer and parsed.explanation, parsed.detail
    # A math prompt is refused for CSQA, and the CSQA prompt for math.
    with pytest.raises(ValueError, match="Mistakes"):
        corrector_prompt("csqa", str(shared_data / "lema" / "prompts" / "prompt_correction_gsm8k.txt"))
    with pytest.raises(ValueError, match="Incorrect Step"):
        corrector_prompt("gsm8k", str(path))


def test_bundled_csqa_corrector_prompt_is_ours_and_parses():
    from lema_hub.corrector.prompt import corrector_prompt, split_demonstrations

    prompt = corrector_prompt("csqa")
    instruction, demos = split_demonstrations(prompt.text)
    assert len(demos) == 4 and prompt.newline == "\n"
    assert "five" not in instruction  # a CSQA file may have any number (>= 2) of candidates
    for demo in demos:
        assert demo.startswith("Question: ") and f"\n{csqa.CANDIDATES_LABEL} " in demo
        parsed = parse_correction(demo.split(csqa.MISTAKES_LABEL, 1)[1], 0, "csqa")
        assert parsed.ok and parsed.incorrect_step is None, parsed.detail
        original = demo.split("\n{\n", 1)[1].split("\n}\n", 1)[0]
        assert extract_last(original) != parsed.corrected_answer  # each demo corrects a wrong pick


def extract_last(text: str) -> str:
    return text.rsplit("The answer is ", 1)[1].rstrip(".")


# ----------------------------------------------------------------------------------------- parser

GOOD = " The pick ignores the question.\nCorrected Answer:\n{\nA: no.\nB: yes.\nThe answer is b.\n}"


@pytest.mark.parametrize(
    "raw,reason",
    [
        (None, "generation_failed"),
        ("   \n", "parse_error"),
        (" Only a complaint, no block at all.", "parse_error"),
        ("\nCorrected Answer:\n{\nThe answer is b.\n}", "empty_explanation"),
        (" Bad pick.\nCorrected Answer:\n{\n}", "parse_error"),
        (" Bad pick.\nCorrected Answer:\n{\nB seems best.\n}", "no_answer"),
        ("x" * (MAX_CORRECTION_CHARS + 1), "too_long"),
    ],
)
def test_csqa_parser_rejects_malformed_outputs(raw, reason):
    parsed = parse_correction(raw, 0, "csqa")
    assert parsed.reject_reason == reason and parsed.incorrect_step is None


@pytest.mark.parametrize(
    "raw",
    [
        GOOD,
        "Mistakes:" + GOOD,  # the label repeated
        GOOD.replace("\n", "\r\n"),  # CRLF
        GOOD + "\nMistakes: again\nCorrected Answer:\n{\nThe answer is a.\n}",  # a second block
        GOOD + "\n\nQuestion: the next demonstration\nCandidate Answers: x, y.",
        "**Mistakes:**" + GOOD.replace("Corrected Answer:", "**Corrected Answer:**"),
    ],
)
def test_csqa_parser_reads_the_first_block(raw):
    parsed = parse_correction(raw, 0, "csqa")
    assert parsed.ok, parsed.detail
    assert parsed.explanation == "The pick ignores the question."
    assert parsed.corrected_steps == ["A: no.", "B: yes.", "The answer is b."]
    assert parsed.corrected_answer == "b" and parsed.incorrect_step is None


def test_csqa_parser_reads_a_correction_padded_to_the_cap():
    """Padding every line with whitespace up to MAX_CORRECTION_CHARS does not change what is read
    (the patterns themselves are checked for linearity in tests/test_correct.py)."""
    pad = " " * ((MAX_CORRECTION_CHARS - len(GOOD)) // (GOOD.count("\n") + 1))
    raw = GOOD.replace("\n", pad + "\n")
    assert len(raw) <= MAX_CORRECTION_CHARS
    parsed = parse_correction(raw, 0, "csqa")
    assert parsed.ok and parsed.corrected_answer == "b"


@pytest.mark.shared_data
def test_sample_recipe_files_are_not_copied_from_shared(shared_data):
    """The bundled CSQA sample and corrector prompt share no question with the paper's files."""
    ours = {p.question for p in PROBLEMS.values() if p.source == "csqa_sample"}
    dev = (shared_data / "lema" / "test_data" / "csqa_dev.jsonl").read_text(encoding="utf-8")
    paper_prompt = (shared_data / "lema" / "prompts" / "prompt_correction_csqa.txt").read_text(
        encoding="utf-8"
    )
    assert len(ours) == 20 and not any(q in dev or q in paper_prompt for q in ours)


def test_grade_rows_grades_choice_and_math_rows_in_one_call():
    from lema_hub.grading import grade_rows
    from lema_hub.problems import load_sample

    p = load_csqa_sample("test")[0]
    m = load_sample("test")[0]
    rows = [
        {**p.to_dict(), "completion": f"The answer is {p.gold_answer.upper()}."},
        {**m.to_dict(), "completion": f"The answer is {m.gold_answer}."},
        {**p.to_dict(), "candidates": None, "source": "csqa", "completion": "The answer is x."},
    ]
    choice, math, no_candidates = grade_rows(rows, extraction="flexible")
    assert (choice.verdict, choice.mapped_answer, choice.mapping_needed) == ("correct", p.gold_answer, False)
    assert (math.verdict, math.mapped_answer, math.mapping_needed) == ("correct", None, None)
    assert no_candidates.verdict == "ungradeable" and "candidate" in no_candidates.reason


def test_model_card_notes_how_often_answers_were_mapped(tmp_path):
    """A lema_hub model folder evaluated on the CSQA sample: its results say the prompt and the mapping count."""
    from lema_hub.evaluate import EvalConfig, evaluate
    from lema_hub.models import write_model_meta
    from lema_hub.schema import LOCAL_EVAL_FILE

    model = tmp_path / "lema-model"
    model.mkdir()
    write_model_meta(model, {"name": "lema-model", "base_model_name": "some/base"})
    test = load_csqa_sample("test")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        "".join(
            json.dumps({"problem_id": p.problem_id, "completion": cot_path(p, i % 4)}) + "\n"
            for i, p in enumerate(test)
        )
    )
    evaluate(
        EvalConfig(
            models=[str(model)], problems="csqa_sample", predictions_path=str(preds),
            output_dir=str(tmp_path / "eval"),
        )
    )  # fmt: skip
    results = (model / LOCAL_EVAL_FILE).read_text(encoding="utf-8")
    # 8 problems: kinds 0..3 twice; kinds 0-2 state an answer, kind 1 needs the mapping.
    note = "choices matched by the lema_hub rule: 2 of 6 answers not a candidate as written (2 edit_distance)"
    assert "csqa-cot template" in results and note in results
    card = (model / "README.md").read_text(encoding="utf-8")
    assert note in card and "| 50.0 |" in card
    assert "completions from a predictions file" in card and "max 2048 new tokens" not in card


# ------------------------------------------------------------------- training data: exact answers only


def test_paths_correct_only_through_the_mapping_make_no_cot_rows():
    """A path graded correct because its stated answer maps to gold (misspelt, a letter, "I do not
    know" nearest to gold) is no CoT row; the one naming the gold candidate as written is."""
    from lema_hub.build import sample_cot_rows

    p = load_csqa_sample("train")[0]
    texts = {
        "exact": f"Thinking it over.\nThe answer is {p.gold_answer.upper()}.",
        "unsure": "Hmm, I cannot decide.\nThe answer is I do not know.",
        "letter": "Thinking it over.\nThe answer is B.",
        "misspelt": f"Thinking it over.\nThe answer is {p.gold_answer[:-1]}.",
    }
    samples = [
        {**p.to_dict(), "completion": t, "steps": t.split("\n"), "verdict": "correct"} for t in texts.values()
    ]
    rows, left_out = sample_cot_rows(samples, [], "plain")
    assert [r["completion"] for r in rows] == [f"Thinking it over.\nThe answer is {p.gold_answer}."]
    assert left_out == {"duplicates": 0, "inexact": 3}
    assert csqa.names_candidate(f'"{p.gold_answer.title()}".', p.gold_answer)
    assert not csqa.names_candidate("B", p.gold_answer) and not csqa.names_candidate(None, p.gold_answer)


def test_build_drops_inexact_corrections_an_older_correct_accepted(pipeline, tmp_path):
    """A corrections folder whose accepted rows include one that reaches gold only through the
    mapping (as `correct` accepted before `inexact_choice`): build leaves it out and counts it."""
    import datasets

    from lema_hub.artifacts import save_dataset_config
    from lema_hub.build import BuildConfig, build
    from lema_hub.schema import correction_features

    folder = pipeline["tmp"] / "corrections"
    old = _rows(folder, "csqa") + [
        dict(r, accepted=True, reject_reason=None, reject_detail=None)
        for r in _rows(folder, "csqa-rejected")
        if r["reject_reason"] == "inexact_choice"
    ]
    ds = datasets.Dataset.from_list(old)
    save_dataset_config(tmp_path / "old", "csqa", {"train": ds.cast(correction_features(ds.features))})
    s = build(
        BuildConfig(
            corrections=str(tmp_path / "old"), problems="csqa", problems_path=str(TRAIN_FILE),
            views=["lema"], output_dir=str(tmp_path / "mix"), shuffle=False,
        )
    )  # fmt: skip
    assert s["inexact_corrections_dropped"] == 1 and s["correction_rows"] == 9
    lema = _rows(tmp_path / "mix", "csqa-lema")
    assert len(lema) == 9 and not {r["question"] for r in lema} & MISSPELT_FIX


# ------------------------------------------------------------------------- build: refusals, stale views


def _build_error(capsys, *args: str) -> str:
    """`lema-hub build ARGS` fails with exit 2 and one line on stderr; returns the line."""
    from lema_hub.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["build", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lema-hub build: ") and "\n" not in err and "Traceback" not in err
    return err


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_with_no_training_rows_says_why_and_writes_nothing(pipeline, tmp_path, capsys):
    import shutil

    from lema_hub.correct import CorrectConfig, correct

    ref = tmp_path / "ref"  # the reference corrector's CSQA output: every row rejected (no_reference)
    correct(CorrectConfig(mistakes=str(pipeline["tmp"] / "mistakes"), output_dir=str(ref)))
    capsys.readouterr()  # its progress bars
    csqa_args = ("--problems", "csqa", "--problems_path", str(TRAIN_FILE))
    err = _build_error(capsys, *csqa_args, "--corrections", str(ref), "--output_dir", str(tmp_path / "new"))
    assert "no training rows" in err and "CSQA has no gold rationale" in err
    assert "include_correct_samples: true" in err and f"no accepted corrections in {ref}" in err
    assert not (tmp_path / "new").exists()
    # Onto a finished folder: it is left exactly as it was.
    done = tmp_path / "done"
    shutil.copytree(pipeline["tmp"] / "mixture", done)
    before = _files(done)
    _build_error(capsys, *csqa_args, "--corrections", str(ref), "--output_dir", str(done))
    # Decontamination that drops every row (the training questions themselves as the test set).
    err = _build_error(
        capsys, *csqa_args, "--corrections", str(pipeline["tmp"] / "corrections"),
        "--mistakes", str(pipeline["tmp"] / "mistakes"), "--include_correct_samples", "true",
        "--decontaminate", "csqa", "--decontaminate_path", str(TRAIN_FILE), "--decontaminate_split", "train",
        "--output_dir", str(done),
    )  # fmt: skip
    assert "no training rows: decontamination against csqa dropped all 21 rows" in err
    assert _files(done) == before


def test_rebuild_with_an_empty_view_removes_its_old_config(pipeline, tmp_path):
    """A view empty in this run is not left in the folder from the run before (its card entry neither)."""
    import shutil

    from lema_hub.artifacts import discover_configs
    from lema_hub.build import BuildConfig, build

    folder = tmp_path / "mixture"
    shutil.copytree(pipeline["tmp"] / "mixture", folder)
    assert "csqa-cot" in discover_configs(folder)
    s = build(
        BuildConfig(
            corrections=str(pipeline["tmp"] / "corrections"), problems="csqa", problems_path=str(TRAIN_FILE),
            output_dir=str(folder), shuffle=False,
        )
    )  # fmt: skip
    assert s["empty_views"] == ["cot"] and "cot" not in s["views"]
    assert "csqa-cot" not in discover_configs(folder) and not (folder / "data" / "csqa-cot").exists()
    record = json.loads((folder / "run_summary.json").read_text())
    assert record["build"]["empty_views"] == ["cot"]
    card = _card(folder)
    assert "config_name: csqa-cot\n" not in card and "`csqa-cot`" not in card
    assert "| `csqa-lema` | 9 | 0 | 9 | plain text |" in card
    assert "Views with no rows in the build that wrote this folder (not written" in card and ": `cot`." in card


def test_build_refuses_mixing_math_and_multiple_choice(pipeline, tmp_path, capsys):
    corrections, mistakes = str(pipeline["tmp"] / "corrections"), str(pipeline["tmp"] / "mistakes")
    out = ("--output_dir", str(tmp_path / "out"))
    # The math sample's gold CoT rows with CSQA corrections (the probe's `config_sample.yaml` run).
    err = _build_error(capsys, "--problems", "sample", "--corrections", corrections, *out)
    assert "mixed tasks: math rows from the problems sample" in err
    assert f"multiple-choice (CSQA) rows from the corrections {corrections} [csqa]" in err
    err = _build_error(
        capsys, "--problems", "sample", "--views", "cot", "--mistakes", mistakes,
        "--include_correct_samples", "true", *out,
    )  # fmt: skip
    assert f"multiple-choice (CSQA) rows from the mistakes {mistakes} [csqa-samples]" in err
    # Decontamination against the other task's test set.
    err = _build_error(
        capsys, "--problems", "csqa", "--problems_path", str(TRAIN_FILE), "--corrections", corrections,
        "--decontaminate", "sample_test", *out,
    )  # fmt: skip
    assert "decontaminate sample_test is a math test set but the training rows are multiple-choice" in err
    assert "csqa_dev, csqa_sample_test" in err
    err = _build_error(capsys, "--views", "cot", "--decontaminate", "csqa_sample_test", *out)
    assert "csqa_sample_test is a multiple-choice (CSQA) test set but the training rows are math" in err
    assert "gsm8k_test, math_test, math500, sample_test" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------- cards in CSQA terms


def _dataset_card(folder: Path):
    from huggingface_hub import DatasetCard

    return DatasetCard.load(folder / "README.md")


def test_dataset_cards_describe_csqa_in_csqa_terms(pipeline):
    """Each card a CSQA stage wrote: tags by task, no math-only claims, the CSQA schema and fields."""
    cards = {k: _dataset_card(pipeline["tmp"] / k) for k in ("mistakes", "corrections", "mixture", "eval")}
    for kind, card in cards.items():
        assert "math" not in card.data.tags, kind
        assert {"commonsense-reasoning", "multiple-choice"} <= set(card.data.tags), kind
        assert "multiple-choice" in card.data.task_categories, kind
        assert "no step index" in card.text, kind
    mistakes = cards["mistakes"].text
    assert "math word problems" not in mistakes
    assert "sampled from language models on commonsense multiple-choice questions (CommonsenseQA)" in mistakes
    assert "`candidates` (the answer choices" in mistakes and "smallest edit distance" in mistakes
    corrections = cards["corrections"].text
    assert "for each wrong reasoning path, the first incorrect step" not in corrections
    assert (
        "an explanation of its mistakes and a corrected answer (this schema has no incorrect step)"
        in corrections
    )
    assert "`incorrect_step` (1-based; null for CommonsenseQA rows)" in corrections
    assert "rejected as `inexact_choice`" in corrections and "| inexact_choice | 1 |" in corrections
    mixture = cards["mixture"].text
    assert "`Incorrect Step: Step k.`" not in mixture
    assert "`Mistakes: ...` / `Corrected Answer: {...}` out" in mixture
    assert "`no_incorrect_step` holds the same rows as `lema`" in mixture
    assert "(12 sampled paths and 0 corrections in this build)" in mixture
    ev = cards["eval"].text
    assert "math-verify" not in ev
    assert (
        "mapped to the candidate with the smallest edit distance, then compared with the gold candidate" in ev
    )


def test_model_card_of_a_csqa_trained_model(pipeline, tmp_path, tiny_model):
    """`lema-hub sft` on the CSQA mixture: the card's usage snippet builds the paper's CSQA prompt for a
    CSQA question, its evaluation sentence is CSQA's grading, its tags name the task."""
    from huggingface_hub import ModelCard
    from trl import ModelConfig, SFTConfig

    from lema_hub.sft import SFTScriptArguments, train

    out = tmp_path / "lema-csqa"
    train(
        SFTScriptArguments(dataset_name=str(pipeline["tmp"] / "mixture"), task="csqa", view="lema"),
        SFTConfig(
            output_dir=str(out), max_steps=1, per_device_train_batch_size=1, max_length=256,
            save_strategy="no", report_to="none", use_cpu=True, bf16=False, disable_tqdm=True, seed=0,
        ),
        ModelConfig(model_name_or_path=tiny_model),
    )  # fmt: skip
    card = ModelCard.load(out / "README.md")
    assert "math" not in card.data.tags and {"commonsense-reasoning", "multiple-choice"} <= set(
        card.data.tags
    )
    text = card.text
    assert "math-verify" not in text and "Natalia" not in text and "math problem" not in text
    assert (
        "mapped to the candidate with the smallest edit distance and compared with the gold candidate" in text
    )
    assert "a wrong answer, an explanation of its mistakes and a corrected answer" in text
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    lines = snippet.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("question = "))
    scope: dict = {}
    exec("\n".join(lines[start : start + 3]), scope)  # the card's own question, candidates and prompt
    assert scope["prompt"] == csqa.csqa_prompt(scope["question"], scope["candidates"])
    assert len(scope["candidates"]) == 5 and scope["question"].endswith("?")



# ------------------------------------------------------------------ probe fixes: matching, mapping, stops
def _dev_rows(shared_data: Path) -> list[dict]:
    path = shared_data / "lema" / "test_data" / "csqa_dev.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _eval_file(tmp_path: Path, preds: list[dict], **kw) -> dict:
    from lema_hub.evaluate import EvalConfig, evaluate

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in preds), encoding="utf-8")
    kw.setdefault("problems", "csqa_sample")
    cfg = EvalConfig(
        models=["fake"],
        predictions_path=str(path),
        output_dir=str(tmp_path / "eval"),
        update_model_card=False,
        **kw,
    )
    return next(iter(evaluate(cfg)["results"].values()))


@pytest.mark.shared_data
def test_predictions_with_the_papers_prompt_column_match_the_dev_problems(shared_data, tmp_path):
    rows = _dev_rows(shared_data)
    preds = [{"prompt": r["prompt"], "completion": f"The answer is {r['answer']}."} for r in rows]
    dev = str(shared_data / "lema" / "test_data" / "csqa_dev.jsonl")
    entry = _eval_file(tmp_path, preds, problems="csqa", problems_path=dev, problems_split="validation")
    assert entry["num_problems"] == 1221 and entry["accuracy"] == 1.0


@pytest.mark.shared_data
def test_letters_map_by_position_and_junk_matches_no_candidate_on_the_dev_file(shared_data):
    """The probe's dev rows 3 and 4 (`(A)`, `A`), then every dev item: the gold's label is right,
    junk is wrong under our rule; the paper's rule (edit distance for everything) stays reachable."""
    from lema_hub.grading import grade_choice

    items = csqa.paper_items(_dev_rows(shared_data))
    for i, answer in ((3, "The answer is (A)."), (4, "The answer is A")):
        v = grade_choice(answer, items[i].answer, items[i].candidates)
        assert (v.verdict, v.mapping, v.mapped_answer) == ("correct", "label", items[i].candidates[0])
        assert (
            grade_choice(answer, items[i].answer, items[i].candidates, "paper").mapped_answer
            != items[i].answer
        )
    for form in ("{}", "({})", "option {}", "{}."):
        ok = 0
        for it in items:
            label = csqa.candidate_label(it.candidates.index(it.answer))
            ok += grade_choice(f"The answer is {form.format(label)}", it.answer, it.candidates).is_correct
        assert ok == len(items)
    for junk in ("???", "I do not know", "none of the above"):
        verdicts = [grade_choice(f"The answer is {junk}.", it.answer, it.candidates) for it in items]
        assert sum(v.is_correct for v in verdicts) <= 1  # "none of the above" names one item's "above"
        assert sum(v.mapping == "no_match" for v in verdicts) >= len(items) - 1
        assert all(v.reason.endswith(f"matches no candidate; gold {v.reason.split('gold ')[1]}") for v in verdicts
                   if v.mapping == "no_match")  # fmt: skip
        paper = [grade_choice(f"The answer is {junk}.", it.answer, it.candidates, "paper") for it in items]
        assert sum(v.is_correct for v in paper) > 100  # the paper's rule: ties go to the first candidate


def test_evaluate_records_the_choice_mapping_rule_and_counts_each_kind(tmp_path):
    test = load_csqa_sample("test")
    p0, p1, p2 = test[:3]
    label = csqa.candidate_label(p0.candidates.index(p0.gold_answer))
    answers = [f"({label})", "I do not know", f"**{p2.gold_answer}**"] + [p.gold_answer for p in test[3:]]
    preds = [{"problem_id": p.problem_id, "completion": f"The answer is {a}."} for p, a in zip(test, answers)]
    ours = _eval_file(tmp_path / "ours", preds)
    assert ours["protocol"]["choice_mapping"] == "lema_hub" and ours["choice_mapping"]["rule"] == "lema_hub"
    assert ours["choice_mapping"]["by_kind"] == {
        "exact": 6,
        "label": 1,
        "contains": 0,
        "edit_distance": 0,
        "no_match": 1,
    }
    assert ours["accuracy"] == 7 / 8
    rows = {r["problem_id"]: r for r in _rows(tmp_path / "ours" / "eval", "fake-csqa_sample", "test")}
    assert rows[p1.problem_id]["mapping"] == "no_match" and rows[p1.problem_id]["mapped_answer"] is None
    assert rows[p1.problem_id]["grade_reason"].startswith("'I do not know' matches no candidate")
    assert rows[p2.problem_id]["mapping"] == "exact"  # **bold** is not a mapping
    card = _card(tmp_path / "ours" / "eval")
    assert "| `fake-csqa_sample` | lema_hub | 8 | 6 | 1 | 0 | 0 | 1 | 25.0% |" in card
    paper = _eval_file(tmp_path / "paper", preds, choice_mapping="paper")
    assert paper["protocol"]["choice_mapping"] == "paper"
    assert paper["choice_mapping"]["by_kind"] == {
        "exact": 6,
        "label": 0,
        "contains": 0,
        "edit_distance": 2,
        "no_match": 0,
    }
    assert "| `fake-csqa_sample` | paper | 8 | 6 | 0 | 0 | 2 | 0 | 25.0% |" in _card(
        tmp_path / "paper" / "eval"
    )


@pytest.mark.parametrize("task", ["csqa_sample", "sample"])
def test_predictions_file_completions_are_cut_at_the_stop_strings(tmp_path, task):
    """A completion that runs on into a new example is graded on its first answer, as generation would
    have stopped there; results record what was done (stops applied, nothing sampled)."""
    from lema_hub.problems import load_sample

    problems = load_csqa_sample("test") if task == "csqa_sample" else load_sample("test")
    wrong = [_other(p) if p.candidates else f"{p.gold_answer}1" for p in problems]
    preds = [
        {"problem_id": p.problem_id, "completion": f"The answer is {p.gold_answer}.\nQuestion: next one?\nThe answer is {w}."}
        for p, w in zip(problems, wrong)
    ]  # fmt: skip
    entry = _eval_file(tmp_path, preds, problems=task)
    proto = entry["protocol"]
    assert (
        entry["accuracy"] == 1.0 and entry["cut_at_stop"] == len(problems) and "\nQuestion:" in proto["stop"]
    )
    assert (proto["temperature"], proto["max_new_tokens"], proto["prompt_style"]) == (None, None, None)
    assert proto["decoding"] == "predictions file" and proto["backend"] == "predictions-file"
    rows = _rows(tmp_path / "eval", f"fake-{task}", "test")
    assert all(r["finish_reason"] == "stop" and "next one" not in r["completion"] for r in rows)
    assert all(r["sampling"] is None for r in rows)
    chat = _eval_file(tmp_path / "chat", preds, problems=task, prompt_style="chat")
    assert chat["protocol"]["stop"] is None and chat["accuracy"] == 0.0  # no stops for chat: the last answer


# --------------------------------------------------------------------------- bad CSQA files: one line
_HUB_ROW = json.loads(TEST_FILE.read_text(encoding="utf-8").splitlines()[0])
_PROMPT = csqa.csqa_prompt("Where is the money kept?", ["bank", "library", "mall"])
_PAPER_ROW = {"prompt": _PROMPT, "answer": "bank", "candidates": ["bank", "library", "mall"]}


def _hub(**kw) -> dict:
    return {**_HUB_ROW, **kw}


def _choices(texts, labels=None) -> dict:
    return {"label": labels or [csqa.candidate_label(i) for i in range(len(texts))], "text": texts}


@pytest.mark.parametrize(
    "row, message",
    [
        (_hub(question=None), "row 1: question is None"),
        (_hub(question="  "), "row 1: question is '  '"),
        (_hub(choices=_choices(["a", None, "c"])), "row 1: candidate 1 is None"),
        (_hub(choices=_choices(["a", 3, "c"])), "row 1: candidate 1 is 3"),
        (_hub(choices=_choices(["", "b", "c"]), answerKey="A"), "row 1: candidate 0 is ''"),  # an empty gold
        (_hub(choices=[{"label": "A", "text": "a"}, {"label": "B", "text": "b"}]), "row 1: choices must be"),
        (_hub(choices=_choices(["only"]), answerKey="A"), "row 1: 1 candidate(s) ['only']; at least 2"),
        (_hub(answerKey="b"), "row 1: answerKey 'b' is not one of the labels"),
        ({k: v for k, v in _HUB_ROW.items() if k != "answerKey"}, "row 1: no answerKey"),
        ({**_PAPER_ROW, "candidates": None}, "row 1: candidates are None"),
        ({**_PAPER_ROW, "candidates": ["bank", "library"]}, "row 1: candidates ['bank', 'library'] are not the prompt's"),
        ({**_PAPER_ROW, "prompt": "Q: what? A:"}, "row 1: prompt 'Q: what? A:'... is not a CSQA prompt"),
        ({k: v for k, v in _PAPER_ROW.items() if k != "answer"}, "row 1: no answer"),
        ({**_PAPER_ROW, "prompt": _PROMPT.replace("Where is the money kept?", " ")}, "row 1: the prompt's question is ' '"),
    ],
)  # fmt: skip
def test_a_bad_csqa_row_is_one_line_naming_the_file_row_and_value(tmp_path, row, message):
    from lema_hub.problems import ProblemSourceError

    first = _HUB_ROW if "choices" in row or "question" in row else _PAPER_ROW
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(first) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(ProblemSourceError) as exc:
        load_problems(ProblemArgs(problems="csqa", problems_path=str(bad)))
    text = str(exc.value)
    assert text.startswith(f"{bad}: row 1: ") and message in text and "\n" not in text, text
    assert "csqa/" not in text  # no doubled "csqa/test: csqa/test row" prefix


def test_csqa_rows_with_any_number_of_candidates_and_duplicates_load(tmp_path):
    rows = [
        _hub(id="four", choices=_choices(["sink", "bed", "car", "closet"]), answerKey="A"),
        _hub(id="two", choices=_choices(["yes", "no"]), answerKey="B"),
        _hub(id="dup", choices=_choices(["sink", "bed", "sink"]), answerKey="C"),
    ]
    path = tmp_path / "ok.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    four, two, dup = load_problems(ProblemArgs(problems="csqa", problems_path=str(path)))
    assert (len(four.candidates), two.gold_answer, dup.candidates) == (4, "no", ["sink", "bed", "sink"])


def test_a_bad_csqa_file_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "nullq.jsonl"
    bad.write_text(json.dumps(_hub(question=None)) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "lema_hub.cli", "evaluate", "--problems", "csqa", "--problems_path", str(bad),
           "--output_dir", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0] == f"lema-hub evaluate: {bad}: row 0: question is None; a non-empty string is needed"


@pytest.mark.parametrize("shape", ["hub", "paper"])
def test_a_csqa_file_as_a_generic_problems_source_says_how_to_load_it(tmp_path, shape):
    from lema_hub.build import load_test_questions
    from lema_hub.problems import ProblemSourceError

    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(_HUB_ROW if shape == "hub" else _PAPER_ROW) + "\n", encoding="utf-8")
    with pytest.raises(
        ProblemSourceError,
        match=r"mine\.jsonl holds CommonsenseQA rows: use --problems csqa --problems_path FILE",
    ):
        load_problems(ProblemArgs(problems=str(path)))
    with pytest.raises(ProblemSourceError, match=r"--decontaminate csqa_dev --decontaminate_path FILE"):
        load_test_questions(str(path))  # build --decontaminate <csqa file>
    assert len(load_test_questions("csqa_dev", str(path))) == 1  # ... and the way it names works


@pytest.mark.parametrize("sample", ["csqa_sample", "sample"])
def test_a_bundled_sample_takes_no_path(tmp_path, sample):
    from lema_hub.build import load_test_questions
    from lema_hub.problems import ProblemSourceError

    with pytest.raises(
        ProblemSourceError, match=rf"problems '{sample}' is a bundled sample and takes no path"
    ):
        load_problems(ProblemArgs(problems=sample, problems_path=str(TEST_FILE)))
    with pytest.raises(ProblemSourceError, match="takes no path"):
        # build --decontaminate <sample>_test --decontaminate_path FILE
        load_test_questions(f"{sample}_test", str(TEST_FILE))


def test_the_csqa_evaluate_recipe_names_the_validation_split_for_the_dev_file():
    text = (REPO / "recipes" / "smollm2-135m" / "evaluate" / "config_csqa.yaml").read_text(encoding="utf-8")
    dev_line = next(ln for ln in text.splitlines() if "csqa_dev.jsonl" in ln)
    assert "--problems csqa" in dev_line and "--problems_split validation" in dev_line
