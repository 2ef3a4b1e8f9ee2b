"""The LeMa corrector: prompt, parser, acceptance filter, and a rule-based reference corrector.

A corrector (any LLM served through `lema_hub.generation`, or the offline `reference` rules) gets a
few-shot prompt + a question + a wrong reasoning path, ending at `Incorrect Step:`, and continues with
`Step k.` / `Explanation: ...` / `Correct Solution: { ... Step k: ... Step N: The answer is X. }`.
It never sees the gold answer. `parse_correction` turns the raw output into fields, tolerant of
formatting noise but strict about meaning, and a correction is accepted only when its final answer
grades `correct` against gold. Rejected rows are kept with a reason from `REJECT_REASONS`.
The parser runs in linear time (outputs over `MAX_CORRECTION_CHARS` are `too_long`) and reads only
the first `Correct Solution` block. Column names and types of the rows are `lema_hub.schema`'s.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import logging
import math
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from lema_hub.artifacts import HubArgs, load_rows, main_config
from lema_hub.generation.types import EndpointArgs
from lema_hub.publish import finish
from lema_hub.schema import CORRECTOR_TOKENS, REFERENCE_CORRECTOR, correction_features
from lema_hub.schema import REJECT_REASONS as REJECT_REASONS  # re-exported: `correction.REJECT_REASONS`

logger = logging.getLogger(__name__)

BACKENDS = (REFERENCE_CORRECTOR, "transformers", "openai", "tgi", "vllm")
PROMPT_STYLES = ("plain", "chat")
DEFAULT_PROMPTS = {"gsm8k": "corrector_gsm8k.txt", "math": "corrector_math.txt"}


# --------------------------------------------------------------------------------------------------
# Corrector prompt
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectorPrompt:
    """A few-shot corrector prompt: instruction + demonstrations, kept verbatim."""

    name: str
    text: str
    sha: str  # first 12 hex digits of sha256 over the file's bytes

    @property
    def ref(self) -> str:
        """`name@sha256:<12 hex>`: recorded on every correction row."""
        return f"{self.name}@sha256:{self.sha}"

    @property
    def newline(self) -> str:
        """The prompt file's line ending (the paper's files use CRLF); queries follow it."""
        return "\r\n" if "\r\n" in self.text else "\n"


def _sha12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def corrector_prompt(task: str, prompt_file: str | None = None) -> CorrectorPrompt:
    """The project's own corrector prompt for `task` ("gsm8k" | "math"), or `prompt_file` verbatim."""
    if prompt_file is not None:
        path = Path(prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"corrector_prompt_file {prompt_file!r} does not exist.")
        data = path.read_bytes()
        name = path.stem
    else:
        if task not in DEFAULT_PROMPTS:
            raise ValueError(
                f"No bundled corrector prompt for task {task!r}; choose one of {sorted(DEFAULT_PROMPTS)}."
            )
        data = resources.files("lema_hub").joinpath("prompts", DEFAULT_PROMPTS[task]).read_bytes()
        name = f"lema-hub/{Path(DEFAULT_PROMPTS[task]).stem}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"Corrector prompt {name!r} is not UTF-8 text: {exc}") from None
    if "Question:" not in text or "Incorrect Step:" not in text:
        raise ValueError(
            f"Corrector prompt {name!r} does not look like a LeMa corrector prompt "
            "(it needs demonstrations with 'Question:' and 'Incorrect Step:')."
        )
    return CorrectorPrompt(name=name, text=text, sha=_sha12(data))


def build_corrector_input(
    prompt: CorrectorPrompt, question: str, steps: list[str], style: str = "plain"
) -> str | list[dict]:
    """Few-shot prompt + one query (`formats.corrector_query`), ending at `Incorrect Step:`.

    "plain" is the paper's completion-style prompt for base models; "chat" sends the same text as
    one user message (how GPT-4 was queried), so both styles see identical demonstrations.
    """
    from lema_hub import formats

    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {style!r}.")
    nl = prompt.newline
    query = formats.corrector_query(question, steps).replace("\r\n", "\n")
    if nl != "\n":
        query = query.replace("\n", nl)
    text = prompt.text.rstrip("\r\n") + nl + nl + query
    return text if style == "plain" else formats.as_messages(text)


def split_demonstrations(prompt_text: str) -> tuple[str, list[str]]:
    """(instruction, demonstrations) of a corrector prompt; blocks are separated by blank lines
    before each `Question:`."""
    lines = prompt_text.replace("\r\n", "\n").split("\n")
    # A block starts at a `Question:` line that follows a blank one (line by line: linear in the text).
    starts = [
        i for i in range(2, len(lines)) if lines[i].startswith("Question:") and not lines[i - 1].strip()
    ]
    bounds = [0, *starts, len(lines)]
    blocks = ["\n".join(lines[a:b]).strip() for a, b in zip(bounds, bounds[1:])]
    return blocks[0], blocks[1:]


# --------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------

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
# tests/test_correction.py checks these properties on `_PARSER_PATTERNS`; benchmarks/parser.py times
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
)


def _normalize(raw: str) -> str:
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
    """Read a corrector's continuation of `... Incorrect Step:` (or a full `Incorrect Step: ...` block).

    Never raises: any problem comes back as `reject_reason` (see `REJECT_REASONS`). Linear in the
    length of `raw`; outputs over `MAX_CORRECTION_CHARS` are rejected as `too_long`.
    """
    try:
        return _parse(raw, num_steps, task)
    except Exception as exc:  # a parser bug must not lose the row; it becomes a visible reject
        logger.debug("parse_correction failed", exc_info=True)
        return ParsedCorrection(
            reject_reason="parse_error", detail=f"parser error: {type(exc).__name__}: {exc}"
        )


def _parse(raw: str | None, num_steps: int, task: str) -> ParsedCorrection:
    from lema_hub.grading import extract_answer

    if raw is not None and len(raw) > MAX_CORRECTION_CHARS:
        return ParsedCorrection(
            reject_reason="too_long",
            detail=f"{len(raw):,} characters, over the parser's cap of {MAX_CORRECTION_CHARS:,}",
        )
    if raw is None or not raw.strip():
        return ParsedCorrection(
            reject_reason="generation_failed" if raw is None else "parse_error", detail="empty output"
        )
    text = _normalize(raw)
    first = _NON_SPACE_RE.search(text)
    m = _INCORRECT_LABEL_RE.match(text, text.rfind("\n", 0, first.start()) + 1) if first else None
    if m:  # the model repeated the `Incorrect Step:` label
        text = text[m.end() :]
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


# --------------------------------------------------------------------------------------------------
# Reference corrector (rule-based, GSM8K calculator annotations)
# --------------------------------------------------------------------------------------------------


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) or abs(a - b) < 0.005  # 33.33 for 33.333...


def _subexpression_values(expr: str) -> list[float]:
    """Values of every arithmetic sub-expression of a calculator annotation (e.g. 48*2 in 48*2*1.5)."""
    from lema_hub.calculator import safe_eval

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
    from lema_hub.calculator import numbers_in

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
    arithmetic check of `lema_hub.claims`: the first step with a false `a op b = c`, None if all hold.
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
    from lema_hub.claims import first_false_step

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
    return f"reference-rules@sha256:{_sha12(src.encode())}"


# --------------------------------------------------------------------------------------------------
# The `correct` stage
# --------------------------------------------------------------------------------------------------


@dataclass
class CorrectConfig(HubArgs, EndpointArgs):
    """`lema-hub correct`: correct every mistake with an LLM (through the engine) or the reference rules."""

    mistakes: str | None = field(
        default=None, metadata={"help": "Mistakes folder or Hub dataset id (from `lema-hub collect`)"}
    )
    mistakes_config: str | None = field(
        default=None, metadata={"help": "Its `<task>` config; default: the folder's main config"}
    )
    mistakes_limit: int | None = field(default=None, metadata={"help": "First N mistakes only (smoke runs)"})
    output_dir: str | None = field(default=None, metadata={"help": "Default: outputs/<task>/corrections"})
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "Config name of the output; default: the mistakes config"}
    )
    backend: str = field(
        default=REFERENCE_CORRECTOR,
        metadata={"help": "reference (rule-based, offline) | transformers | openai | tgi | vllm"},
    )
    model: str | None = field(
        default=None, metadata={"help": "The corrector model (required unless backend is reference)"}
    )
    prompt_style: str = field(
        default="plain", metadata={"help": "plain (completion, the paper's way) | chat (one user message)"}
    )
    corrector_prompt_file: str | None = field(
        default=None, metadata={"help": "E.g. the paper's prompt_correction_gsm8k.txt, verbatim"}
    )
    corrector_task: str | None = field(
        default=None, metadata={"help": "gsm8k | math: which bundled prompt; default: from the problems"}
    )
    num_attempts: int = field(default=1, metadata={"help": "k corrections sampled per mistake"})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p."})
    max_tokens: int = field(default=768, metadata={"help": "Max new tokens per generation."})
    seed: int | None = field(default=0, metadata={"help": "Random seed (sampling, shuffling)."})
    reference_qa: bool = field(
        default=True,
        metadata={"help": "Also record the rule-based locator's step (agreement in the summary)"},
    )
    grading_workers: int | None = field(
        default=None, metadata={"help": "Processes for batch grading (default: CPU count)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    price_table: dict | None = field(
        default=None,
        metadata={
            "help": "$ per million tokens per model, {model: {input: x, output: y}}, for the card's cost"
        },
    )
    check_arithmetic: bool = field(
        default=False,
        metadata={"help": "Reject accepted corrections whose own steps hold a false `a op b = c` claim"},
    )
    corrector_benchmark: str | None = field(
        default=None,
        metadata={"help": "A `lema-hub bench-corrector` folder or Hub repo: its numbers go on the card"},
    )

    def __post_init__(self) -> None:
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}.")
        if self.prompt_style not in PROMPT_STYLES:
            raise ValueError(
                f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}."
            )
        if self.num_attempts < 1:
            raise ValueError(f"num_attempts must be >= 1, got {self.num_attempts}.")
        if self.backend != REFERENCE_CORRECTOR and not self.model:
            raise ValueError(f"backend {self.backend!r} needs `model` (the corrector model name).")
        if self.corrector_task not in (None, *DEFAULT_PROMPTS):
            raise ValueError(
                f"corrector_task must be one of {sorted(DEFAULT_PROMPTS)}, got {self.corrector_task!r}."
            )


def _row_task(row: dict) -> str:
    from lema_hub.problems import task_of

    return task_of(row)


def _correction_rows(cfg: CorrectConfig, mistakes: list[dict], output_dir: Path) -> tuple[list[dict], dict]:
    """One row per (mistake, attempt), with parsed fields but before grading."""
    from lema_hub import formats

    tokens = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}
    rows: list[dict] = []
    if cfg.backend == REFERENCE_CORRECTOR:
        ref_name = reference_rules_ref()
        for m in mistakes:
            parsed = reference_correction(m, list(m["steps"]))
            raw = None
            if parsed is not None:
                raw = formats.correction_target(
                    parsed.incorrect_step, parsed.explanation, parsed.corrected_steps
                )
                # Same path as an LLM's output: the rendered text is parsed back and graded.
                parsed = parse_correction(raw, len(m["steps"]), _row_task(m))
            else:
                from lema_hub.claims import first_false_step

                # No gold steps to rewrite from; the arithmetic check may still locate the error.
                located = first_false_step(list(m["steps"]))
                parsed = ParsedCorrection(
                    incorrect_step=located[0] if located else None,
                    reject_reason="no_reference",
                    detail="no calculator annotations in the gold solution, or no steps"
                    + (f"; arithmetic check: step {located[0]}: {located[1].describe()}" if located else ""),
                )
            rows.append(_row(m, REFERENCE_CORRECTOR, ref_name, 0, raw, parsed, None))
        return rows, tokens

    from lema_hub.generation import GenerationRequest, SamplingParams, make_engine
    from lema_hub.run_guard import RequestOutcome

    prompts: dict[str, CorrectorPrompt] = {}

    def prompt_for(task: str) -> CorrectorPrompt:
        key = cfg.corrector_task or task
        if key not in prompts:
            prompts[key] = corrector_prompt(key, cfg.corrector_prompt_file)
        return prompts[key]

    # Stop where a base model would start the next demonstration.
    sampling = SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_tokens,
        n=cfg.num_attempts,
        seed=cfg.seed,
        stop=["\nQuestion:", "\r\nQuestion:"],
    )
    requests, owners = [], {}
    for i, m in enumerate(mistakes):
        p = prompt_for(_row_task(m))
        content = build_corrector_input(p, m["question"], list(m["steps"]), cfg.prompt_style)
        # Request ids are content hashes so a resumed or extended run reuses the engine's cache.
        rid = _sha12(repr((m.get("problem_id"), m.get("generator"), m.get("sample_index"), content)).encode())
        requests.append(GenerationRequest(request_id=f"correct-{rid}", prompt=content, sampling=sampling))
        owners[f"correct-{rid}"] = (i, p)
    engine_cfg = cfg.engine_config(cfg.backend, cfg.model, cfg.prompt_style, progress=cfg.progress)
    # `.cache/` is never pushed; the engine's request cache makes an interrupted run resume.
    cache = output_dir / ".cache" / f"correct-{_sha12(repr((cfg.backend, cfg.model)).encode())}.jsonl"
    engine = make_engine(engine_cfg, cache_path=cache)
    try:
        results = engine.generate(requests, desc="correcting")
        tokens["engine"] = dict(engine.last_summary)
    finally:
        engine.close()
    tokens["outcome"] = RequestOutcome("correct")
    tokens["outcome"].add(results, engine.last_summary)
    for res in results:
        i, p = owners[res.request_id]
        m = mistakes[i]
        tokens["requests"] += 1
        tokens["prompt_tokens"] += res.prompt_tokens or 0
        tokens["completion_tokens"] += res.completion_tokens or 0
        if not res.ok:
            parsed = ParsedCorrection(reject_reason="generation_failed", detail=res.error or "no text")
        else:
            parsed = parse_correction(res.text, len(m["steps"]), _row_task(m))
        rows.append(_row(m, cfg.model or "", p.ref, res.sample_index, res.text, parsed, res))
    return rows, tokens


def _row(
    m: dict,
    corrector: str,
    prompt_ref: str,
    attempt: int,
    raw: str | None,
    parsed: ParsedCorrection,
    res: Any,
) -> dict:
    row = dict(m)
    row.update(
        {CORRECTOR_TOKENS.model: corrector},
        corrector_kind="rule-based" if corrector == REFERENCE_CORRECTOR else "llm",
        corrector_prompt=prompt_ref,
        attempt=int(attempt),
        raw_output=raw or "",
        incorrect_step=parsed.incorrect_step,
        explanation=parsed.explanation,
        corrected_steps=list(parsed.corrected_steps),
        corrected_answer=parsed.corrected_answer,
        accepted=False,
        reject_reason=parsed.reject_reason,
        reject_detail=parsed.detail,
        reference_step=None,
        correction_finish_reason=getattr(res, "finish_reason", None),
    )
    row[CORRECTOR_TOKENS.prompt] = getattr(res, "prompt_tokens", None)
    row[CORRECTOR_TOKENS.completion] = getattr(res, "completion_tokens", None)
    return row


def _grade(rows: list[dict], workers: int | None) -> None:
    """accepted iff the corrected answer grades `correct` against gold."""
    from lema_hub.grading import grade_many

    todo = [r for r in rows if r["reject_reason"] is None]
    if not todo:
        return
    # The corrected solution itself is graded: the same extraction as the CoT evaluation.
    texts = ["\n".join(r["corrected_steps"]) for r in todo]
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(todo):
        by_task[_row_task(r)].append(i)
    for task, idxs in by_task.items():
        verdicts = grade_many(
            [texts[i] for i in idxs], [str(todo[i]["gold_answer"]) for i in idxs], task=task, workers=workers
        )
        for i, v in zip(idxs, verdicts):
            r = todo[i]
            if v.verdict == "correct":
                r["accepted"] = True
            else:
                r["reject_reason"] = "wrong_answer" if v.verdict == "wrong" else "ungradeable"
                r["reject_detail"] = f"{r['corrected_answer']!r} vs gold {r['gold_answer']!r}: {v.reason}"


def check_corrections_arithmetic(rows: list[dict]) -> int:
    """Reject (`false_claim`) accepted corrections whose corrected steps hold a false arithmetic claim.

    The paper checks only a correction's final answer; a right answer reached through a false
    `a op b = c` would teach the wrong step. Returns how many were rejected.
    """
    from lema_hub.claims import first_false_step

    n = 0
    for r in rows:
        if not r["accepted"]:
            continue
        located = first_false_step(list(r["corrected_steps"]))
        if located:
            j, claim = located
            step = (r["incorrect_step"] or 1) + j - 1  # corrected steps start at the incorrect step
            r["accepted"] = False
            r["reject_reason"] = "false_claim"
            r["reject_detail"] = f"corrected step {step}: {claim.describe()}"
            n += 1
    return n


def _rate(rows: list[dict]) -> dict[str, Any]:
    n = len(rows)
    acc = sum(r["accepted"] for r in rows)
    return {"n": n, "accepted": acc, "acceptance_rate": round(acc / n, 4) if n else None}


def _by(rows: list[dict], key) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        k = key(r)
        if k is not None:
            groups[str(k)].append(r)
    return {k: _rate(v) for k, v in sorted(groups.items())}


def _step_bucket(r: dict) -> str:
    k = r.get("incorrect_step")
    if k is None:
        return "unparsed"
    n = len(r.get("steps") or [])
    return "final" if k == n else ("first" if k == 1 else "middle")


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Acceptance overall, by generator, level, subject, step position; reasons; locator agreement."""
    summary: dict[str, Any] = {**_rate(rows), "rejected": sum(not r["accepted"] for r in rows)}
    summary["mistakes"] = len(
        {(r.get("problem_id"), r.get("generator"), r.get("sample_index")) for r in rows}
    )
    summary["reject_reasons"] = dict(
        Counter(r["reject_reason"] for r in rows if not r["accepted"]).most_common()
    )
    summary["by_generator"] = _by(rows, lambda r: r.get("generator"))
    summary["by_level"] = _by(rows, lambda r: r.get("level"))
    summary["by_subject"] = _by(rows, lambda r: r.get("subject"))
    summary["by_step_position"] = _by(rows, _step_bucket)
    summary["by_incorrect_step"] = _by(rows, lambda r: r.get("incorrect_step"))
    both = [r for r in rows if r.get("reference_step") is not None and r.get("incorrect_step") is not None]
    agree = sum(r["reference_step"] == r["incorrect_step"] for r in both)
    summary["reference_agreement"] = {
        "n": len(both),
        "agree": agree,
        "rate": round(agree / len(both), 4) if both else None,
        "applies": sum(r.get("reference_step") is not None for r in rows),
    }
    return summary


def correct(cfg: CorrectConfig) -> dict[str, Any]:
    """Run the corrector over a mistakes dataset; write accepted (`<task>`) and rejected (`<task>-rejected`)."""
    import datasets

    from lema_hub.artifacts import save_dataset_config
    from lema_hub.errors import InvalidInputError
    from lema_hub.run_guard import guard_publish

    if not cfg.mistakes:
        raise InvalidInputError(
            "correct: set `mistakes` to a mistakes folder or Hub dataset id (from `lema-hub collect`)."
        )
    t0 = time.time()
    config = cfg.mistakes_config or main_config(cfg.mistakes)
    mistakes = load_rows(cfg.mistakes, config, missing_ok=True)
    if not mistakes:
        raise InvalidInputError(f"correct: {cfg.mistakes} [{config}] has no mistakes to correct.")
    if cfg.mistakes_limit is not None:
        mistakes = mistakes[: cfg.mistakes_limit]
    name = cfg.dataset_config_name or config
    output_dir = Path(cfg.output_dir or f"outputs/{name}/corrections")
    output_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "correcting %d mistakes from %s [%s] with %s",
        len(mistakes),
        cfg.mistakes,
        config,
        cfg.model or cfg.backend,
    )

    quality = None
    if cfg.corrector_benchmark:  # read before any request is sent: a bad path fails fast
        from lema_hub.corrector_bench import headline

        quality = headline(cfg.corrector_benchmark)
    rows, tokens = _correction_rows(cfg, mistakes, output_dir)
    outcome = tokens.pop("outcome", None)
    # Before anything is written: a run whose requests failed never replaces finished rows.
    guard_publish(outcome, output_dir, "correct", name, [name, f"{name}-rejected"])
    if cfg.reference_qa:
        for r in rows:
            r["reference_step"] = reference_step(r, list(r["steps"]))
    _grade(rows, cfg.grading_workers)
    if cfg.check_arithmetic:
        check_corrections_arithmetic(rows)

    summary = summarize(rows)
    summary.update(
        output_dir=str(output_dir),
        config=name,
        corrector=cfg.model or REFERENCE_CORRECTOR,
        backend=cfg.backend,
        corrector_prompt=sorted({r["corrector_prompt"] for r in rows}),
        num_attempts=cfg.num_attempts,
        tokens=tokens,
        wall_s=round(time.time() - t0, 2),
        check_arithmetic=cfg.check_arithmetic,
    )
    if outcome is not None:
        summary["requests"] = {name: outcome.record()}
    if quality is not None:
        quality["same_corrector"] = quality.get("corrector") == summary["corrector"]
        summary["corrector_quality"] = quality
    ds = datasets.Dataset.from_list(rows)
    ds = ds.cast(correction_features(ds.features))  # the correction columns' types, every run
    # An empty side is not written (and a stale one from an earlier run is removed).
    save_dataset_config(output_dir, name, {"train": ds.filter(lambda r: r["accepted"])})
    save_dataset_config(output_dir, f"{name}-rejected", {"train": ds.filter(lambda r: not r["accepted"])})
    finish(output_dir, "corrections", cfg, summary, recipe="correct")
    logger.info(
        "corrections: %d/%d accepted (%s)", summary["accepted"], summary["n"], summary["reject_reasons"]
    )
    return summary
