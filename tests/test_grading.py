"""Grading: the written-down decisions, bad input, thread safety, bounded time, pool == serial."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from lema_hub import grading_pool
from lema_hub.grading import (
    EXTRACTIONS,
    VERDICTS,
    Verdict,
    answer_key,
    answers_match,
    extract_answer,
    format_ok,
    gold_answer_of,
    grade,
    grade_many,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("So 3 + 2 = 5. The answer is 5.", "5"),
        ("The answer is 4. Wait. The answer is 5.", "5"),  # the last one counts
        ("the answer is: $1,000.\nThanks!", "$1,000"),  # to the end of its line, trailing period stripped
        ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),  # math delimiters stripped
        ("The answer is 42. So she has 42 apples.", "42"),  # a following sentence is not the answer
        ("Thus $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),  # no 'The answer is' -> last box
        ("The answer is $\\boxed{7}$.", "7"),
        ("The final answer is positive. So $\\boxed{3}$.", "3"),  # a box beats 'final answer is'
        ("The answer is **bank**.", "bank"),  # bold then a period: both stripped, in either order
        ("The answer is **42**.", "42"),
        ("The answer is **42.**", "42"),
        ("The final answer is 12", None),  # not the paper's rule: only flexible reads it
        ("no answer here", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "gold, expected",
    [
        ("18", "18"),
        ("Janet sells 9 eggs.\n#### 1,800", "1800"),
        ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("It takes 3 bolts. The answer is 3.", "3"),
        ("  ", None),
    ],
)
def test_gold_answer_of(gold, expected):
    assert gold_answer_of(gold) == expected


# The GSM8K decisions (see the grading module docstring).
GSM8K_CASES = [
    # (prediction, gold, verdict)
    ("The answer is 18.", "18", "correct"),
    ("The answer is $18.", "18", "correct"),  # currency sign
    ("The answer is \\$18.00", "18", "correct"),
    ("The answer is 18 dollars per day.", "18", "correct"),  # units / words
    ("The answer is 5km.", "5", "correct"),  # a unit glued to the number
    ("The answer is 7 boxes, with 2 left over.", "7", "correct"),  # the first number counts
    ("The answer is 1,800.", "1800", "correct"),  # thousands commas
    ("The answer is 1800.", "#### 1,800", "correct"),
    ("The answer is 1,234,567", "1234567", "correct"),
    ("The answer is 25%.", "25", "correct"),  # percent sign = a unit
    ("The answer is 25\\%.", "25", "correct"),
    ("The answer is 0.25.", "25", "wrong"),  # but a fraction of 1 is not the percentage
    ("The answer is 18.0", "18", "correct"),  # exact rational comparison
    ("The answer is 17.99", "18", "wrong"),  # no rounding to the gold
    ("The answer is 18.5", "18", "wrong"),
    ("The answer is 3/4.", "0.75", "correct"),
    ("The answer is \\frac{3}{4}.", "0.75", "correct"),
    ("The answer is 5 + 3 = 8.", "8", "correct"),  # right-hand side of the last '='
    ("The answer is -5.", "-5", "correct"),
    ("The answer is \u22125.", "-5", "correct"),  # unicode minus
    ("The answer is 5.", "-5", "wrong"),
    ("So $\\boxed{12}$", "12", "correct"),
    ("The answer is twelve.", "12", "wrong"),  # no number in the answer
    ("I am not sure.", "12", "no_answer"),  # no answer at all: not a wrong answer
]


@pytest.mark.parametrize("prediction, gold, verdict", GSM8K_CASES)
def test_gsm8k_decisions(prediction, gold, verdict):
    v = grade(prediction, gold, "gsm8k")
    assert isinstance(v, Verdict)
    assert v.verdict == verdict, v
    assert v.reason


MATH_CASES = [
    ("The answer is $\\frac{1}{2}$.", "0.5", "correct"),
    ("So $\\boxed{\\frac12}$.", "\\frac{1}{2}", "correct"),
    (
        "The answer is \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.",
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        "correct",
    ),
    ("The answer is $(3, \\pi)$.", "\\left( 3, \\frac{\\pi}{2} \\right)", "wrong"),
    ("The answer is \\boxed{\\$40}.", "\\$40", "correct"),
    ("The answer is $40$.", "\\$40", "correct"),
    ("The answer is $90\\text{ square units}$.", "90", "correct"),
    ("The answer is $2\\sqrt{3}$.", "\\sqrt{12}", "correct"),
    ("The answer is $x^2+2x+1$.", "(x+1)^2", "correct"),
    ("The answer is $3$.", "4", "wrong"),
    ("The answer is \\boxed{10\\%}.", "0.1", "correct"),  # math-verify reads 10\% as 0.1
    ("We get \\boxed{5}", "So the gold is $\\boxed{5}$.", "correct"),  # a gold solution works too
]


@pytest.mark.parametrize("prediction, gold, verdict", MATH_CASES)
def test_math_decisions(prediction, gold, verdict):
    v = grade(prediction, gold, "math")
    assert v.verdict == verdict, v


@pytest.mark.parametrize(
    "prediction, gold, task, reason",
    [
        (None, "5", "gsm8k", "NoneType"),
        ("", "5", "gsm8k", "empty"),
        ("   ", "5", "math", "empty"),
        ("The answer is 5." * 70_000, "5", "gsm8k", "too long"),  # ~1 MB
        ("The answer is 5.", None, "gsm8k", "gold is NoneType"),
        ("The answer is 5.", "", "math", "no answer found in the gold"),
        ("The answer is 5.", "\\boxed{", "math", "no answer found in the gold"),
        ("The answer is 5.", "five", "gsm8k", "not a number"),  # unreadable gold: never 'wrong'
        ("I don't know", "five", "gsm8k", "not a number"),
        ("The answer is 5.", "\\frac{", "math", "gold"),
        ("The answer is 5.", "5", "algebra", "unknown task"),
        (b"The answer is 5.", "5", "gsm8k", "bytes"),
        ("The answer is " + "x" * 5000, "5", "math", "too long"),
    ],
)
def test_bad_input_is_ungradeable_with_a_reason(prediction, gold, task, reason):
    v = grade(prediction, gold, task)
    assert v.verdict == "ungradeable", v
    assert reason in v.reason


def test_pathological_latex_is_bounded():
    # sympy would grind on this tower; the soft bound in the worker stops it.
    v = grade("The answer is $\\boxed{10^{10^{10^{10^{10}}}}}$", "2", "math", timeout=1.0)
    assert v.verdict in ("ungradeable", "wrong")
    if v.verdict == "ungradeable":
        assert "timed out" in v.reason or "failed" in v.reason
    deep = "The answer is $" + "{" * 3000 + "1" + "}" * 3000 + "$"
    assert grade(deep, "1", "math", timeout=1.0).verdict in ("ungradeable", "correct", "wrong")
    # the pool still works afterwards
    assert grade("The answer is $\\frac{1}{2}$.", "0.5", "math").verdict == "correct"


def _idle_worker_pids() -> list[int]:
    pool = grading_pool.shared_pool()
    with pool._cond:
        return [w.proc.pid for w in pool._idle]


def test_a_killed_worker_is_replaced():
    assert grade("The answer is $2$.", "2", "math").verdict == "correct"
    pids = _idle_worker_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert grade("The answer is $3$.", "3", "math").verdict == "correct"


def test_a_stuck_worker_hits_the_hard_bound_and_is_killed():
    # A worker stuck where no signal reaches it (e.g. one huge C-level big-int operation) is
    # modelled by stopping it: the parent gives up after timeout + HARD_MARGIN_S and kills it.
    assert grade("The answer is $2$.", "2", "math").verdict == "correct"
    pids = _idle_worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        v = grade("The answer is $3$.", "3", "math", timeout=0.5)
        assert v.verdict == "ungradeable" and "worker killed" in v.reason
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert grade("The answer is $3$.", "3", "math").verdict == "correct"


def test_never_evaluates_model_text(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    for task in ("gsm8k", "math"):
        grade(f"The answer is {payload}", "0", task)
        answer_key(payload, task)
        answers_match(payload, "0", task)
    assert not marker.exists()


def test_grade_is_safe_and_identical_in_threads():
    cases = [(p, g, "gsm8k") for p, g, _ in GSM8K_CASES] + [(p, g, "math") for p, g, _ in MATH_CASES]
    serial = [grade(p, g, t) for p, g, t in cases]
    results: list = [None] * len(cases)

    def work(i: int) -> None:
        p, g, t = cases[i]
        results[i] = grade(p, g, t)

    with ThreadPoolExecutor(max_workers=6) as ex:
        list(ex.map(work, range(len(cases))))
    assert results == serial
    # and from a plain thread that is not the main thread
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("v", grade("So $\\boxed{\\frac12}$", "0.5", "math")))
    t.start()
    t.join()
    assert out["v"].verdict == "correct"


def test_grade_many_matches_serial():
    preds = [p for p, _, _ in MATH_CASES] * 3 + [None, "", "no answer"]
    golds = [g for _, g, _ in MATH_CASES] * 3 + ["1", "1", "1"]
    serial = [grade(p, g, "math") for p, g in zip(preds, golds)]
    assert grade_many(preds, golds, "math", workers=2, chunk_size=5) == serial
    gp = [p for p, _, _ in GSM8K_CASES]
    gg = [g for _, g, _ in GSM8K_CASES]
    assert grade_many(gp, gg, "gsm8k", workers=2) == [grade(p, g) for p, g in zip(gp, gg)]
    with pytest.raises(ValueError, match="golds"):
        grade_many(["a"], ["1", "2"])


def test_answers_match_and_answer_key():
    assert answers_match("$1,000", "1000.00")
    assert not answers_match("1000", "100")
    assert not answers_match("", "1")
    assert answer_key("$18.00") == answer_key("18") == "18"
    assert answer_key("0.50") == answer_key("1/2") == "0.5"
    assert answer_key("1/3") == "1/3"
    assert answers_match("\\frac{1}{2}", "0.5", "math")
    assert answer_key("\\frac{1}{2}", "math") == answer_key("\\dfrac12", "math")
    assert answer_key("\\text{(C)}", "math") != answer_key("\\text{(D)}", "math")


# --------------------------------------------------------------------- extraction modes (issue 14.4)
# (prediction, gold, task, strict verdict, flexible verdict): endings real models write.
ENDING_CASES = [
    ("Thus, the number on the card that was removed is \\(45\\).", "45", "math", "no_answer", "correct"),
    ("We add them up.\n**Final answer: 45**", "45", "gsm8k", "no_answer", "correct"),
    ("So she has 45 left.\n#### 45", "45", "gsm8k", "no_answer", "correct"),
    ("We add them up.\nAnswer: 45", "45", "gsm8k", "no_answer", "correct"),
    ("We add them up.\nA: 45", "45", "gsm8k", "no_answer", "correct"),
    ("We add them up.\nAnswer: 44", "45", "gsm8k", "no_answer", "wrong"),
    ("So, after all his transactions, Raymond has $8 left.", "8", "gsm8k", "no_answer", "correct"),
    ("Therefore, the length of the red rope is 20 centimeters.", "20", "gsm8k", "no_answer", "correct"),
    (
        "Therefore, the degree of the polynomial \\((x^5+1)(x^2+x)\\) is 7.",
        "7",
        "math",
        "no_answer",
        "correct",
    ),
    (
        "Final Answer: The final answer is\n\\[\n\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}.\n\\]\nI hope it is correct.",
        "\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}",
        "math",
        "no_answer",
        "correct",
    ),
    ("Final Answer: The final answer is $12$. I hope it is correct.", "12", "math", "no_answer", "correct"),
    # the strict rule, when it finds an answer, wins in both modes
    ("The answer is 5.\nAnswer: 6", "5", "gsm8k", "correct", "correct"),
    # an unfinished path that denies an answer states none
    (
        "If we let x = 14, then y = 15. So x = 14 and y = 15 is not a solution.",
        "15",
        "gsm8k",
        "no_answer",
        "no_answer",
    ),
]


@pytest.mark.parametrize("prediction, gold, task, strict, flexible", ENDING_CASES)
def test_strict_and_flexible_extraction(prediction, gold, task, strict, flexible):
    assert grade(prediction, gold, task).verdict == strict  # strict is the default
    assert grade(prediction, gold, task, extraction="strict").verdict == strict
    assert grade(prediction, gold, task, extraction="flexible").verdict == flexible
    assert format_ok(prediction, task) == (strict != "no_answer")


def test_answer_after_the_phrase_may_span_lines():
    text = "Final Answer: The final answer is\n\\[\n\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}.\n\\]\nI hope it is correct."
    assert extract_answer(text, "math", "flexible") == "\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}"
    assert extract_answer("The answer is\n\\[\n\\frac{1}{2}\n\\]", "math") == "\\frac{1}{2}"


@pytest.mark.parametrize(
    "prediction, gold, task, verdict",
    [
        ("The answer is -$15.", "15", "gsm8k", "wrong"),  # the sign survives the currency sign
        ("The answer is - 15.", "15", "gsm8k", "wrong"),  # ... and a space
        ("The answer is - 15.", "-15", "gsm8k", "correct"),
        ("The answer is 20 - 5 = 15.", "15", "gsm8k", "correct"),  # a binary minus is not a sign
        ("\\boxed{-$15}", "15", "gsm8k", "wrong"),
        ("So $\\boxed{A,D}$.", "\\text{A,D}", "math", "correct"),
        ("So $\\boxed{A}$.", "\\text{A,D}", "math", "wrong"),
        ("So $\\boxed{8\\sqrt{3}}$.", "8\\sqrt{3} \\text { square inches}", "math", "correct"),
        ("So $\\boxed{8\\sqrt{2}}$.", "8\\sqrt{3} \\text { square inches}", "math", "wrong"),
        ("So $\\boxed{\\text{4:30 p.m.}}$", "\\text{4:30 p.m.}", "math", "correct"),  # read as written
    ],
)
def test_sign_text_answers_and_units(prediction, gold, task, verdict):
    assert grade(prediction, gold, task).verdict == verdict


@pytest.mark.parametrize(
    "prediction, gold",
    [
        ("The answer is 10^{100000}.", "10"),  # issue 21.8: an exponent is not its first number
        ("The answer is 2^{3}.", "2"),
        ("The answer is 2^3.", "2"),
        ("The answer is 10**5.", "10"),
        ("The answer is 3 + 4.", "3"),
        ("The answer is 3 \\times 4.", "3"),
        ("The answer is \\sqrt{16}.", "16"),
    ],
)
def test_an_expression_is_not_its_first_number(prediction, gold):
    for extraction in EXTRACTIONS:
        v = grade(prediction, gold, "gsm8k", extraction=extraction)
        assert v.verdict == "wrong" and "expression" in v.reason, v


def test_verdict_names_and_bad_extraction():
    assert VERDICTS == ("correct", "wrong", "no_answer", "truncated", "ungradeable")
    v = grade("The answer is 5.", "5", "gsm8k", extraction="loose")
    assert v.verdict == "ungradeable" and "unknown extraction" in v.reason
    with pytest.raises(ValueError, match="extraction"):
        grade_many(["The answer is 5."], ["5"], extraction="loose")


def test_grade_many_takes_the_extraction():
    preds = [p for p, *_ in ENDING_CASES] * 2
    golds = [g for _, g, *_ in ENDING_CASES] * 2
    for task in ("gsm8k", "math"):
        for extraction in EXTRACTIONS:
            serial = [grade(p, g, task, extraction=extraction) for p, g in zip(preds, golds)]
            pooled = grade_many(preds, golds, task, workers=2, chunk_size=3, extraction=extraction)
            assert pooled == serial


# ----------------------------------------------------------------- linear extraction (issue 21.3)
def _lines_executed(fn, *args, **kwargs) -> int:
    """Python lines executed inside lema_hub while ``fn`` runs: an operation count, not a timer."""
    import sys

    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if "lema_hub" not in frame.f_code.co_filename:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn(*args, **kwargs)
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "\\boxed{" * n,  # unclosed boxes: each used to rescan to the end
        lambda n: "\\boxed{1} " + "\\boxed{" * n,
        lambda n: "Step 1: " + "\\boxed$" * n,
        lambda n: "The answer is \\boxed{" * n,
        lambda n: "Answer: \\[" * n,
    ],
)
def test_grading_work_grows_linearly_with_the_input(make):
    small, large = 300, 1200
    for extraction in EXTRACTIONS:
        a = _lines_executed(grade, make(small), "1", "gsm8k", extraction=extraction)
        b = _lines_executed(grade, make(large), "1", "gsm8k", extraction=extraction)
        # 4x the input: linear work grows ~4x, quadratic work ~16x.
        assert b <= 6 * max(a, 1), (extraction, a, b)


# ------------------------------------------------------------- agreement on real labelled outputs
def _agreement_module():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "grading_agreement.py"
    spec = importlib.util.spec_from_file_location("grading_agreement", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_agreement_with_human_labels_on_real_outputs(shared_data):
    mod = _agreement_module()
    for name in ("processbench-gsm8k", "processbench-math"):
        flexible = mod.agreement(shared_data, name, "flexible", workers=2)
        assert flexible["rate"] >= 0.99, (
            name,
            flexible["rate"],
            [r.id for r, _ in flexible["disagreements"]],
        )
    # strict misses the free-form endings (the benchmark reports both modes on both sets)
    assert mod.agreement(shared_data, "processbench-gsm8k", "strict")["rate"] < 0.97
    assert mod.agreement(shared_data, "paper-gsm8k-gold", "strict")["rate"] == 1.0
    assert mod.agreement(shared_data, "paper-gsm8k-gold", "flexible")["rate"] == 1.0


def test_math_gold_solutions_grade_correct_against_their_own_answer(shared_data):
    mod = _agreement_module()
    rows = mod.math_gold_rows(shared_data)[::5]  # every 5th of the 5,000 (all of them: the benchmark)
    for extraction in EXTRACTIONS:
        verdicts = grade_many(
            [r.prediction for r in rows], [r.gold for r in rows], "math", workers=2, extraction=extraction
        )
        assert [r.id for r, v in zip(rows, verdicts) if v.verdict != "correct"] == []


def test_evaluation_is_strict_by_default_and_records_the_extraction(tmp_path):
    import json

    from lema_hub.evaluate import EvalConfig, evaluate
    from lema_hub.problems import load_sample

    problems = load_sample("test")
    preds = tmp_path / "preds.jsonl"
    lines = [
        {"problem_id": p.problem_id, "completion": f"We add them.\nAnswer: {p.gold_answer}"} for p in problems
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in lines))
    results = {}
    for extraction in (None, *EXTRACTIONS):
        kw = {"extraction": extraction} if extraction else {}
        out = tmp_path / f"eval-{extraction}"
        cfg = EvalConfig(
            models=["m"], problems="sample", predictions_path=str(preds), output_dir=str(out), **kw
        )
        (results[extraction],) = evaluate(cfg)["results"].values()
        on_disk = json.loads((out / "results.json").read_text())
        assert {r["protocol"]["extraction"] for r in on_disk.values()} == {extraction or "strict"}
    assert (
        results[None]["accuracy"] == results["strict"]["accuracy"] == 0.0
    )  # the paper's rule misses "Answer:"
    assert results["flexible"]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="extraction"):
        evaluate(EvalConfig(models=["m"], output_dir=str(tmp_path / "x"), extraction="loose"))
