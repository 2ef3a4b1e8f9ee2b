"""Grading: the written-down decisions, bad input, thread safety, bounded time, pool == serial."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from lema_hub import grading
from lema_hub.grading import (
    Verdict,
    answer_key,
    answers_match,
    extract_answer,
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
        ("The final answer is 12", "12"),
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
    ("I am not sure.", "12", "wrong"),  # no answer at all
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
    pool = grading._pool()
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
