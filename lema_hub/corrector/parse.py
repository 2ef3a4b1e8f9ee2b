"""The corrector's output parser: `parse_correction` turns a raw `Step k.` / `Explanation:` /
`Correct Solution: {...}` output into fields, tolerant of formatting noise but strict about meaning.
Linear in the input (outputs over `MAX_CORRECTION_CHARS` are `too_long`); reads only the first
`Correct Solution` block. Every compiled pattern of this module is listed in `_PARSER_PATTERNS`."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from lema_hub.answers import extract_answer
from lema_hub.schema import CHOICE_TASK

logger = logging.getLogger(__name__)


# Longer outputs are rejected as `too_long` before any parsing. The default `max_tokens` (768) gives
# ~3,000 characters; 32,000 is ~8k tokens, and the parser reads that in a few milliseconds
# (benchmarks/parser.py). Anything longer is a degenerate generation, not a correction.
MAX_CORRECTION_CHARS = 32_000
# A step number with more digits than this is out of range of any solution (and of int64 columns);
# it is never converted to int (Python refuses int() on over 4,300 digits).
_MAX_STEP_DIGITS = 18


@dataclass
class ParsedCorrection:
    """Fields read from a corrector's output; `reject_reason` is None when the format is sound."""

    incorrect_step: int | None = None
    explanation: str = ""
    corrected_steps: list[str] = field(default_factory=list)
    corrected_answer: str | None = None
    reject_reason: str | None = None
    detail: str = ""  # human-readable detail of the reject

    @property
    def ok(self) -> bool:
        return self.reject_reason is None


# Linear time by construction. Every quantifier is bounded to one line (`[ \t]`, never `\s`, except in
# `_STEP_INDEX_RE` right after a literal `step`), search patterns start at a line start (`^` under
# re.M, or `\n`) that their quantifiers cannot cross, and no pattern has two unbounded quantifiers
# that can take the same characters one after the other (or one inside another). So each match
# attempt costs O(its line) and attempts on different lines never rescan each other: O(n) in all.
# tests/test_correct.py checks these properties on `_PARSER_PATTERNS`; benchmarks/parser.py times
# adversarial inputs up to MAX_CORRECTION_CHARS.
_BOLD_RE = re.compile(r"\*\*|__")
_INCORRECT_LABEL_RE = re.compile(r"[ \t>#*]*incorrect[ \t]+step[ \t]*[:\-]?", re.I)  # at a line start
_REPEATED_LABEL_RE = re.compile(r"^[ \t>#*]*incorrect[ \t]+step[ \t]*[:\-]", re.I | re.M)
_EXPLANATION_RE = re.compile(r"^[ \t>#*]*explanation[ \t]*[:\-]", re.I | re.M)
_SOLUTION_RE = re.compile(r"^[ \t>#*]*correct(?:ed)?[ \t]+solution[ \t]*[:\-]?", re.I | re.M)
_NEXT_DEMO_RE = re.compile(r"\n[ \t]*(?:question|original solution)[ \t]*:", re.I)
_STEP_LINE_RE = re.compile(r"[-*>]?[ \t]*step[ \t]*(\d+)[ \t]*[:.)\-](.*)", re.I)  # on a stripped line
_FIRST_STEP_LINE_RE = re.compile(
    r"^[ \t]*(?:[-*>][ \t]*)?step[ \t]*\d+[ \t]*[:.)\-]|^[ \t]*\{[ \t]*$", re.I | re.M
)
_STEP_INDEX_RE = re.compile(r"step\s*(?:#\s*)?(\d+)", re.I)  # searched in the head (before the labels)
_BARE_INDEX_RE = re.compile(r"\s*(\d+)\b")
_ELLIPSIS_RE = re.compile(r"[.\u2026\s]+")
_NON_SPACE_RE = re.compile(r"\S")
# CSQA (the paper's schema without a step index): `Mistakes: ...` / `Corrected Answer: { ... }`.
_MISTAKES_LABEL_RE = re.compile(r"[ \t>#*]*mistakes?[ \t]*[:\-]", re.I)  # at a line start
_REPEATED_MISTAKES_RE = re.compile(r"^[ \t>#*]*mistakes?[ \t]*[:\-]", re.I | re.M)
_CORRECTED_ANSWER_RE = re.compile(r"^[ \t>#*]*correct(?:ed)?[ \t]+answer[ \t]*[:\-]?", re.I | re.M)
_WORD_RE = re.compile(r"\w")
# (pattern, how it is applied): "search" scans a whole text, "match" tries one position.
_PARSER_PATTERNS = (
    (_BOLD_RE, "search"),
    (_INCORRECT_LABEL_RE, "match"),
    (_REPEATED_LABEL_RE, "search"),
    (_EXPLANATION_RE, "search"),
    (_SOLUTION_RE, "search"),
    (_NEXT_DEMO_RE, "search"),
    (_STEP_LINE_RE, "match"),
    (_FIRST_STEP_LINE_RE, "search"),
    (_STEP_INDEX_RE, "search"),
    (_BARE_INDEX_RE, "match"),
    (_ELLIPSIS_RE, "match"),
    (_NON_SPACE_RE, "search"),
    (_MISTAKES_LABEL_RE, "match"),
    (_REPEATED_MISTAKES_RE, "search"),
    (_CORRECTED_ANSWER_RE, "search"),
    (_WORD_RE, "search"),
)


def _clean_output(raw: str) -> str:
    """Unify line ends, drop markdown bold, and cut where a continuation runs into a new demonstration."""
    text = _BOLD_RE.sub("", raw.replace("\r\n", "\n").replace("\r", "\n"))
    m = _NEXT_DEMO_RE.search(text)
    return text[: m.start()] if m else text


def _step_number(digits: str) -> int | None:
    """int(digits), or None when it has more than `_MAX_STEP_DIGITS` significant digits."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_STEP_DIGITS else None


def _solution_block(sol_text: str) -> list[str]:
    """The Correct Solution block's non-blank lines (stripped), up to the brace that closes it.

    A model may go on after the block's `}` (repeating `Incorrect Step: ... Correct Solution: {`, or
    chatting); like a run into the next demonstration, that text is not part of the correction and is
    dropped. The block ends at the first line made only of `}`, or, when it opened with `{`, where its
    brace count returns to zero (LaTeX braces inside are balanced: `\\frac{1}{2}` does not close it).
    """
    lines = [s for s in (ln.strip() for ln in sol_text.split("\n")) if s]
    braced = bool(lines) and lines[0].startswith("{") and not lines[0].startswith("{}")
    depth = 0
    for i, line in enumerate(lines):
        if line[0] == "}" and not line.strip("} \t"):
            return lines[: i + 1]
        if not braced:
            continue
        closes = line.count("}")
        if depth - closes > 0:  # cannot reach zero on this line
            depth += line.count("{") - closes
            continue
        for j, ch in enumerate(line):  # each line is scanned at most once
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return [*lines[:i], line[: j + 1]]
    return lines


def _strip_braces(lines: list[str]) -> list[str]:
    """Drop the block's `{` / `}` lines (missing or doubled braces are fine), keeping LaTeX braces."""
    lines = [ln.strip() for ln in lines]
    start, end = 0, len(lines)
    while start < end and (not lines[start] or set(lines[start]) <= {"{", " "}):
        start += 1
    while end > start and (not lines[end - 1] or set(lines[end - 1]) <= {"}", " "}):
        end -= 1
    lines = lines[start:end]
    if lines and lines[0].startswith("{") and not lines[0].startswith("{}"):
        lines[0] = lines[0].lstrip("{ ").strip()
    if lines:
        last = lines[-1]
        excess, stop = last.count("}") - last.count("{"), len(last)
        while excess > 0 and stop and last[stop - 1] == "}":  # unmatched closing braces at the end
            stop -= 1
            excess -= 1
            while stop and last[stop - 1].isspace():
                stop -= 1
        lines[-1] = last[:stop]
    return [ln for ln in lines if ln]


def _solution_steps(lines: list[str]) -> list[tuple[int | None, str]]:
    """(number, text) per step; unnumbered lines continue the previous step; `...` lines drop."""
    steps: list[tuple[int | None, list[str]]] = []
    for line in lines:  # stripped, non-blank (from _strip_braces); the first-char tests skip the regexes
        if line[0] in ".\u2026" and _ELLIPSIS_RE.fullmatch(line):
            continue
        m = _STEP_LINE_RE.match(line) if line[0] in "sS-*>" else None
        if m:
            # A number too long to be a step sorts after every real step (it is never int()-ed).
            num = _step_number(m.group(1))
            steps.append((num if num is not None else 10**_MAX_STEP_DIGITS, [m.group(2).strip()]))
        elif steps:
            steps[-1][1].append(line)
        else:
            steps.append((None, [line]))
    return [(num, "\n".join(parts).strip()) for num, parts in steps]


def parse_correction(raw: str | None, num_steps: int, task: str = "gsm8k") -> ParsedCorrection:
    """Read a corrector's continuation of `... Incorrect Step:` (or a full `Incorrect Step: ...` block);
    for `task="csqa"`, of `... Mistakes:` (`parse_choice_correction`).

    Never raises: any problem comes back as `reject_reason` (see `REJECT_REASONS`). Linear in the
    length of `raw`; outputs over `MAX_CORRECTION_CHARS` are rejected as `too_long`.
    """
    try:
        if task == CHOICE_TASK:
            return _parse_choice(raw)
        return _parse(raw, num_steps, task)
    except Exception as exc:  # a parser bug must not lose the row; it becomes a visible reject
        logger.debug("parse_correction failed", exc_info=True)
        return ParsedCorrection(
            reject_reason="parse_error", detail=f"parser error: {type(exc).__name__}: {exc}"
        )


def _unreadable(raw: str | None) -> ParsedCorrection | None:
    """The reject of an output too long or empty to parse, else None."""
    if raw is not None and len(raw) > MAX_CORRECTION_CHARS:
        return ParsedCorrection(
            reject_reason="too_long",
            detail=f"{len(raw):,} characters, over the parser's cap of {MAX_CORRECTION_CHARS:,}",
        )
    if raw is None or not raw.strip():
        return ParsedCorrection(
            reject_reason="generation_failed" if raw is None else "parse_error", detail="empty output"
        )
    return None


def parse_choice_correction(raw: str | None) -> ParsedCorrection:
    """Read a CSQA corrector's continuation of `... Mistakes:` (or a full `Mistakes: ...` block):
    the mistakes text is the explanation, the first `Corrected Answer: { ... }` block the corrected
    answer (its non-blank lines in `corrected_steps`), and its "The answer is X" the corrected
    answer. There is no step index (`incorrect_step` stays None). Never raises; linear in the input."""
    try:
        return _parse_choice(raw)
    except Exception as exc:  # a parser bug must not lose the row; it becomes a visible reject
        logger.debug("parse_choice_correction failed", exc_info=True)
        return ParsedCorrection(
            reject_reason="parse_error", detail=f"parser error: {type(exc).__name__}: {exc}"
        )


def _skip_repeated_label(text: str, label_re: re.Pattern[str]) -> str:
    """`text` after a label the model repeated at the start of its first non-blank line."""
    first = _NON_SPACE_RE.search(text)
    m = label_re.match(text, text.rfind("\n", 0, first.start()) + 1) if first else None
    return text[m.end() :] if m else text


def _parse_choice(raw: str | None) -> ParsedCorrection:
    bad = _unreadable(raw)
    if bad is not None:
        return bad
    assert raw is not None
    text = _skip_repeated_label(_clean_output(raw), _MISTAKES_LABEL_RE)  # `Mistakes:` echoed
    sol_m = _CORRECTED_ANSWER_RE.search(text)
    if sol_m is None:
        return ParsedCorrection(reject_reason="parse_error", detail="no 'Corrected Answer:' block")
    out = ParsedCorrection(explanation=text[: sol_m.start()].strip())
    if not _WORD_RE.search(out.explanation):
        out.reject_reason, out.detail = "empty_explanation", "the mistakes text is empty"
        return out
    sol_text = text[sol_m.end() :]
    again = _REPEATED_MISTAKES_RE.search(sol_text)  # a model that starts its block again: first only
    if again:
        sol_text = sol_text[: again.start()]
    lines = _strip_braces(_solution_block(sol_text))
    if not lines:
        out.reject_reason, out.detail = "parse_error", "no corrected answer in the block"
        return out
    out.corrected_steps = lines
    out.corrected_answer = extract_answer("\n".join(lines), "gsm8k", "strict")
    if out.corrected_answer is None or not out.corrected_answer.strip():
        out.corrected_answer = None
        out.reject_reason, out.detail = "no_answer", "the corrected answer states no 'The answer is ...'"
    return out


def _parse(raw: str | None, num_steps: int, task: str) -> ParsedCorrection:
    bad = _unreadable(raw)
    if bad is not None:
        return bad
    assert raw is not None
    text = _skip_repeated_label(_clean_output(raw), _INCORRECT_LABEL_RE)  # `Incorrect Step:` echoed
    exp_m = _EXPLANATION_RE.search(text)
    sol_m = _SOLUTION_RE.search(text)
    if exp_m or sol_m:
        # A model that starts its block again (`}\nIncorrect Step: ...`): the first block is the answer.
        again = _REPEATED_LABEL_RE.search(text, min(x.end() for x in (exp_m, sol_m) if x))
        if again:
            text = text[: again.start()]
            exp_m = exp_m if exp_m and exp_m.end() <= again.start() else None
            sol_m = sol_m if sol_m and sol_m.end() <= again.start() else None
    head_end = min(x.start() for x in (exp_m, sol_m) if x) if (exp_m or sol_m) else text.find("\n")
    head = text[: head_end if head_end >= 0 else len(text)]
    idx = _STEP_INDEX_RE.search(head) or _BARE_INDEX_RE.match(head)
    if idx is None:
        return ParsedCorrection(reject_reason="parse_error", detail="no 'Step k' after 'Incorrect Step:'")
    k = _step_number(idx.group(1))
    if k is None:
        digits = len(idx.group(1).lstrip("0"))
        return ParsedCorrection(
            reject_reason="step_out_of_range",
            detail=f"a {digits:,}-digit step of a {num_steps}-step solution",
        )
    out = ParsedCorrection(incorrect_step=k)
    if not 1 <= k <= num_steps:
        out.reject_reason, out.detail = "step_out_of_range", f"step {k} of a {num_steps}-step solution"
        return out
    if exp_m is None:
        out.reject_reason, out.detail = "empty_explanation", "no 'Explanation:'"
        return out
    if sol_m and sol_m.start() > exp_m.end():
        explanation = text[exp_m.end() : sol_m.start()].strip()
        sol_text = text[sol_m.end() :]
    else:  # no `Correct Solution:` label: the explanation ends where the steps begin
        nl = text.find("\n", exp_m.end())
        step = _FIRST_STEP_LINE_RE.search(text, nl + 1) if nl >= 0 else None
        cut = step.start() if step else len(text)
        explanation = text[exp_m.end() : cut].strip()
        sol_text = text[cut:]
    out.explanation = explanation
    if not re.search(r"\w", explanation):
        out.reject_reason, out.detail = "empty_explanation", "the explanation is empty"
        return out
    steps = _solution_steps(_strip_braces(_solution_block(sol_text)))
    if not steps:
        out.reject_reason, out.detail = "parse_error", "no corrected solution"
        return out
    numbered = [s for s in steps if s[0] is not None]
    if numbered:
        steps = [s for s in steps if s[0] is None or s[0] >= k]  # restated earlier steps are dropped
        if not steps or steps[0][0] != k:
            first_num = steps[0][0] if steps else None
            out.reject_reason = "inconsistent_steps"
            out.detail = f"the corrected solution starts at step {first_num}, not at the incorrect step {k}"
            out.corrected_steps = [s for _, s in steps]
            return out
    out.corrected_steps = [s for _, s in steps if s]
    out.corrected_answer = extract_answer("\n".join(out.corrected_steps), task)
    if out.corrected_answer is None or not out.corrected_answer.strip():
        out.corrected_answer = None
        out.reject_reason, out.detail = "no_answer", "the corrected solution states no final answer"
    return out
