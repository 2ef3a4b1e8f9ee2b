"""The corrector's few-shot prompt: the bundled `lema_hub/prompts/corrector_<task>.txt` files (or a
prompt file verbatim), its demonstrations, and the query that ends at `Incorrect Step:` (math) or at
`Mistakes:` (CSQA, the paper's schema without a step index: `lema_hub.csqa`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lema_hub import csqa, formats
from lema_hub.errors import InvalidInputError
from lema_hub.formats import PROMPT_STYLES
from lema_hub.schema import CHOICE_TASK

DEFAULT_PROMPTS = {
    "gsm8k": "corrector_gsm8k.txt",
    "math": "corrector_math.txt",
    CHOICE_TASK: "corrector_csqa.txt",
}
# The labels a prompt's demonstrations must show, per format (math: the step schema; CSQA: its own).
_REQUIRED_LABELS = {
    "math": ("Question:", formats.INCORRECT_STEP_LABEL),
    CHOICE_TASK: ("Question:", csqa.MISTAKES_LABEL, csqa.CORRECTED_ANSWER_LABEL),
}


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


def sha12(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def corrector_prompt(task: str, prompt_file: str | None = None) -> CorrectorPrompt:
    """The project's own corrector prompt for `task` ("gsm8k" | "math" | "csqa"), or `prompt_file` verbatim."""
    if prompt_file is not None:
        path = Path(prompt_file)
        if not path.is_file():
            raise FileNotFoundError(f"corrector_prompt_file {prompt_file!r} does not exist.")
        data = path.read_bytes()
        name = path.stem
    else:
        if task not in DEFAULT_PROMPTS:
            raise InvalidInputError(
                f"No bundled corrector prompt for task {task!r}; choose one of {sorted(DEFAULT_PROMPTS)}."
            )
        data = resources.files("lema_hub").joinpath("prompts", DEFAULT_PROMPTS[task]).read_bytes()
        name = f"lema-hub/{Path(DEFAULT_PROMPTS[task]).stem}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"Corrector prompt {name!r} is not UTF-8 text: {exc}") from None
    labels = _REQUIRED_LABELS[CHOICE_TASK if task == CHOICE_TASK else "math"]
    if any(label not in text for label in labels):
        raise InvalidInputError(
            f"Corrector prompt {name!r} does not look like a LeMa corrector prompt for {task} "
            f"(it needs demonstrations with {', '.join(repr(x) for x in labels)})."
        )
    return CorrectorPrompt(name=name, text=text, sha=sha12(data))


def build_corrector_input(
    prompt: CorrectorPrompt, question: str, steps: list[str], style: str = "plain"
) -> str | list[dict]:
    """Few-shot prompt + one query (`formats.corrector_query`), ending at `Incorrect Step:`.

    "plain" is the paper's completion-style prompt for base models; "chat" sends the same text as
    one user message (how GPT-4 was queried), so both styles see identical demonstrations.
    """
    query = formats.corrector_query(question, steps)
    return _with_query(prompt, query, style)


def build_choice_corrector_input(
    prompt: CorrectorPrompt, question: str, candidates: list[str], original: str, style: str = "plain"
) -> str | list[dict]:
    """Few-shot prompt + one CSQA query (`csqa.corrector_query`: the original answer in braces),
    ending at `Mistakes:`; plain or chat as `build_corrector_input`."""
    return _with_query(prompt, csqa.corrector_query(question, candidates, original), style)


def _with_query(prompt: CorrectorPrompt, query: str, style: str) -> str | list[dict]:
    if style not in PROMPT_STYLES:
        raise InvalidInputError(f"prompt_style must be one of {PROMPT_STYLES}, got {style!r}.")
    nl = prompt.newline
    query = query.replace("\r\n", "\n")
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
