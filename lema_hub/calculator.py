"""A safe arithmetic calculator for GSM8K-style `<<expr=result>>` annotations.

Expressions are parsed with :mod:`ast` and only numeric literals, `+ - * / // % **`, unary
signs and parentheses are evaluated; nothing is ever passed to `eval()`. Arithmetic is exact
(:class:`fractions.Fraction`), so `0.1+0.2` equals `0.3`, and sizes are bounded so that input
such as `9**9**9` is rejected quickly instead of exhausting memory.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from fractions import Fraction

__all__ = [
    "CalculatorError",
    "MAX_EXPRESSION_CHARS",
    "annotations",
    "check_annotation",
    "numbers_in",
    "safe_eval",
]

MAX_EXPRESSION_CHARS = 500
# Bounds on intermediate values: exact integers/fractions up to ~10**300, exponents up to 1000.
_MAX_BITS = 1000
_MAX_EXPONENT = 1000
_MAX_DEPTH = 300


class CalculatorError(ValueError):
    """The expression is not plain arithmetic, is malformed, or is too large to evaluate."""


_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}

_Number = Fraction | float

# Characters seen in real annotations that are plain spellings of the operators above.
_TRANSLATE = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-", "\u00a0": " "})
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_LEADING_ZEROS = re.compile(r"(?<![\d.])0+(?=\d)")
_DOLLAR = re.compile(r"(?<![\d.])\$(?=[\d.])")


def _plain_expression(expr: str) -> str:
    text = _DOLLAR.sub("", expr.translate(_TRANSLATE)).strip()  # "$5.50" -> "5.50"
    text = _THOUSANDS.sub("", text)  # "1,200" -> "1200"
    return _LEADING_ZEROS.sub("", text)  # "05" is a SyntaxError in Python 3


def _check_size(value: _Number) -> _Number:
    if isinstance(value, Fraction):
        if value.numerator.bit_length() > _MAX_BITS or value.denominator.bit_length() > _MAX_BITS:
            raise CalculatorError("intermediate value is too large")
    elif not math.isfinite(value) or abs(value) > 2.0**_MAX_BITS:
        raise CalculatorError("intermediate value is too large or not finite")
    return value


def _power(base: _Number, exponent: _Number) -> _Number:
    if isinstance(exponent, Fraction) and exponent.denominator == 1:
        n = exponent.numerator
        if abs(n) > _MAX_EXPONENT:
            raise CalculatorError(f"exponent {n} is too large (limit {_MAX_EXPONENT})")
        if base == 0 and n < 0:
            raise CalculatorError("zero raised to a negative power")
        if isinstance(base, Fraction):
            num = abs(base.numerator)
            bits_per_factor = max(math.log2(num) if num else 0.0, math.log2(base.denominator))
        else:
            bits_per_factor = abs(math.log2(abs(base))) if base else 0.0
        # Estimate the result's size before computing it (|±1| never grows).
        if base not in (1, -1) and abs(n) * bits_per_factor > _MAX_BITS:
            raise CalculatorError("power needs too many digits")
        return base**n
    # Fractional exponent: fall back to floats (e.g. a square root).
    b, e = float(base), float(exponent)
    if b < 0:
        raise CalculatorError("fractional power of a negative number")
    if b == 0 and e < 0:
        raise CalculatorError("zero raised to a negative power")
    try:
        return b**e
    except OverflowError as exc:
        raise CalculatorError("power is too large") from exc


def _eval(node: ast.AST, depth: int = 0) -> _Number:
    if depth > _MAX_DEPTH:
        raise CalculatorError("expression is nested too deeply")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        value = node.value
        # bool is an int subclass; complex literals (1j) are not arithmetic on numbers here.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CalculatorError(f"unsupported literal {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise CalculatorError("number is too large")
        return _check_size(Fraction(value) if isinstance(value, int) else Fraction(repr(value)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _eval(node.operand, depth + 1)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, depth + 1)
        right = _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        op = _BINARY.get(type(node.op))
        if op is None:
            raise CalculatorError(f"operator {type(node.op).__name__} is not allowed")
        if right == 0 and isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod):
            raise CalculatorError("division by zero")
        if isinstance(left, float) or isinstance(right, float):
            left, right = float(left), float(right)
        result = op(left, right)
        # Fraction // Fraction is an int; keep every exact value a Fraction.
        return _check_size(Fraction(result) if isinstance(result, int) else result)
    raise CalculatorError(f"{type(node).__name__} is not allowed: only numbers and + - * / // % ** ( )")


def safe_eval(expr: str) -> float:
    """Evaluate an arithmetic expression such as `"(96/8)*1.5"` and return the result as a float.

    Accepts numbers (with optional `1,200` thousands separators and a `$` sign), `+ - * / // % **`,
    unary signs and parentheses. Anything else (names, calls, attributes, comparisons, huge
    powers, malformed text) raises :class:`CalculatorError`.
    """
    if not isinstance(expr, str):
        raise CalculatorError(f"expression must be a string, got {type(expr).__name__}")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = _plain_expression(expr)
    if not text:
        raise CalculatorError("empty expression")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CalculatorError(f"not a valid arithmetic expression: {expr!r}") from exc
    try:
        value = _eval(tree)
        return float(value)
    except CalculatorError:
        raise
    except (ArithmeticError, ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise CalculatorError(f"cannot evaluate {expr!r}: {exc}") from exc


_ANNOTATION = re.compile(r"<<([^<>]*)>>")


def annotations(solution: str) -> list[tuple[str, str]]:
    """GSM8K calculator annotations `<<expr=result>>` in `solution`, in order, as (expr, result).

    The split is at the last `=`; an annotation without `=` is skipped.
    """
    pairs = []
    for body in _ANNOTATION.findall(solution):
        expr, sep, result = body.rpartition("=")
        if sep:
            pairs.append((expr.strip(), result.strip()))
    return pairs


def check_annotation(expr: str, result: str, tol: float = 1e-6) -> bool:
    """True when `expr` evaluates to `result` within `tol` (relative for large values).

    An expression or result that cannot be evaluated gives False, never an exception.
    """
    try:
        got = safe_eval(expr)
        want = safe_eval(result)
    except CalculatorError:
        return False
    return math.isclose(got, want, rel_tol=tol, abs_tol=tol)


# A number: optional sign (not when it follows a word, digit or ")", so "5-3" and "2-hour" are
# not negatives), then 1,234,567-style groups or plain digits, then an optional decimal part.
_NUMBER = re.compile(
    r"(?:(?<![\w)])-)?(?<![\d.])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"  # 1,234.5  12  -3
    r"|(?<![\w.])\.\d+"  # .5
)


def numbers_in(text: str) -> list[float]:
    """Numbers mentioned in a step of text, in order.

    `"1,200"` -> 1200, `"$5.50"` -> 5.5, `"25%"` -> 25, `"-3"` -> -3. Calculator annotations
    `<<...>>` are removed first, so an annotated step's numbers are not counted twice.
    """
    text = _ANNOTATION.sub(" ", text)
    return [float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text)]
