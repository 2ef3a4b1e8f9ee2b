"""Arithmetic claims in free-text reasoning steps: find every `a op b = c` and recompute it.

Used by three callers, so it lives on its own: the `reference` corrector's fallback locator for paths
whose gold solution has no `<<...>>` annotations, `correct`'s optional check of accepted corrections,
and the offline baseline of `lema-hub bench-corrector`. Expressions are evaluated with the project's
safe calculator (`lema_hub.calculator.safe_eval`, never `eval`).

The extractor is deliberately conservative: a claim is checked only when its left side is plain
arithmetic on numbers (at least one binary operator) that does not continue into algebra (a
variable, a function, a subscript) and its right side is one plain number. Anything else is skipped,
so a step is flagged only for a claim that is false as written.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

from lema_hub.calculator import CalculatorError, safe_eval

__all__ = ["Claim", "claims_in", "false_claims", "first_false_step", "rules_ref"]


@dataclass(frozen=True)
class Claim:
    """One `lhs = rhs` claim; `value` is what `lhs` really is."""

    lhs: str
    rhs: str
    value: float
    per_hundred: bool = False  # the result is stated in cents or percent (`$1 / 2 = 50 cents`)

    @property
    def holds(self) -> bool:
        return _agrees(self.value, self.rhs) or (self.per_hundred and _agrees(100 * self.value, self.rhs))

    def describe(self) -> str:
        return f"{self.lhs} = {self.rhs} is false ({self.lhs} = {_fmt(self.value)})"


def _fmt(x: float) -> str:
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.6g}"


def _agrees(value: float, stated: str) -> bool:
    """Whether `stated` is `value` up to the rounding its own digits imply (3.33 for 10/3, 3 for 10/3)."""
    want = float(stated.replace(",", ""))
    decimals = len(stated.split(".", 1)[1]) if "." in stated else 0
    slack = 0.5 * 10.0**-decimals + 1e-9
    return math.isclose(value, want, rel_tol=1e-9, abs_tol=1e-9) or abs(value - want) <= slack


# LaTeX and typography → the calculator's syntax. Order matters (fractions before braces).
_REPLACEMENTS = [
    (re.compile(r"\\[\(\)\[\]]|\n"), " ; "),  # math delimiters and line ends separate claims
    (re.compile(r"\{,\}"), ","),  # 1{,}000
    (re.compile(r"\\text(?:bf|rm|it)?\s*\{([^{}]*)\}"), r" \1 "),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°"), ""),  # degrees are a unit
    (re.compile(r"\\(?:left|right|big|Big|bigl|bigr)\s*(?=[()\[\]])"), ""),
    (re.compile(r"\\(?:times|cdot|ast)(?![A-Za-z])|×|·|∗"), "*"),
    (re.compile(r"\\div(?![A-Za-z])|÷"), "/"),
    (re.compile(r"[−–]"), "-"),
    (re.compile(r"\\[,;:! ]|~"), " "),  # LaTeX spaces
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\$"), " "),
    (re.compile(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])"), "*"),  # "5 x 3" is a product in GSM8K-style text
    (re.compile(r"(\d+(?:\.\d+)?)\s*%"), r"(\1/100)"),
    (re.compile(r"(?<=/)\s+(\d+/\d+)(?![\d/])"), r" (\1)"),  # `25 / 1/3` divides by the fraction 1/3
]
_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_ARITH_CHARS = set("0123456789.,+-*/^() ")
_GLUE = re.compile(r"[A-Za-z_\\}\]'!|:]$")  # `x2`, `r_3`, `\\log_(10)(...)`, `\\sqrt[4](...)`
_FUNCTION_END = re.compile(r"(?:\\[A-Za-z]+|_\S*|(?<![A-Za-z])[A-Za-z]|[)\]}])$")
_OPERAND_END = re.compile(r"[A-Za-z0-9_)}\]!|'\\]$")
# The right side: one plain number, e.g. 12, -3, 1,200, 0.75.
_RHS = re.compile(r"\s*(-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|-?\.\d+)")
_NUM_BINOP_NUM = re.compile(r"[\d.)]\s*(?:\*\*|[-+*/^])\s*[-(]*\s*[\d.]")
_IMPLICIT_MUL = re.compile(r"(?<=[\d)])\s*(?=\()|(?<=\))\s*(?=\d)")


def latex_to_arithmetic(text: str) -> str:
    """A step's text with LaTeX arithmetic rewritten into plain `+ - * / ^ ( )` notation."""
    for _ in range(4):  # nested fractions
        new = _FRAC.sub(r"((\1)/(\2))", text)
        if new == text:
            break
        text = new
    for pattern, repl in _REPLACEMENTS:
        text = pattern.sub(repl, text)
    return text.replace("{", "(").replace("}", ")")


def _lhs_expression(segment: str) -> str | None:
    """The arithmetic expression that ends `segment` (the text before an `=`), or None."""
    i = len(segment)
    while i > 0 and segment[i - 1] in _ARITH_CHARS:
        i -= 1
    tail, before = segment[i:], segment[:i].rstrip()
    glued = bool(tail) and not tail[0].isspace() and _GLUE.search(segment[:i]) is not None
    # A comma that is not a thousands separator ends the expression (lists, coordinates).
    if re.search(r"\d,(?!\d{3}(?!\d))\d|\d, \d{3}(?![\d.])", tail):
        return None  # `16,0000`, `14, 400`: a malformed number, or a list; either way not checkable
    parts = re.split(r",(?!\d{3}(?!\d))", tail)
    if len(parts) > 1:
        tail, before = parts[-1], ","  # a list item: nothing before it belongs to the expression
    tail = tail.strip()
    if not tail:
        return None
    continues = bool(before) and _OPERAND_END.search(before) is not None
    if tail[0] in "+-*/^" and continues:
        return None  # `2x + 3`, `n^2 - 1`: the expression started in algebra
    if tail[0] not in "+-*/^" and glued:
        return None  # `x2`, `r_3`: glued to a name
    if tail[0] not in "+-*/^" and (
        re.search(r"(?<![A-Za-z])[xX×]$|\btimes$|\bof$", before)
        or (re.search(r"\d\s+and$", before) and re.match(r"\d+\s*/\s*\d", tail))
    ):
        return None  # `60 students x 2/3`, `1 and 1/4`: the expression starts further left
    if tail[0] == "(" and _FUNCTION_END.search(before):
        return None  # `f (2)`, `\\log_x (1/100)`: a function's argument, not a product
    # Strip a leading bold `**`, a stray operator, or an opening bracket that is not closed here.
    while tail and (tail[0] in "+*/^" or (tail[0] == "(" and tail.count("(") > tail.count(")"))):
        tail = tail[1:].lstrip()
    if tail.count("(") != tail.count(")") or not _NUM_BINOP_NUM.search(tail):
        return None
    depth = 0
    for ch in tail:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return None
    return _IMPLICIT_MUL.sub("*", tail).replace("^", "**")


def _rhs_number(segment: str) -> str | None:
    """The plain number that starts `segment` (the text after an `=`), unless an expression follows."""
    m = _RHS.match(segment)
    if not m:
        return None
    rest = segment[m.end() :]
    if rest[:1] and (rest[0].isalnum() or rest[0] in "_^({\\%"):
        return None  # `6x`, `6^2`, `6(`, `6\pi`
    if rest[:1] == "." and rest[1:2].strip():
        return None  # `0.\overline{6}`; a plain `6.` ends a sentence
    after = rest.lstrip()
    if re.match(r"(?:\*\*|[-+*/^×÷])\s*\S", after) or after[:1] in ("(", "\\"):
        return None  # `= 6 + 1 = 7`, `= 6 + b`, `= 1 (mod 5)`, `= 6 \sqrt{2}`: not a plain result
    if re.match(r"\s\d{3}(?!\d)", rest) or re.match(r"and\s+\(?\d+\s*/\s*\d+", after):
        return None  # `18 000` (space as thousands separator), `5 and 2/3` (a mixed number)
    if re.match(r"(?:[A-Za-z](?![A-Za-z])|remainder|R\b|rem\b|with a remainder)", after):
        return None  # `= 32 r^5` (a product with a variable), `19 / 4 = 4 remainder 3`
    return m.group(1)


def claims_in(step: str) -> list[Claim]:
    """Every checkable `lhs = number` claim of a step, in order (false ones included)."""
    text = latex_to_arithmetic(step)
    if "=" not in text:
        return []
    parts = re.split(r"(?<![<>!=])=(?!=)", text)
    out: list[Claim] = []
    for left, right in zip(parts, parts[1:]):
        lhs = _lhs_expression(left)
        if lhs is None:
            continue
        rhs = _rhs_number(right)
        if rhs is None:
            continue
        try:
            value = safe_eval(lhs)
        except (CalculatorError, ZeroDivisionError, OverflowError):
            continue
        per_hundred = (
            re.match(r"\s*(?:cents?\b|percent\b|%)", right[right.find(rhs) + len(rhs) :]) is not None
        )
        out.append(Claim(lhs=lhs.replace("**", "^"), rhs=rhs, value=value, per_hundred=per_hundred))
    return out


def false_claims(step: str) -> list[Claim]:
    """The claims of `step` that do not hold."""
    return [c for c in claims_in(step) if not c.holds]


def first_false_step(steps: list[str]) -> tuple[int, Claim] | None:
    """(1-based step, its first false claim) for the first step with a false claim; None if all hold."""
    for i, step in enumerate(steps):
        bad = false_claims(step)
        if bad:
            return i + 1, bad[0]
    return None


def rules_ref() -> str:
    """`arithmetic-claims@sha256:<12 hex>`: names the checker by the hash of this module's code."""
    return f"arithmetic-claims@sha256:{hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]}"
