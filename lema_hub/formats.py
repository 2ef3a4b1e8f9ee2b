"""Every LeMa text format, in one place.

* the chain-of-thought (CoT) prompt and target of the paper,
* GSM8K / MATH gold solutions turned into LeMa rationales (``... The answer is X.``),
* steps: rendering ``Step k: ...`` and splitting free-form model output into steps,
* the correction training format (the paper's second instruction) and its target,
* the query block appended to the corrector's few-shot prompt,
* plain-text vs chat-message rows (``prompt_style``).

No other module writes these strings; they import them from here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from lema_hub.schema import PROMPT_STYLES

PromptStyle = Literal["plain", "chat"]

COT_PROMPT = (
    "Please solve the following math problem.\nQuestion: {question}\nAnswer: Let's think step by step.\n"
)
ANSWER_PREFIX = "The answer is"
COT_TARGET = "{rationale} " + ANSWER_PREFIX + " {answer}."

# The paper's second instruction (fine-tuning on correction data).
CORRECTION_INSTRUCTION = (
    "For the following math word problem, the original solution is incorrect. Please identify the "
    "incorrect step, explain why it is incorrect, and correct the original solution starting from the "
    "incorrect step."
)
QUESTION_LABEL = "Question:"
ORIGINAL_SOLUTION_LABEL = "Original Solution:"
INCORRECT_STEP_LABEL = "Incorrect Step:"
EXPLANATION_LABEL = "Explanation:"
CORRECT_SOLUTION_LABEL = "Correct Solution:"
SKIPPED_STEPS = "..."


class _ProblemLike(Protocol):
    source: str
    gold_solution: str
    gold_answer: str


# --------------------------------------------------------------------------------------------- CoT
def normalize_question(question: str) -> str:
    """Collapse runs of spaces and strip, as the paper's evaluation file does (newlines are kept)."""
    return re.sub(r" {2,}", " ", question).strip()


def cot_prompt(question: str) -> str:
    """The paper's zero-shot CoT prompt for one question."""
    return COT_PROMPT.format(question=normalize_question(question))


def problem_prompt(problem: Any, template: PromptTemplate | None = None) -> str:
    """The zero-shot CoT prompt of a Problem (or Problem row): the paper's CSQA prompt with its
    candidates for a multiple-choice problem, else ``template`` (an evaluation template) or the
    paper's math CoT prompt. The one place collect, evaluate and build pick a problem's prompt."""
    get = problem.get if isinstance(problem, dict) else lambda k, d=None: getattr(problem, k, d)
    candidates = get("candidates")
    if candidates:
        from lema_hub.csqa import csqa_prompt  # lema_hub.csqa imports this module

        return csqa_prompt(get("question"), list(candidates))
    return template.render(get("question")) if template is not None else cot_prompt(get("question"))


def cot_target(rationale: str, answer: str) -> str:
    """``{rationale} The answer is {answer}.`` (a trailing period on the answer is not doubled)."""
    answer = answer.strip()
    if answer.endswith("."):
        answer = answer[:-1].rstrip()
    rationale = rationale.strip()
    if not rationale:
        return f"{ANSWER_PREFIX} {answer}."
    return COT_TARGET.format(rationale=rationale, answer=answer)


# ------------------------------------------------------------------------------ GSM8K gold -> LeMa
_ANNOTATION = re.compile(r"<<[^<>]*>>")
_EQUALS = re.compile(r"\s*=\s*")


def _space_operators(line: str) -> str:
    """Pad ``+ - * /`` (and ``//``, ``**``) with spaces when glued to the previous character.

    ``7+11`` -> ``7 + 11``. An operator that already follows a space is left alone (``45 -40``
    keeps its unary-looking minus, ``+14`` stays), which is what the paper's released GSM8K test
    file does.
    """
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch in "+-*/":
            op = line[i : i + 2] if ch in "*/" and line[i + 1 : i + 2] == ch else ch
            if out and out[-1] != " ":
                out.append(" ")
                out.append(op)
                if i + len(op) < n and line[i + len(op)] != " ":
                    out.append(" ")
            else:
                out.append(op)
            i += len(op)
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def gsm8k_line(line: str) -> str:
    """One GSM8K solution line in LeMa form: annotations removed, operators spaced, ends with punctuation."""
    line = _ANNOTATION.sub("", line).strip()
    line = _EQUALS.sub(" = ", line)  # first, so a minus right after "=" stays unary ("= -2")
    line = _space_operators(line).strip()
    if line and line[-1] not in ".!?":
        line += "."
    return line


def gsm8k_answer(raw: str) -> str:
    """The number after ``####`` with thousands separators removed (``1,600`` -> ``1600``)."""
    return raw.strip().replace(",", "").rstrip(".").strip()


def split_gsm8k_solution(gold_solution: str) -> tuple[list[str], str]:
    """GSM8K original solution -> (LeMa-formatted lines, answer). Raises ValueError without ``####``."""
    if not isinstance(gold_solution, str) or "####" not in gold_solution:
        raise ValueError("not a GSM8K solution: no '#### <answer>' line")
    body, raw_answer = gold_solution.rsplit("####", 1)
    answer = gsm8k_answer(raw_answer)
    if not answer:
        raise ValueError("GSM8K solution has an empty '####' answer")
    lines = [gsm8k_line(x) for x in body.strip().split("\n") if x.strip()]
    return [x for x in lines if x], answer


def gsm8k_rationale(gold_solution: str) -> tuple[str, str]:
    """GSM8K gold -> (rationale, answer); ``cot_target(*gsm8k_rationale(s))`` is the paper's target."""
    lines, answer = split_gsm8k_solution(gold_solution)
    return " ".join(lines), answer


# ------------------------------------------------------------------------------- MATH gold -> LeMa
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_BOXED_TOKEN = re.compile(r"[^\s$]+")


def _brace_pairs(text: str) -> dict[int, int]:
    """Position of each ``{`` -> position of its closing ``}``, in one pass (escaped braces skipped)."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed 5``); nested braces handled.

    Escaped braces (``\\{``, ``\\}``) do not count for nesting. None when there is no complete box.
    Linear in the length of ``text``: the braces are matched once, not once per box.
    """
    if not isinstance(text, str):
        return None
    boxes = list(_BOXED.finditer(text))
    if not boxes:
        return None
    pairs: dict[int, int] | None = None
    for m in reversed(boxes):
        start = m.end()
        if start < len(text) and text[start] == "{":
            if pairs is None:
                pairs = _brace_pairs(text)
            end = pairs.get(start)
            if end is not None:
                return text[start + 1 : end].strip()
            continue  # unbalanced: try an earlier box
        # "\boxed 5" (no braces): the token up to whitespace / $ / end.
        tok = _BOXED_TOKEN.match(text, start)
        if tok and m.group(0).endswith(" "):
            return tok.group(0).rstrip(".,")
    return None


def math_rationale(solution: str) -> tuple[str, str]:
    """MATH solution -> (rationale, answer): lines joined by spaces, answer = last ``\\boxed{}``.

    Raises ValueError when the solution has no boxed answer.
    """
    answer = last_boxed(solution)
    if answer is None or not answer:
        raise ValueError("MATH solution has no \\boxed{...} answer")
    rationale = " ".join(x.strip() for x in solution.strip().split("\n") if x.strip())
    return rationale, answer


def gold_rationale(gold_solution: str) -> tuple[str, str]:
    """Either source's gold solution -> (rationale, answer) (GSM8K when it has ``####``)."""
    if "####" in gold_solution:
        return gsm8k_rationale(gold_solution)
    return math_rationale(gold_solution)


def gold_steps(problem: _ProblemLike) -> list[str]:
    """The problem's gold solution as steps; the last is ``The answer is X.``.

    GSM8K-style solutions: one step per line. MATH solutions: ``split_steps`` of the text.
    """
    if "####" in problem.gold_solution:
        lines, answer = split_gsm8k_solution(problem.gold_solution)
        return lines + [f"{ANSWER_PREFIX} {answer}."]
    rationale, answer = math_rationale(problem.gold_solution)
    answer = problem.gold_answer or answer
    steps = [s for s in split_steps(rationale) if not s.startswith(ANSWER_PREFIX)]
    return steps + [f"{ANSWER_PREFIX} {answer}."]


# -------------------------------------------------------------------------------------- steps
_STEP_MARK = re.compile(r"(?:^|(?<=\s))[*#_]*\s*Step\s+(\d+)\s*[:.)]\s*[*_]*\s*", re.IGNORECASE)
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*+•])\s+")
_HEADER = re.compile(r"^\s*#{1,6}\s+")
_ANSWER_IN_TEXT = re.compile(
    r"(?i)(?:^|(?<=[\s.!?]))(?:so\s+|therefore,?\s+|thus,?\s+)?the (?:final )?answer is\b"
)
# Sentence boundary: . ! ? followed by space and a capital / digit / $ / \ / (, outside $...$ math.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$\\(\"'])")
_ABBREV = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|vs|etc|e\.g|i\.e|approx|No)\.|\b[A-Z]\.)$")


def _clean_step(text: str) -> str:
    text = text.replace("**", "").replace("__", "")
    text = _HEADER.sub("", text)
    return re.sub(r"[ \t]+", " ", text).strip()


def _split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences, never inside ``$...$`` / ``\\[...\\]`` math."""
    # Mask math so its periods and spaces do not split.
    spans: list[tuple[int, int]] = []
    for m in re.finditer(r"\$\$.*?\$\$|\$[^$]*\$|\\\[.*?\\\]|\\\(.*?\\\)", text, re.DOTALL):
        spans.append(m.span())

    def in_math(pos: int) -> bool:
        return any(a <= pos < b for a, b in spans)

    parts: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if in_math(m.start()):
            continue
        head = text[start : m.start()]
        if _ABBREV.search(head):
            continue
        parts.append(head)
        start = m.end()
    parts.append(text[start:])
    return [p for p in (x.strip() for x in parts) if p]


def _split_off_answer(steps: list[str]) -> list[str]:
    """Make a trailing ``The answer is X.`` sentence its own (last) step."""
    if not steps:
        return steps
    last = steps[-1]
    matches = list(_ANSWER_IN_TEXT.finditer(last))
    if matches:
        m = matches[-1]
        if m.start() > 0 and last[: m.start()].strip():
            head, tail = last[: m.start()].strip(), last[m.start() :].strip()
            return steps[:-1] + [head, tail]
    return steps


def split_steps(text: str) -> list[str]:
    """Free-form model output -> steps, without ``Step k:`` prefixes.

    Handles, in this order: explicit ``Step k:`` markers (also ``**Step 1.**``); otherwise several
    non-empty lines (numbered / bulleted lists and markdown headers cleaned); otherwise sentences.
    A final ``The answer is X.`` sentence always ends up as its own last step.
    """
    if not isinstance(text, str):
        return []
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return []
    marks = list(_STEP_MARK.finditer(text))
    if marks:
        steps = []
        head = text[: marks[0].start()].strip()
        if head and not head.endswith(":"):
            steps.extend(_split_sentences(_clean_step(head)))
        for i, m in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            body = _clean_step(" ".join(x.strip() for x in text[m.end() : end].split("\n") if x.strip()))
            if body:
                steps.append(body)
        return _split_off_answer(steps)
    lines = [x for x in text.split("\n") if x.strip()]
    # Keep display math / code blocks spanning several lines together.
    merged: list[str] = []
    buf: list[str] = []
    open_env = False
    for line in lines:
        buf.append(line.strip())
        s = " ".join(buf)
        open_env = (
            s.count("$$") % 2 == 1
            or s.count("\\[") > s.count("\\]")
            or s.count("\\begin{") > s.count("\\end{")
            or s.count("```") % 2 == 1
        )
        if not open_env:
            merged.append(s)
            buf = []
    if buf:
        merged.append(" ".join(buf))
    if len(merged) > 1:
        steps = []
        for line in merged:
            line = _clean_step(_LIST_MARK.sub("", line))
            if line and not re.fullmatch(r"`{3}\w*", line):
                steps.append(line)
        return _split_off_answer(steps)
    return _split_off_answer(_split_sentences(_clean_step(merged[0] if merged else text)))


def render_steps(steps: list[str]) -> str:
    """``Step 1: ...\\nStep 2: ...`` (numbering from 1)."""
    return "\n".join(f"Step {i}: {s.strip()}" for i, s in enumerate(steps, start=1))


def parse_rendered_steps(text: str) -> list[tuple[int, str]]:
    """``Step k: ...`` lines -> [(k, text)], keeping the numbers as written (``...`` lines skipped)."""
    out = []
    marks = list(_STEP_MARK.finditer(text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[m.end() : end].strip()
        body = re.sub(r"\s*\}\s*$", "", body).strip()
        body = re.sub(r"\n\s*\.\.\.\s*$", "", body).strip()
        out.append((int(m.group(1)), " ".join(x.strip() for x in body.split("\n") if x.strip())))
    return out


def steps_with_answer(steps: list[str], answer: str) -> list[str]:
    """Steps ending in ``The answer is {answer}.`` (replacing a last step that already states one)."""
    body = [s for s in steps]
    if body and body[-1].lstrip().startswith(ANSWER_PREFIX):
        body = body[:-1]
    return body + [cot_target("", answer)]


# ------------------------------------------------------------------------------------ corrections
def _solution_block(steps: list[str], start: int = 1, skipped: bool = False) -> str:
    lines = ["{"]
    if skipped:
        lines.append(SKIPPED_STEPS)
    lines.extend(f"Step {i}: {s.strip()}" for i, s in enumerate(steps, start=start))
    lines.append("}")
    return "\n".join(lines)


def corrector_query(question: str, steps: list[str]) -> str:
    """One query block for the corrector's few-shot prompt (same layout as its demonstrations)."""
    if not steps:
        raise ValueError("corrector_query needs at least one step")
    return (
        f"{QUESTION_LABEL} {normalize_question(question)}\n"
        f"{ORIGINAL_SOLUTION_LABEL}\n{_solution_block(steps)}\n{INCORRECT_STEP_LABEL}"
    )


def correction_prompt(question: str, steps: list[str]) -> str:
    """Correction training prompt: the paper's second instruction, question, steps; ends ``Incorrect Step:``."""
    return f"{CORRECTION_INSTRUCTION}\n{corrector_query(question, steps)}"


def correction_target(incorrect_step: int, explanation: str, corrected_steps: list[str]) -> str:
    """`` Step k.\\nExplanation: ...\\nCorrect Solution:\\n{\\n...\\nStep k: ...\\nStep N: The answer is X.\\n}``.

    ``corrected_steps`` are the new steps from step k on; ``...`` stands for steps 1..k-1 (none when k == 1).
    """
    if not isinstance(incorrect_step, int) or incorrect_step < 1:
        raise ValueError(f"incorrect_step must be an int >= 1, got {incorrect_step!r}")
    if not corrected_steps:
        raise ValueError("corrected_steps is empty")
    explanation = " ".join(explanation.split())
    block = _solution_block(corrected_steps, start=incorrect_step, skipped=incorrect_step > 1)
    return f" Step {incorrect_step}.\n{EXPLANATION_LABEL} {explanation}\n{CORRECT_SOLUTION_LABEL}\n{block}"


# ------------------------------------------------------------------------------- plain vs chat
def corrected_solution(steps: list[str], corrected: list[str], k: int) -> list[str]:
    """The whole corrected solution: original steps 1..k-1 (kept) then the corrected steps k..N.
    Accepts a correction that restates the solution from step 1 as well."""
    if len(corrected) >= k and [s.strip() for s in corrected[: k - 1]] == [s.strip() for s in steps[: k - 1]]:
        return list(corrected)
    return list(steps[: k - 1]) + list(corrected)


def as_messages(prompt: str) -> list[dict[str, str]]:
    """``[{"role": "user", "content": prompt}]``."""
    return [{"role": "user", "content": prompt}]


def to_prompt_completion(prompt: str, completion: str | None, style: PromptStyle) -> dict[str, Any]:
    """A training/eval row in TRL's prompt-completion layout, plain strings or chat messages.

    Plain rows keep the text byte-exact (the paper's way for base models). Chat rows put the prompt
    in one user message and the completion (leading whitespace stripped) in one assistant message.
    """
    if style == "plain":
        return {"prompt": prompt, "completion": completion}
    if style == "chat":
        return {
            "prompt": as_messages(prompt.strip()),
            "completion": None
            if completion is None
            else [{"role": "assistant", "content": completion.strip()}],
        }
    raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")


# --------------------------------------------------------------------------------- evaluation prompts
# Base models continue past their answer with a new "Question:"; cut there (chat models stop at EOS).
PLAIN_STOP = ["\nQuestion:", "\n\nPlease solve the following math problem."]
# Named evaluation prompt templates ({question} is replaced by the normalized question).
# lema: the paper's CoT prompt (formats.COT_PROMPT). alpaca: the Alpaca template the paper used for
# WizardMath models, with its "Let's think step by step." (as quoted in the LeMa paper).
ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{question}\n\n### Response: Let's think step by step.\n"
)
NAMED_TEMPLATES = ("lema", "alpaca")
# Where a base model starts a new example after its answer, per template (plain prompts only).
TEMPLATE_STOPS = {"alpaca": ["\n### Instruction:", "\n\nBelow is an instruction"]}


@dataclass(frozen=True)
class PromptTemplate:
    """An evaluation prompt: `name` as recorded (lema-cot, alpaca, file:<name>), its text, its hash."""

    name: str
    text: str
    sha256: str

    def render(self, question: str) -> str:
        # str.replace, not format: a template file may hold other braces (LaTeX, JSON examples).
        return self.text.replace("{question}", normalize_question(question))

    def stops(self) -> list[str]:
        """Default stop strings for plain prompts: where a base model starts the next example."""
        if self.name == "lema-cot":
            return list(PLAIN_STOP)
        if self.name in TEMPLATE_STOPS:
            return list(TEMPLATE_STOPS[self.name])
        first = self.text.split("{question}", 1)[0].strip().split("\n", 1)[0].strip()
        return ["\n" + first] if first else []

    def record(self) -> dict[str, str]:
        return {"prompt": self.name, "prompt_template": self.text, "prompt_template_sha256": self.sha256}


def load_prompt_template(spec: str | None) -> PromptTemplate:
    """`lema` (default) | `alpaca` | a text file with `{question}` -> PromptTemplate."""
    spec = spec or "lema"
    if spec == "lema":
        name, text = "lema-cot", COT_PROMPT
    elif spec == "alpaca":
        name, text = "alpaca", ALPACA_TEMPLATE
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(
                f"prompt template {spec!r} is neither a named template ({', '.join(NAMED_TEMPLATES)}) nor a file."
            )
        text = path.read_text(encoding="utf-8")
        if "{question}" not in text:
            raise ValueError(f"prompt template file {path.name}: it has no {{question}} placeholder.")
        name = f"file:{path.name}"
    return PromptTemplate(name, text, hashlib.sha256(text.encode("utf-8")).hexdigest())
