"""The bundled sample problems (lema_hub/data) and the safe calculator that checks them."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from importlib import resources

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lema_hub.calculator import (
    MAX_EXPRESSION_CHARS,
    CalculatorError,
    annotations,
    check_annotation,
    numbers_in,
    safe_eval,
)

SPLITS = {"train": 32, "test": 12}
FINAL = re.compile(r"^#### (-?\d+(?:\.\d+)?)$")
# Numbers a solution may use without their appearing as digits in the question: "half", "twice",
# "three times", "a quarter", percentages, and hour/day/week/metric conversions.
CONSTANTS = {1, 2, 3, 4, 7, 10, 12, 24, 60, 100, 1000}


def _load(split: str) -> list[dict]:
    path = resources.files("lema_hub") / "data" / f"sample_{split}.jsonl"
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        assert line.strip(), f"sample_{split}.jsonl line {lineno} is blank"
        rows.append(json.loads(line))
    return rows


SAMPLE = {split: _load(split) for split in SPLITS}
ALL = [(f"{split}/{i}", row) for split, rows in SAMPLE.items() for i, row in enumerate(rows)]
IDS = [pid for pid, _ in ALL]


def _norm(question: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", question.lower()).split())


# ---------------------------------------------------------------------------- bundled sample


def test_split_sizes():
    assert {split: len(rows) for split, rows in SAMPLE.items()} == SPLITS
    assert sum(SPLITS.values()) >= 40


@pytest.mark.parametrize("pid,row", ALL, ids=IDS)
def test_problem_is_gsm8k_format(pid, row):
    assert set(row) == {"question", "answer"}, pid
    assert isinstance(row["question"], str) and row["question"].strip().endswith("?"), pid
    assert "<<" not in row["question"] and "####" not in row["question"], pid
    lines = row["answer"].split("\n")
    assert FINAL.match(lines[-1]), f"{pid}: last line {lines[-1]!r} is not '#### N'"
    assert all(line.strip() and not line.startswith("####") for line in lines[:-1]), pid


@pytest.mark.parametrize("pid,row", ALL, ids=IDS)
def test_every_annotation_recomputes(pid, row):
    lines = row["answer"].split("\n")[:-1]
    assert 2 <= len(lines) <= 6, f"{pid}: {len(lines)} steps"
    for line in lines:
        pairs = annotations(line)
        # One calculator annotation per step: each step computes exactly one new number.
        assert len(pairs) == 1, f"{pid}: step {line!r} has {len(pairs)} annotations"
        expr, result = pairs[0]
        assert check_annotation(expr, result), f"{pid}: {expr} != {result}"
        # The number written after the annotation is the annotation's result.
        shown = re.search(r">>([\d.,]+)", line)
        assert shown, f"{pid}: no number after the annotation in {line!r}"
        assert float(shown.group(1).rstrip(".").replace(",", "")) == pytest.approx(float(result)), pid


@pytest.mark.parametrize("pid,row", ALL, ids=IDS)
def test_final_answer_is_last_result(pid, row):
    final = float(FINAL.match(row["answer"].split("\n")[-1]).group(1))
    expr, result = annotations(row["answer"])[-1]
    assert final == pytest.approx(safe_eval(expr)) == pytest.approx(float(result)), pid


@pytest.mark.parametrize("pid,row", ALL, ids=IDS)
def test_steps_use_known_numbers_and_make_new_ones(pid, row):
    """Operands come from the question, earlier results or everyday constants; results are new.

    This is what the rule-based reference corrector relies on to find the first step where a
    wrong path leaves the reference computation.
    """
    known = set(numbers_in(row["question"])) | CONSTANTS
    results: list[float] = []
    for expr, result in annotations(row["answer"]):
        for operand in numbers_in(expr.replace("-", " ")):
            assert any(math.isclose(operand, k) for k in known | set(results)), (
                f"{pid}: {operand} in {expr!r} comes from nowhere"
            )
        value = safe_eval(result)
        assert not any(math.isclose(value, r) for r in results), f"{pid}: result {result} repeats"
        results.append(value)


def test_no_duplicate_questions_and_splits_disjoint():
    seen: dict[str, str] = {}
    for pid, row in ALL:
        key = _norm(row["question"])
        assert key not in seen, f"{pid} duplicates {seen[key]}"
        seen[key] = pid
    train = {_norm(r["question"]) for r in SAMPLE["train"]}
    test = {_norm(r["question"]) for r in SAMPLE["test"]}
    assert not train & test


def test_answers_are_mostly_integers_with_a_few_decimals():
    finals = [FINAL.match(row["answer"].split("\n")[-1]).group(1) for _, row in ALL]
    decimals = [f for f in finals if "." in f]
    assert 1 <= len(decimals) <= len(finals) // 5
    assert all(not f.endswith("0") for f in decimals), "write decimals without trailing zeros"


# ---------------------------------------------------------------------------- calculator


@pytest.mark.parametrize(
    "expr,value",
    [
        ("96/8", 12),
        ("0.4*35", 14),
        ("0.1+0.2", 0.3),
        ("(3+4)*5 - 2", 33),
        ("250//12", 20),
        ("250 % 12", 10),
        ("2**10", 1024),
        ("2**-2", 0.25),
        ("4**0.5", 2),
        ("-3--3", 0),
        ("+5", 5),
        (".5*8", 4),
        ("1,200*3", 3600),
        ("$5.50*2", 11),
        ("05+1", 6),
        ("3 × 4 ÷ 2 − 1", 5),
        ("10**300/10**299", 10),
        ("+".join(["1"] * 200), 200),
    ],
)
def test_safe_eval_arithmetic(expr, value):
    assert safe_eval(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "   ",
        "abc",
        "x + 1",
        "abs(-1)",
        "__import__('os').system('true')",
        "(1).real",
        "().__class__",
        "1 if 1 else 2",
        "1 < 2",
        "[1, 2]",
        "(1, 2)",
        "'ab' * 3",
        "True + 1",
        "None",
        "1j * 2",
        "lambda: 1",
        "1 & 3",
        "1 << 5",
        "~1",
        "not 1",
        "1/0",
        "1//0",
        "1 % 0",
        "0**-1",
        "(-8)**(1/3)",
        "9**9**9",
        "2**1000000",
        "10**10**10",
        "(10**300)*(10**300)",
        "0.5**5000",
        "1e400",
        "9" * 400,
        "(",
        "1 +",
        "2 ** ** 3",
        "<<1+1=2>>",
        "1 = 1",
        "1$2",
        "-" * 400 + "1",
        "(" * 300 + "1" + ")" * 300,
        "1+" * 300 + "1",
    ],
)
def test_safe_eval_rejects(expr):
    with pytest.raises(CalculatorError):
        safe_eval(expr)


@pytest.mark.parametrize("value", [None, 5, 2.0, b"1+1", ["1"]])
def test_safe_eval_rejects_non_strings(value):
    with pytest.raises(CalculatorError, match="must be a string"):
        safe_eval(value)


def test_calculator_error_is_a_value_error_and_names_the_problem():
    assert issubclass(CalculatorError, ValueError)
    with pytest.raises(CalculatorError, match="Call is not allowed"):
        safe_eval("max(1, 2)")
    with pytest.raises(CalculatorError, match="exponent .* too large"):
        safe_eval("9**9**9")
    with pytest.raises(CalculatorError, match="longer than"):
        safe_eval("1+" * MAX_EXPRESSION_CHARS + "1")


def test_annotations_in_order_split_at_last_equals():
    text = "He has 96/8 = <<96/8=12>>12.\nThen <<12+5 = 17>>17 and <<no equals>> <<7=7>>"
    assert annotations(text) == [("96/8", "12"), ("12+5", "17"), ("7", "7")]
    assert annotations("no annotations here") == []


def test_check_annotation():
    assert check_annotation("9/45", "0.2")
    assert check_annotation("1,000*2", "2,000")
    assert not check_annotation("96/8", "13")
    assert not check_annotation("10/3", "3.33")
    assert check_annotation("10/3", "3.33", tol=1e-2)
    assert not check_annotation("import os", "1")
    assert not check_annotation("1+1", "two")


@pytest.mark.parametrize(
    "text,numbers",
    [
        ("She paid $5.50 for 1,200 stickers.", [5.5, 1200]),
        ("25% of the 40 students", [25, 40]),
        ("It was -3 degrees at 6:30.", [-3, 6, 30]),
        ("5-3 = 2 on a 2-hour trip", [5, 3, 2, 2]),
        ("a 3x4 grid and .5 cups", [3, 4, 0.5]),
        ("1,234,567.5 and 12,34", [1234567.5, 12, 34]),
        ("Each box holds 96/8 = <<96/8=12>>12 eggs.", [96, 8, 12]),
        ("The answer is 72.", [72]),
        ("no numbers at all", []),
    ],
)
def test_numbers_in(text, numbers):
    assert numbers_in(text) == pytest.approx(numbers)


@st.composite
def _expressions(draw, depth: int = 0) -> tuple[str, Fraction]:
    """A random arithmetic expression and its exact value (built without evaluating text)."""
    if depth >= 3 or draw(st.booleans()):
        n = draw(st.integers(0, 10_000))
        cents = draw(st.sampled_from([None, 5, 25, 50, 75]))
        if cents is None:
            return str(n), Fraction(n)
        return f"{n}.{cents:02d}", Fraction(n) + Fraction(cents, 100)
    left, lv = draw(_expressions(depth + 1))
    right, rv = draw(_expressions(depth + 1))
    op = draw(st.sampled_from("+-*/"))
    if op == "/" and rv == 0:
        op = "+"
    value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else None}[op]
    return f"({left}){op}({right})", value


@settings(max_examples=200, deadline=None, database=None)
@given(_expressions())
def test_safe_eval_matches_exact_arithmetic(case):
    expr, value = case
    assert safe_eval(expr) == pytest.approx(float(value), rel=1e-12, abs=1e-12)


_ARITH_ALPHABET = "0123456789.,+-*/%() e_jx$<=>"


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=80), st.text(alphabet=_ARITH_ALPHABET, max_size=60)))
def test_safe_eval_fuzz_only_calculator_errors(text):
    try:
        value = safe_eval(text)
    except CalculatorError:
        return
    assert isinstance(value, float) and math.isfinite(value)


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=200))
def test_numbers_in_and_annotations_never_raise(text):
    assert all(math.isfinite(v) for v in numbers_in(text))
    for expr, result in annotations(text):
        assert isinstance(check_annotation(expr, result), bool)


def test_real_gsm8k_annotations_recompute(shared_data):
    """Every calculator annotation in the real GSM8K files parses and checks."""
    total = 0
    failures = []
    for split in ("train", "test"):
        path = shared_data / "gsm8k" / f"{split}.jsonl"
        if not path.exists():
            pytest.skip(f"{path} is absent")
        for line in path.read_text(encoding="utf-8").splitlines():
            for expr, result in annotations(json.loads(line)["answer"]):
                total += 1
                if not check_annotation(expr, result):
                    failures.append((expr, result))
    assert total > 20_000
    assert not failures, failures[:20]
