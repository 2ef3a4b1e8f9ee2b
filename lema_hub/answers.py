"""Answer rules: extraction (strict / flexible), GSM8K number reading and the MATH equivalence
rules via math-verify's LaTeX parser. Pure functions, no processes: ``lema_hub.grading`` turns them
into verdicts and ``lema_hub.grading_pool`` runs the math-verify ones in bounded workers. The rules
are written down in ``lema_hub.grading``'s docstring."""

from __future__ import annotations

import re
from fractions import Fraction

from lema_hub.formats import last_boxed

Task = str  # "gsm8k" (numeric answers) | "math" (LaTeX answers)
TASKS = ("gsm8k", "math")

MAX_PREDICTION_CHARS = 100_000  # ~25k tokens; longer outputs are not graded
MAX_ANSWER_CHARS = 1_000  # an extracted answer longer than this is not an answer
MAX_NUMBER_CHARS = 60


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


def check_extraction(extraction: str) -> str:
    if extraction not in EXTRACTIONS:
        raise ValueError(f"unknown extraction {extraction!r}; expected one of {EXTRACTIONS}")
    return extraction


def _span_at(text: str, pos: int) -> str | None:
    """The answer that starts at ``pos`` (after a marker): a ``\\boxed{}`` in the rest, else display
    math opening right there (it may span lines), else the rest of the line."""
    rest = text[pos:]
    boxed = last_boxed(rest)
    if boxed is not None:
        return strip_answer(boxed) or None
    head = rest.lstrip(" \t\n*_")
    for opener, closer in _DISPLAY:
        if head.startswith(opener):
            end = head.find(closer, len(opener), len(opener) + MAX_ANSWER_CHARS + len(closer))
            if end != -1:
                return strip_answer(head[len(opener) : end]) or None
    return strip_answer(head.split("\n", 1)[0]) or None


def _strict_answer(text: str) -> str | None:
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        span = _span_at(text, matches[-1].end())
        if span:
            return span
    boxed = last_boxed(text)
    return (strip_answer(boxed) or None) if boxed is not None else None


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
        content = strip_answer(content.replace("\\$", "$"))
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
    check_extraction(extraction)
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


def strip_answer(span: str) -> str:
    span = span.strip().strip("*_").strip()
    # A sentence after the answer on the same line ("42. So she has 42 apples.") is not part of it.
    span = _SENTENCE_AFTER.split(span, maxsplit=1)[0]
    # Markdown emphasis and a final period in either order: "**bank**." and "**42.**" -> bank, 42.
    while True:
        stripped = span.strip().strip("*_").strip().rstrip(".").strip()
        if stripped == span:
            break
        span = stripped
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
        return strip_answer(boxed) if boxed is not None else None
    if _ANSWER_IS.search(gold):
        return extract_answer(gold, task)
    ans = strip_answer(gold)
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


def gsm8k_number(answer: str) -> Fraction | None:
    """The number an answer states (see the module docstring for the rules); None when there is none."""
    return _gsm8k_parse(answer)[0]


def fraction_text(x: Fraction) -> str:
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


def compare_gsm8k(pred: str, gold: str) -> tuple[str, str]:
    g = gsm8k_number(gold)
    if g is None:
        return "ungradeable", f"gold answer {gold[:80]!r} is not a number"
    p, expression = _gsm8k_parse(pred)
    if p is None:
        if expression:
            return "wrong", f"the predicted answer {pred[:80]!r} is an expression, not a number"
        return "wrong", "the predicted answer has no number"
    if p == g:
        return "correct", "numbers are equal"
    return "wrong", f"{fraction_text(p)} != {fraction_text(g)}"


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


def parse_latex(answer: str):
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


def compare_math(pred: str, gold: str) -> tuple[str, str]:
    from math_verify import verify

    g = parse_latex(gold)
    if not g:
        return "ungradeable", f"math-verify could not parse the gold answer {gold[:80]!r}"
    p = parse_latex(pred)
    if not p:
        return "ungradeable", f"math-verify could not parse the predicted answer {pred[:80]!r}"
    if verify(g, p, timeout_seconds=None):
        return "correct", "math-verify: equivalent"
    return "wrong", "math-verify: not equivalent"


def math_key(answer: str) -> str:
    p = parse_latex(answer)
    if p:
        return "sympy:" + str(p[0])
    return "text:" + re.sub(r"\s+", "", answer)


def compare_answers(pred: str, gold: str, task: str) -> tuple[str, str]:
    if task == "gsm8k":
        return compare_gsm8k(pred, gold)
    return compare_math(pred, gold)
