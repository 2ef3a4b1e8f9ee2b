"""The rule-based reference corrector and locator (GSM8K calculator annotations; the arithmetic
claims of `corrector.claims` elsewhere). `reference_rules_ref` names the rules by the hash of their
source, so the imports inside the hashed functions stay where they are."""

from __future__ import annotations

import ast
import inspect
import logging
import math
from dataclasses import dataclass

from lema_hub.calculator import safe_eval
from lema_hub.corrector.claims import first_false_step
from lema_hub.corrector.parse import ParsedCorrection
from lema_hub.corrector.prompt import sha12

logger = logging.getLogger(__name__)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) or abs(a - b) < 0.005  # 33.33 for 33.333...


def _subexpression_values(expr: str) -> list[float]:
    """Values of every arithmetic sub-expression of a calculator annotation (e.g. 48*2 in 48*2*1.5)."""
    try:
        tree = ast.parse(expr.replace(",", ""), mode="eval")
    except SyntaxError:
        return []
    values = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp):
            try:
                values.append(float(safe_eval(ast.unparse(node))))
            except (ValueError, ZeroDivisionError, OverflowError, TypeError):
                pass
    return values


def _computed_numbers(step: str) -> list[float]:
    """The numbers a step computes: the first number after each `=`."""
    from lema_hub.calculator import numbers_in  # inside: this source is part of reference_rules_ref's hash

    out = []
    for segment in step.split("=")[1:]:
        nums = numbers_in(segment)
        if nums:
            out.append(nums[0])
    return out


@dataclass
class _Reference:
    values: list[float]  # every value the reference computation (or the question) contains
    gold_lines: list[list[float]]  # per gold step: the results of its annotations
    annotations: list[list[tuple[str, str]]]  # per gold step: its (expr, result) pairs
    gold_steps: list[str]  # formats.gold_steps: gold lines without annotations + the answer step


def _reference(problem: dict) -> _Reference | None:
    from types import SimpleNamespace

    # Imports inside: this function's source is hashed into reference_rules_ref (the recorded rules).
    from lema_hub import formats
    from lema_hub.calculator import annotations, numbers_in

    gold = problem.get("gold_solution") or ""
    if "####" not in gold or not annotations(gold):  # only GSM8K-style gold with calculator annotations
        return None
    lines = [ln for ln in gold.rsplit("####", 1)[0].strip().split("\n") if ln.strip()]
    gold_steps = formats.gold_steps(
        SimpleNamespace(
            source=problem.get("source"), gold_solution=gold, gold_answer=problem.get("gold_answer")
        )
    )
    if len(gold_steps) != len(lines) + 1:
        return None
    per_line = [annotations(ln) for ln in lines]
    gold_lines, values = [], []
    for anns in per_line:
        results = []
        for expr, result in anns:
            nums = numbers_in(result)
            if nums:
                results.append(nums[0])
            values += nums + _subexpression_values(expr)
        gold_lines.append(results)
    question_numbers = numbers_in(problem.get("question") or "")
    values += question_numbers + [q / 100 for q in question_numbers]
    values += numbers_in(str(problem.get("gold_answer") or ""))
    values += numbers_in(gold)  # results written in the gold text without an annotation ("= 7S = 847")
    return _Reference(values=values, gold_lines=gold_lines, annotations=per_line, gold_steps=gold_steps)


def _locate(ref: _Reference, steps: list[str]) -> tuple[int, list[float]] | None:
    """(1-based step, its off-reference numbers): the first step whose computed numbers leave the
    reference computation; else the final step (the path stopped at a wrong quantity)."""
    for i, step in enumerate(steps):
        off = [x for x in _computed_numbers(step) if not any(_close(x, v) for v in ref.values)]
        if off:
            return i + 1, off
    return (len(steps), []) if steps else None


def reference_step(problem: dict, steps: list[str]) -> int | None:
    """The rule-based locator's incorrect step (1-based), or None where it does not apply.

    Without gold calculator annotations (MATH, real model paths, ProcessBench) it falls back to the
    arithmetic check of `corrector.claims`: the first step with a false `a op b = c`, None if all hold.
    """
    try:
        ref = _reference(problem)
        if ref is None:
            return arithmetic_step(steps)
        located = _locate(ref, steps)
    except Exception:  # QA helper: never let one odd problem stop a run
        logger.debug("reference locator failed", exc_info=True)
        return None
    return located[0] if located else None


def arithmetic_step(steps: list[str]) -> int | None:
    """The first step (1-based) with a false arithmetic claim, or None when every claim holds."""
    located = first_false_step(steps)
    return located[0] if located else None


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def reference_correction(problem: dict, steps: list[str]) -> ParsedCorrection | None:
    """A correction from the gold computation: find the step that leaves it, explain from the
    numbers, and continue with the reference steps from there. None where the rules don't apply."""
    try:
        ref = _reference(problem)
        located = _locate(ref, steps) if ref else None
    except Exception:
        logger.debug("reference corrector failed", exc_info=True)
        return None
    if not ref or not located:
        return None
    k, off = located
    done = [x for s in steps[: k - 1] for x in _computed_numbers(s)]
    # Gold steps already reached by the path's correct prefix are skipped; the rest are the fix.
    start = next(
        (
            j
            for j, res in enumerate(ref.gold_lines)
            if not res or not all(any(_close(r, d) for d in done) for r in res)
        ),
        len(ref.gold_lines),
    )
    corrected = ref.gold_steps[start:]
    nxt = next((a for anns in ref.annotations[start:] for a in anns), None)
    right = f" The correct computation at this point is {nxt[0]} = {nxt[1]}." if nxt else ""
    if off:
        wrong = ", ".join(_fmt(x) for x in off)
        explanation = (
            f"Step {k} computes {wrong}, a value that does not follow from the numbers in the question and "
            f"the correct steps before it.{right}"
        )
    else:
        explanation = (
            f"The solution stops at a quantity that is not what the question asks for.{right} "
            f"It still has to be carried through to the final answer."
        ).replace("  ", " ")
    answer = str(problem.get("gold_answer") or "")
    return ParsedCorrection(
        incorrect_step=k, explanation=explanation, corrected_steps=corrected, corrected_answer=answer or None
    )


def reference_rules_ref() -> str:
    """`reference-rules@sha256:<12 hex>`: names the rule-based corrector by the hash of its code."""
    src = "".join(
        inspect.getsource(f) for f in (_reference, _locate, reference_correction, _computed_numbers)
    )
    return f"reference-rules@sha256:{sha12(src.encode())}"
