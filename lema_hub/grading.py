"""Answer extraction and grading: ``correct`` | ``wrong`` | ``no_answer`` | ``ungradeable``, safe in any thread.

Decisions (tested in ``tests/test_grading.py``; agreement with human labels in BENCHMARKS.md):

* ``extraction="strict"`` (the default; the paper's protocol): the predicted answer is the text
  after the last ``The answer is`` (to the end of that line, a ``\\boxed{}`` in it, or display math
  opening right after it, which may span lines), falling back to the last ``\\boxed{}``.
  ``extraction="flexible"`` (what collection uses) also reads, in this order, the last
  ``The final answer is`` / ``Final answer:`` / ``Answer:`` / ``A:`` / ``#### X``, then the answer
  the last sentence of the last paragraph states (its last math or bold answer, a number after its
  last "is"/"=", else its last number; the sentence before it when the last one states none; none
  when the last sentence negates, "... is not a solution"). Extraction is linear in the input.
* No answer at all -> ``no_answer`` with ``predicted_answer=None`` (an unfinished or malformed path
  is not a wrong answer). ``wrong`` is an answer that differs from the gold. ``truncated`` (in
  ``VERDICTS``) is set by collection, which knows the finish reason.
* The gold may be a bare answer, a GSM8K solution (``#### N``) or a MATH solution (last ``\\boxed{}``).
  A gold we cannot read is ``ungradeable``, never ``wrong``.
* GSM8K (``task="gsm8k"``, numeric golds): the answer is one number. ``$``, ``\\$``, units and
  words around it, a trailing period and thousands commas (``1,000``) are ignored; ``25%`` equals
  ``25`` (the percent sign is a unit, GSM8K golds are in the unit asked), but ``0.25`` does not
  equal ``25``. The first number of the answer counts, after the last ``=`` if there is one
  (``5 + 3 = 8`` -> 8; ``7 boxes, with 2 left`` -> 7), unless it is part of an expression
  (``2^{3}``, ``10^{100000}``, ``3 + 4``, ``\\sqrt{16}``): that is ``wrong`` with a reason, never
  its first number. A minus before ``$`` or a space keeps its sign (``-$15`` is -15). Numbers compare
  exactly as rationals: ``18.00`` == ``18``, ``3/4`` == ``0.75``, ``17.99`` != ``18`` (no rounding).
  This path is plain Python on a regex-validated number: no sympy, bounded by the input caps.
* MATH (``task="math"``): both answers go through math-verify's LaTeX parser and ``verify``
  (its equivalence rules: ``\\frac12`` == ``0.5``, intervals, sets, ``\\text{}`` units dropped,
  ``25\\%`` == ``0.25``; numbers compared at math-verify's default 6-decimal rounding). MATH's
  ``5,\\!525`` thousands separators and ``\\frac \\pi4`` are normalized first; an answer that is
  all ``\\text{...}`` (``\\text{A,D}``) is its content and a trailing ``\\text{ square inches}`` unit
  is dropped (each tried before the answer as written). An answer math-verify cannot parse is
  ``ungradeable``.
  math-verify's ``ExprExtractionConfig`` is never used on model text: it calls ``sympy.parse_expr``,
  which ``eval``s its input.
* Time bound: math-verify runs with its own (signal-based, main-thread-only) timeouts off, in
  helper processes (``python -c`` workers speaking JSON lines). Each answer gets a soft bound
  (``setitimer`` inside the worker) and a hard bound (the parent kills the worker); either way the
  verdict is ``ungradeable`` with a reason. Extraction and the GSM8K comparison run in the
  caller's process in linear time (under 100 ms for any input under the size caps, see
  BENCHMARKS.md). So ``grade`` is safe and bounded from any thread.
* Bad input (None, non-strings, empty strings, over-long strings, pathological LaTeX) ->
  ``ungradeable`` with a reason. No exception escapes ``grade``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from lema_hub.formats import ANSWER_PREFIX, last_boxed

logger = logging.getLogger(__name__)

Task = str  # "gsm8k" (numeric answers) | "math" (LaTeX answers)
TASKS = ("gsm8k", "math")

DEFAULT_TIMEOUT_S = 5.0  # soft bound per answer inside the worker
HARD_MARGIN_S = 3.0  # the parent kills a worker this long after the soft bound
WORKER_START_TIMEOUT_S = 120.0  # importing sympy on a busy 2-core machine can take a while
MAX_PREDICTION_CHARS = 100_000  # ~25k tokens; longer outputs are not graded
MAX_GOLD_CHARS = 20_000
MAX_ANSWER_CHARS = 1_000  # an extracted answer longer than this is not an answer
MAX_NUMBER_CHARS = 60
WORKER_MEMORY_BYTES = 4 * 1024**3


# Verdict names. ``grade`` returns the first three and ``no_answer``; ``truncated`` (the path was cut
# at ``max_tokens`` and did not grade correct) is set by collection, which knows the finish reason.
CORRECT, WRONG, NO_ANSWER, TRUNCATED, UNGRADEABLE = VERDICTS = (
    "correct",  # the answer equals the gold
    "wrong",  # an answer that differs from the gold
    "no_answer",  # the prediction states no final answer
    "truncated",  # cut at max_tokens (finish_reason "length") and not correct
    "ungradeable",  # the gold (or the prediction's LaTeX) cannot be read, or bad input
)


@dataclass
class Verdict:
    verdict: str  # one of VERDICTS
    predicted_answer: str | None
    reason: str

    @property
    def is_correct(self) -> bool:
        return self.verdict == "correct"

    def to_dict(self) -> dict:
        return asdict(self)


def _ungradeable(reason: str, predicted: str | None = None) -> Verdict:
    return Verdict("ungradeable", predicted, reason)


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return task


# ------------------------------------------------------------------------------------- extraction
# "strict" is the paper's protocol; "flexible" also reads the endings real models write.
EXTRACTIONS = ("strict", "flexible")
DEFAULT_EXTRACTION = "strict"

_ANSWER_IS = re.compile(r"(?<!final )\bthe answer is\s*:?", re.IGNORECASE)
# Flexible markers, the last one in the text counts: "The final answer is", "Final answer: 45",
# "Answer: 45" / "**Answer:** 45" / "A: 45" at the start of a line or sentence, "#### 45".
_MARKER = re.compile(
    r"\bfinal answer\s*(?:is\b\s*:?|:)"
    r"|(?:^|\n|[.!?][ \t]+)[ \t#>*_]*(?:answer|a)[ \t*_]*:"
    r"|####",
    re.IGNORECASE,
)
# Display math that may follow a marker on the next lines ("The final answer is\n\[\n...\n\]").
_DISPLAY = (("\\[", "\\]"), ("$$", "$$"), ("\\(", "\\)"))
_TAIL_CHARS = 2_000  # the last-sentence rule reads only the end of a completion
_LAST_SENTENCES = 2  # ... and looks back over at most this many sentences of the last paragraph


def _check_extraction(extraction: str) -> str:
    if extraction not in EXTRACTIONS:
        raise ValueError(f"unknown extraction {extraction!r}; expected one of {EXTRACTIONS}")
    return extraction


def _span_at(text: str, pos: int) -> str | None:
    """The answer that starts at ``pos`` (after a marker): a ``\\boxed{}`` in the rest, else display
    math opening right there (it may span lines), else the rest of the line."""
    rest = text[pos:]
    boxed = last_boxed(rest)
    if boxed is not None:
        return _strip_answer(boxed) or None
    head = rest.lstrip(" \t\n*_")
    for opener, closer in _DISPLAY:
        if head.startswith(opener):
            end = head.find(closer, len(opener), len(opener) + MAX_ANSWER_CHARS + len(closer))
            if end != -1:
                return _strip_answer(head[len(opener) : end]) or None
    return _strip_answer(head.split("\n", 1)[0]) or None


def _strict_answer(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        span = _span_at(text, matches[-1].end())
        if span:
            return span
    boxed = last_boxed(text)
    return (_strip_answer(boxed) or None) if boxed is not None else None


def _math_spans(s: str, dollars: bool) -> list[tuple[int, int, str]]:
    """(start, end, content) of the inline/display math in ``s``; single ``$`` only when ``dollars``
    (in GSM8K text ``$`` is a currency sign). ``s`` is short (the tail of a completion)."""
    out: list[tuple[int, int, str]] = []
    i, n = 0, len(s)
    pairs = [("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$")] + ([("$", "$")] if dollars else [])
    while i < n:
        for opener, closer in pairs:
            if s.startswith(opener, i):
                end = s.find(closer, i + len(opener))
                if end != -1:
                    out.append((i, end + len(closer), s[i + len(opener) : end]))
                    i = end + len(closer)
                else:
                    i += len(opener)
                break
        else:
            i += 1
    return out


_BOLD = re.compile(r"\*\*([^*\n]{1,200})\*\*")
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z\\$*(\"'])")
_COPULA = re.compile(r"\b(?:is|are|was|were|equals|be)\b|=", re.IGNORECASE)
_ANY_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_LONE_SYMBOL = re.compile(r"\s*\\?[A-Za-z]+\s*(?:_\{?\w+\}?)?\s*(?:\(\s*[A-Za-z]\s*\))?\s*")
_NEGATION = re.compile(r"\b(?:not|cannot)\b|n't\b", re.IGNORECASE)


def _sentence_answer(sentence: str, spans: list[tuple[int, int, str]], offset: int, task: str) -> str | None:
    """The answer one sentence states: its last emphasised answer (math or bold), else (GSM8K) the
    number after its last ``is``/``=``, else its last number."""
    start, end = offset, offset + len(sentence)
    inside = [(a, b, c) for a, b, c in spans if start <= a and b <= end]
    candidates = [(a, c) for a, _, c in inside]
    candidates += [(offset + m.start(), m.group(1)) for m in _BOLD.finditer(sentence)]
    cop = list(_COPULA.finditer(sentence))
    if task != "gsm8k" and cop:
        # "the degree of \(p(x)\) is 15": a plain number after the last "is" comes after the math.
        for m in _ANY_NUMBER.finditer(sentence, cop[-1].end()):
            pos = offset + m.start()
            if not any(a <= pos < b for a, b, _ in inside):
                candidates.append((pos, m.group(0)))
    candidates.sort()
    for _, content in reversed(candidates):
        content = _strip_answer(content.replace("\\$", "$"))
        if not content or _LONE_SYMBOL.fullmatch(content):
            continue  # "\(n\)": the quantity asked about, not its value
        if task == "gsm8k" and not any(ch.isdigit() for ch in content):
            continue
        return content
    if cop and task == "gsm8k":
        after = _ANY_NUMBER.search(sentence, cop[-1].end())
        if after:
            return after.group(0)
    nums = list(_ANY_NUMBER.finditer(sentence))
    return nums[-1].group(0) if nums else None


def _last_sentence_answer(text: str, task: str) -> str | None:
    """The answer stated by the last sentence of the last paragraph (or the one before it)."""
    tail = text[-_TAIL_CHARS:].strip()
    para = re.split(r"\n[ \t]*\n", tail)[-1].strip()
    if not para:
        return None
    spans = _math_spans(para, dollars=task != "gsm8k")

    def in_math(pos: int) -> bool:
        return any(a <= pos < b for a, b, _ in spans)

    cuts = [0] + [m.end() for m in _SENTENCE_END.finditer(para) if not in_math(m.start())] + [len(para)]
    sentences = [(cuts[k], para[cuts[k] : cuts[k + 1]]) for k in range(len(cuts) - 1)]
    for offset, sentence in reversed(sentences[-_LAST_SENTENCES:]):
        if _NEGATION.search(sentence):
            return None  # "So x = 14 is not a solution." denies an answer: the path did not conclude
        answer = _sentence_answer(sentence, spans, offset, task)
        if answer:
            return answer
    return None


def _flexible_answer(text: str, task: str) -> str | None:
    answer = _strict_answer(text)
    if answer:
        return answer
    markers = list(_MARKER.finditer(text))
    if markers:
        answer = _span_at(text, markers[-1].end())
        if answer:
            return answer
    return _last_sentence_answer(text, task)


def extract_answer(text: str | None, task: str = "gsm8k", extraction: str = DEFAULT_EXTRACTION) -> str | None:
    """The answer a completion states; None when there is none.

    ``strict`` (the paper's protocol): the text after the last ``The answer is`` (to the end of that
    line, a ``\\boxed{}`` in it, or display math opening right after it), else the last ``\\boxed{}``.
    ``flexible``: the same, else the last ``The final answer is`` / ``Final answer:`` / ``Answer:`` /
    ``A:`` / ``#### X``, else the answer the last sentence states (its last math or bold answer; for
    GSM8K the number after its last ``is``/``=``; else its last number). Surrounding ``$``,
    ``\\(\\)``, markdown bold and a trailing period are stripped. Linear in the input length.
    """
    _check_extraction(extraction)
    if not isinstance(text, str) or not text.strip():
        return None
    text = text[-MAX_PREDICTION_CHARS:]
    if extraction == "strict":
        return _strict_answer(text)
    return _flexible_answer(text, task)


def format_ok(text: str | None, task: str = "gsm8k") -> bool:
    """Whether the strict (paper) rule finds an answer in ``text``: the paper drops outputs that fail it."""
    return extract_answer(text, task, "strict") is not None


_SENTENCE_AFTER = re.compile(r"(?<=[^\d\s])\.\s+(?=[A-Z])|(?<=\d)\.\s+(?=[A-Z])")


def _strip_answer(span: str) -> str:
    span = span.strip().strip("*_").strip()
    # A sentence after the answer on the same line ("42. So she has 42 apples.") is not part of it.
    span = _SENTENCE_AFTER.split(span, maxsplit=1)[0]
    span = span.strip().strip("*_").strip().rstrip(".").strip()
    if span.startswith("$") and span.endswith("$") and len(span) >= 2 and span.count("$") == 2:
        span = span[1:-1].strip()
    if span.startswith("\\(") and span.endswith("\\)"):
        span = span[2:-2].strip()
    return span.rstrip(".").strip()


def gold_answer_of(gold: str, task: str = "gsm8k") -> str | None:
    """The answer in a gold string: a bare answer, a GSM8K solution (``#### N``) or a MATH solution."""
    if not isinstance(gold, str):
        return None
    if "####" in gold:
        ans = gold.rsplit("####", 1)[1].strip()
        return ans.replace(",", "") if ans else None
    if "\\boxed" in gold or "\\fbox" in gold:
        boxed = last_boxed(gold)
        return _strip_answer(boxed) if boxed is not None else None
    if _ANSWER_IS.search(gold):
        return extract_answer(gold, task)
    ans = _strip_answer(gold)
    return ans or None


# ------------------------------------------------------------------------------- numbers (GSM8K)
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d+(?:\.\d+)?|\.\d+)(?:\s*/\s*(?:\d+(?:\.\d+)?|\.\d+))?(?!\.?\d)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")


# A minus that is a sign, not an operator: at the start or after anything but an operand.
_UNARY_MINUS = re.compile(r"(^|[^\w.)}\]\s])(\s*)-\s+(?=[\d.])")
_OPERAND = r"(?=\s*[\d.({])"
# Right after the number: an operator that makes it part of an expression ("2^{3}", "10**5", "3 + 4").
_EXPRESSION_AFTER = re.compile(r"\s*(?:\^|\\times|\\cdot|\\div|[×÷]|(?:\*\*?|\+|-|/)" + _OPERAND + ")")
# Right before it: "\sqrt{16}", "x^2", "2**8".
_EXPRESSION_BEFORE = re.compile(r"(?:\^|\*\*|\\sqrt\s*\{?)\s*$")


def _number_in(s: str) -> tuple[re.Match | None, bool]:
    """(the first number after the last ``=``, whether it is part of an expression)."""
    if "=" in s:
        s = s.rsplit("=", 1)[1]
    s = _UNARY_MINUS.sub(r"\1\2-", s.strip())  # "-$15" / "- 15" keep their sign once "$" is gone
    m = _NUMBER.search(s)
    if m is None:
        return None, False
    return m, bool(_EXPRESSION_AFTER.match(s, m.end()) or _EXPRESSION_BEFORE.search(s, 0, m.start()))


def _gsm8k_parse(answer: str) -> tuple[Fraction | None, bool]:
    """(the number an answer states or None, whether the answer is an expression such as ``2^{3}``,
    ``10**5`` or ``3 + 4`` rather than a number: then there is no number)."""
    s = answer.replace("\u2212", "-").replace("\u2013", "-")
    s = _TEXT.sub(r" \1 ", s)
    s = _FRAC.sub(r"\1/\2", s)
    s = s.replace("\\$", " ").replace("$", " ").replace("\\%", " ").replace("%", " ")
    s = s.replace("\\!", "").replace("\\,", "").replace("{,}", ",")
    s = _THOUSANDS.sub("", s)
    m, expression = _number_in(s)
    if m is None or expression:
        return None, expression
    num = m.group(0).replace(" ", "")
    if len(num) > MAX_NUMBER_CHARS:
        return None, False
    try:
        if "/" in num:
            a, b = num.split("/")
            den = Fraction(b)
            return (None if den == 0 else Fraction(a) / den), False
        return Fraction(num), False
    except (ValueError, ZeroDivisionError):
        return None, False


def _gsm8k_number(answer: str) -> Fraction | None:
    """The number an answer states (see the module docstring for the rules); None when there is none."""
    return _gsm8k_parse(answer)[0]


def _fraction_text(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:  # terminating decimal
        return _decimal(x)
    return f"{x.numerator}/{x.denominator}"


def _decimal(x: Fraction) -> str:
    sign = "-" if x < 0 else ""
    x = abs(x)
    whole, rest = divmod(x.numerator, x.denominator)
    digits = []
    while rest:
        rest *= 10
        q, rest = divmod(rest, x.denominator)
        digits.append(str(q))
    return f"{sign}{whole}." + "".join(digits) if digits else f"{sign}{whole}"


def _compare_gsm8k(pred: str, gold: str) -> tuple[str, str]:
    g = _gsm8k_number(gold)
    if g is None:
        return "ungradeable", f"gold answer {gold[:80]!r} is not a number"
    p, expression = _gsm8k_parse(pred)
    if p is None:
        if expression:
            return "wrong", f"the predicted answer {pred[:80]!r} is an expression, not a number"
        return "wrong", "the predicted answer has no number"
    if p == g:
        return "correct", "numbers are equal"
    return "wrong", f"{_fraction_text(p)} != {_fraction_text(g)}"


# ------------------------------------------------------------------------------ math-verify (MATH)
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:,\\!|\{,\})(?=\d{3})")
_SPACED_FRAC = re.compile(r"\\[dt]?frac\s+(\\[A-Za-z]+|[A-Za-z0-9])\s*(\\[A-Za-z]+|[A-Za-z0-9])")
# A whole answer in \text{} ("\text{A,D}", "\text{(C)}") is its content; a trailing \text{} of
# words after math ("8\sqrt{3} \text { square inches}") is a unit, as MATH golds write them.
_WHOLE_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_TRAILING_UNIT = re.compile(r"\s*\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?\d\}?)?\s*$")


def _normalize_latex(answer: str) -> str:
    whole = _WHOLE_TEXT.fullmatch(answer.strip())
    if whole and whole.group(1).strip():
        return whole.group(1).strip()
    stripped = _TRAILING_UNIT.sub("", answer)
    return stripped if stripped.strip() else answer


def _mv_parse(answer: str):
    """math-verify LaTeX parse of one extracted answer (timeouts off: the caller bounds the time)."""
    from math_verify import LatexExtractionConfig, parse

    # "\\$" is a dollar sign (a unit), not a math delimiter; newlines inside \\text{} confuse the parser.
    answer = answer.replace("\\$", " ").replace("\n", " ").strip()
    answer = _LATEX_THOUSANDS.sub("", answer)  # MATH writes 5,\!525 for 5525
    answer = _SPACED_FRAC.sub(r"\\frac{\1}{\2}", answer)  # "\frac \pi4" -> "\frac{\pi}{4}"
    for candidate in dict.fromkeys((_normalize_latex(answer), answer)):  # normalized first, then as written
        text = candidate if "$" in candidate or "\\boxed" in candidate else f"${candidate}$"
        parsed = parse(
            text,
            extraction_config=[LatexExtractionConfig(boxed_match_priority=0)],
            parsing_timeout=None,
        )
        # When the LaTeX parser fails, math-verify falls back to the raw string alone: that is no parse.
        if any(not isinstance(x, str) for x in parsed):
            return parsed
    return []


def _compare_math(pred: str, gold: str) -> tuple[str, str]:
    from math_verify import verify

    g = _mv_parse(gold)
    if not g:
        return "ungradeable", f"math-verify could not parse the gold answer {gold[:80]!r}"
    p = _mv_parse(pred)
    if not p:
        return "ungradeable", f"math-verify could not parse the predicted answer {pred[:80]!r}"
    if verify(g, p, timeout_seconds=None):
        return "correct", "math-verify: equivalent"
    return "wrong", "math-verify: not equivalent"


def _math_key(answer: str) -> str:
    p = _mv_parse(answer)
    if p:
        return "sympy:" + str(p[0])
    return "text:" + re.sub(r"\s+", "", answer)


def _compare(pred: str, gold: str, task: str) -> tuple[str, str]:
    if task == "gsm8k":
        return _compare_gsm8k(pred, gold)
    return _compare_math(pred, gold)


# --------------------------------------------------------------------------- bounded worker pool
class _Timeout(BaseException):
    """Raised by the worker's alarm; a BaseException so library ``except Exception`` can't swallow it."""


def _run_op(op: str, args: list, timeout: float) -> list:
    """Run one op in this (worker main) thread under a setitimer alarm. Returns [status, value]."""
    import signal

    def on_alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        if op == "compare":
            return ["ok", list(_compare(args[0], args[1], args[2]))]
        if op == "key":
            return ["ok", _math_key(args[0])]
        if op == "ping":
            return ["ok", "pong"]
        return ["error", f"unknown op {op!r}"]
    except _Timeout:
        return ["timeout", f"timed out after {timeout:g} s"]
    except MemoryError:
        return ["error", "ran out of memory"]
    except RecursionError:
        return ["error", "recursion too deep"]
    except Exception as e:  # a library bug on odd input must not kill the worker
        return ["error", f"{type(e).__name__}: {str(e)[:200]}"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _worker_main() -> None:
    """Entry point of a grading worker process: JSON lines in on stdin, JSON lines out."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (warm the import before saying ready)

    _mv_parse("1")  # warm the LaTeX parser
    proto.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        for item in req["items"]:
            out = _run_op(req["op"], item, float(req["timeout"]))
            proto.write(json.dumps(out) + "\n")


class _WorkerDied(Exception):
    pass


class _Worker:
    """One grading subprocess. Not thread-safe: a pool hands it to one thread at a time."""

    def __init__(self) -> None:
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from lema_hub.grading import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._buf = b""
        msg = self._read_line(WORKER_START_TIMEOUT_S)
        if msg is None or not json.loads(msg).get("ready"):
            self.kill()
            raise _WorkerDied("grading worker did not start")

    def _read_line(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerDied("grading worker exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def run(self, op: str, items: list[list], timeout: float) -> tuple[list[list], str | None]:
        """Run ``items`` in order. Returns (results, failure): failure is None when all came back,
        else why the next item did not ("timeout": over the hard bound, or "died: ...").
        Raises _WorkerDied when the request could not even be sent (no item was in flight)."""
        payload = json.dumps({"op": op, "items": items, "timeout": timeout}) + "\n"
        try:
            self.proc.stdin.write(payload.encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as e:
            raise _WorkerDied(f"grading worker pipe closed: {e}") from e
        results: list[list] = []
        for _ in items:
            try:
                line = self._read_line(timeout + HARD_MARGIN_S)
            except _WorkerDied as e:
                return results, f"died: {e}"
            if line is None:
                return results, "timeout"
            results.append(json.loads(line))
        return results, None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class _Pool:
    """A bounded set of grading workers shared by threads; a worker over the hard bound is killed."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max(1, max_workers)
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise _WorkerDied("grading pool is closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    worker.kill()  # died while idle (e.g. killed by the OS): drop it
                    self._count -= 1
                if self._count < self.max_workers:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return _Worker()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if worker.alive() and not self._closed:
                self._idle.append(worker)
            else:
                worker.kill()
                self._count -= 1
            self._cond.notify()

    def run(self, op: str, items: list[list], timeout: float) -> list[list]:
        """[status, value] per item, in order. An item over the hard bound, or whose worker dies,
        is marked and its worker replaced; the remaining items go on in another worker."""
        out: list[list] = []
        failures = 0
        deaths: dict[int, int] = {}
        while len(out) < len(items):
            try:
                worker = self._acquire()
            except _WorkerDied as e:
                failures += 1
                if failures > 3:
                    out.extend(["error", f"grading worker failed: {e}"] for _ in range(len(items) - len(out)))
                continue
            try:
                got, failure = worker.run(op, items[len(out) :], timeout)
            except _WorkerDied as e:  # nothing was in flight: retry the same items elsewhere
                worker.kill()
                self._release(worker)
                failures += 1
                if failures > 3:
                    out.extend(["error", f"grading worker failed: {e}"] for _ in range(len(items) - len(out)))
                continue
            out.extend(got)
            if failure is not None:
                worker.kill()
                if failure == "timeout":
                    out.append(["timeout", f"timed out after {timeout + HARD_MARGIN_S:g} s (worker killed)"])
                elif deaths.get(len(out), 0) == 0:
                    # The worker may have died of something else (killed from outside): one retry.
                    deaths[len(out)] = 1
                else:
                    out.append(["error", f"grading worker {failure}"])
            self._release(worker)
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


_pools: dict[int, _Pool] = {}
_pools_lock = threading.Lock()


def _pool(workers: int | None = None) -> _Pool:
    """The shared pool with ``workers`` processes (default: max(2, CPU count)); started lazily, reused."""
    n = max(1, workers or max(2, os.cpu_count() or 2))
    with _pools_lock:
        pool = _pools.get(n)
        if pool is None or pool._closed:
            pool = _pools[n] = _Pool(n)
        return pool


@atexit.register
def shutdown() -> None:
    """Stop every grading worker (also run at exit); later calls start new ones."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def warmup(workers: int | None = None) -> None:
    """Start the shared pool's workers now, so the first MATH grades do not pay the start-up time."""
    pool = _pool(workers)
    with ThreadPoolExecutor(max_workers=pool.max_workers) as ex:
        list(ex.map(lambda _: pool.run("ping", [[]], DEFAULT_TIMEOUT_S), range(pool.max_workers)))


def _verdict_from(status: list, predicted: str) -> Verdict:
    kind, value = status
    if kind == "ok":
        verdict, reason = value
        return Verdict(verdict, predicted, reason)
    if kind == "timeout":
        return _ungradeable(f"grading {value}", predicted)
    return _ungradeable(f"grading failed: {value}", predicted)


# ------------------------------------------------------------------------------------- grading
_NO_ANSWER_REASON = {
    "strict": "no final answer ('The answer is ...' or \\boxed{}) in the prediction (strict extraction)",
    "flexible": "no final answer in the prediction (flexible extraction)",
}


def _prepare(
    prediction, gold, task: str, extraction: str = DEFAULT_EXTRACTION
) -> tuple[Verdict | None, str | None, str | None]:
    """Input checks + extraction (cheap, in-process, linear). Returns (early verdict, predicted, gold answer)."""
    if extraction not in EXTRACTIONS:
        return _ungradeable(f"unknown extraction {extraction!r}; expected one of {EXTRACTIONS}"), None, None
    if task not in TASKS:
        return _ungradeable(f"unknown task {task!r}; expected one of {TASKS}"), None, None
    if not isinstance(gold, str):
        return _ungradeable(f"gold is {type(gold).__name__}, not a string"), None, None
    if len(gold) > MAX_GOLD_CHARS:
        return _ungradeable(f"gold is too long ({len(gold)} > {MAX_GOLD_CHARS} characters)"), None, None
    if not isinstance(prediction, str):
        return _ungradeable(f"prediction is {type(prediction).__name__}, not a string"), None, None
    if not prediction.strip():
        return _ungradeable("prediction is empty"), None, None
    if len(prediction) > MAX_PREDICTION_CHARS:
        return (
            _ungradeable(f"prediction is too long ({len(prediction)} > {MAX_PREDICTION_CHARS} characters)"),
            None,
            None,
        )
    gold_answer = gold_answer_of(gold, task)
    if not gold_answer:
        return _ungradeable("no answer found in the gold"), None, None
    if len(gold_answer) > MAX_ANSWER_CHARS:
        return _ungradeable(f"gold answer is too long ({len(gold_answer)} characters)"), None, None
    predicted = extract_answer(prediction, task, extraction)
    if predicted is None:
        if task == "gsm8k" and _gsm8k_number(gold_answer) is None:
            return _ungradeable(f"gold answer {gold_answer[:80]!r} is not a number"), None, None
        return Verdict(NO_ANSWER, None, _NO_ANSWER_REASON[extraction]), None, None
    if len(predicted) > MAX_ANSWER_CHARS:
        return (
            _ungradeable(f"predicted answer is too long ({len(predicted)} characters)", predicted[:200]),
            None,
            None,
        )
    return None, predicted, gold_answer


def grade(
    prediction: str,
    gold: str,
    task: str = "gsm8k",
    timeout: float = DEFAULT_TIMEOUT_S,
    extraction: str = DEFAULT_EXTRACTION,
) -> Verdict:
    """Grade one completion against a gold answer (or gold solution). Thread-safe, time-bounded, never raises.

    ``extraction``: ``strict`` (the paper's protocol, the default) or ``flexible`` (see
    ``extract_answer``). Extraction and GSM8K comparison run in-process in linear time (bounded by
    the input caps); MATH answers go to a grading worker process with a soft and a hard time bound.
    """
    try:
        early, predicted, gold_answer = _prepare(prediction, gold, task, extraction)
        if early is not None:
            return early
        assert predicted is not None and gold_answer is not None
        if task == "gsm8k":
            verdict, reason = _compare_gsm8k(predicted, gold_answer)
            return Verdict(verdict, predicted, reason)
        status = _pool().run("compare", [[predicted, gold_answer, task]], timeout)[0]
        return _verdict_from(status, predicted)
    except Exception as e:  # the contract: no exception escapes
        logger.exception("grading failed")
        return _ungradeable(f"grading failed: {type(e).__name__}: {str(e)[:200]}")


def grade_many(
    predictions: Sequence[str] | Iterable[str],
    golds: Sequence[str] | Iterable[str],
    task: str = "gsm8k",
    workers: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    chunk_size: int = 64,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[Verdict]:
    """Grade many completions; same verdicts as ``grade`` one by one (same ``extraction``).

    MATH answers are spread over ``workers`` grading processes (default: CPU count) in chunks;
    GSM8K answers are compared in this process (faster than any pool). ``workers=1`` is serial.
    """
    _check_extraction(extraction)
    predictions = list(predictions)
    golds = list(golds)
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} golds")
    workers = workers or os.cpu_count() or 1
    # GSM8K compares plain numbers in-process (microseconds): a pool would only add IPC.
    if workers <= 1 or len(predictions) <= 1 or task == "gsm8k":
        return [grade(p, g, task, timeout, extraction) for p, g in zip(predictions, golds)]

    results: list[Verdict | None] = [None] * len(predictions)
    todo: list[tuple[int, str, str]] = []
    for i, (p, g) in enumerate(zip(predictions, golds)):
        early, predicted, gold_answer = _prepare(p, g, task, extraction)
        if early is not None:
            results[i] = early
        else:
            todo.append((i, predicted, gold_answer))  # type: ignore[arg-type]
    chunks = [todo[k : k + chunk_size] for k in range(0, len(todo), chunk_size)]
    pool = _pool(workers)

    def run_chunk(chunk: list[tuple[int, str, str]]) -> None:
        statuses = pool.run("compare", [[p, g, task] for _, p, g in chunk], timeout)
        for (i, p, _), status in zip(chunk, statuses):
            results[i] = _verdict_from(status, p)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        list(ex.map(run_chunk, chunks))
    return [r if r is not None else _ungradeable("not graded") for r in results]


def answers_match(a: str, b: str, task: str = "gsm8k", timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two extracted answers are equivalent (for majority votes); False when either is unreadable."""
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
        return False
    if task == "gsm8k":
        return _compare_gsm8k(_strip_answer(a), _strip_answer(b))[0] == "correct"
    status = _pool().run("compare", [[_strip_answer(a), _strip_answer(b), task]], timeout)[0]
    return status[0] == "ok" and status[1][0] == "correct"


def answer_key(answer: str, task: str = "gsm8k", timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """A canonical key for grouping answers: ``18``, ``18.0`` and ``$18`` share one (GSM8K numbers);
    MATH answers key on math-verify's parsed form, else the whitespace-free text."""
    if not isinstance(answer, str):
        return ""
    s = _strip_answer(answer)
    if task == "gsm8k":
        x = _gsm8k_number(s)
        return _fraction_text(x) if x is not None else "text:" + re.sub(r"\s+", "", s)
    if len(s) > MAX_ANSWER_CHARS:
        return "text:" + re.sub(r"\s+", "", s)[:MAX_ANSWER_CHARS]
    status = _pool().run("key", [[s]], timeout)[0]
    return status[1] if status[0] == "ok" else "text:" + re.sub(r"\s+", "", s)


__all__ = [
    "ANSWER_PREFIX",
    "CORRECT",
    "DEFAULT_EXTRACTION",
    "DEFAULT_TIMEOUT_S",
    "EXTRACTIONS",
    "NO_ANSWER",
    "TASKS",
    "TRUNCATED",
    "UNGRADEABLE",
    "VERDICTS",
    "WRONG",
    "Verdict",
    "answer_key",
    "answers_match",
    "extract_answer",
    "format_ok",
    "gold_answer_of",
    "grade",
    "grade_many",
    "shutdown",
    "warmup",
]
