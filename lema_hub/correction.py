"""The LeMa corrector: prompt, parser, acceptance filter, and a rule-based reference corrector.

A corrector (any LLM served through `lema_hub.generation`, or the offline `reference` rules) gets a
few-shot prompt + a question + a wrong reasoning path, ending at `Incorrect Step:`, and continues with
`Step k.` / `Explanation: ...` / `Correct Solution: { ... Step k: ... Step N: The answer is X. }`.
It never sees the gold answer. `parse_correction` turns the raw output into fields, tolerant of
formatting noise but strict about meaning, and a correction is accepted only when its final answer
grades `correct` against gold. Rejected rows are kept with a reason from `REJECT_REASONS`.
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

from lema_hub.generation.types import EndpointArgs
from lema_hub.hub import HubArgs

logger = logging.getLogger(__name__)

# Why a correction was rejected: a fixed vocabulary, so rejected rows can be counted and filtered.
REJECT_REASONS: tuple[str, ...] = (
    "generation_failed",  # the engine gave no text (error after retries)
    "parse_error",  # no `Step k` index, or no corrected solution to read
    "step_out_of_range",  # the incorrect step is not a step of the original solution
    "empty_explanation",  # no (or an empty) `Explanation:`
    "inconsistent_steps",  # the corrected solution does not restart at the incorrect step
    "no_answer",  # the corrected solution states no final answer
    "wrong_answer",  # the final answer grades `wrong` against gold
    "ungradeable",  # the final answer could not be compared with gold
    "no_reference",  # reference corrector: its rules do not apply to this problem or path
)
REFERENCE_CORRECTOR = "reference"
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
    text = prompt_text.replace("\r\n", "\n")
    blocks = re.split(r"\n\s*\n(?=Question:)", text)
    return blocks[0].strip(), [b.strip() for b in blocks[1:]]


# --------------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------------


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


_BOLD_RE = re.compile(r"\*\*|__")
_INCORRECT_RE = re.compile(r"\s*[>#*]*\s*incorrect\s+step\s*[:\-]?", re.I)
_EXPLANATION_RE = re.compile(r"^[ \t>#*]*explanation\s*[:\-]", re.I | re.M)
_SOLUTION_RE = re.compile(r"^[ \t>#*]*correct(?:ed)?\s+solution\s*[:\-]?", re.I | re.M)
_STEP_LINE_RE = re.compile(r"^\s*[-*>]?\s*step\s*(\d+)\s*[:.)\-]\s*(.*)$", re.I)
_NEXT_QUESTION_RE = re.compile(r"\n\s*(?:Question|Original Solution)\s*:", re.I)
_STEP_INDEX_RE = re.compile(r"step\s*#?\s*(\d+)", re.I)


def _normalize(raw: str) -> str:
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = _BOLD_RE.sub("", text)
    # A continuation of the few-shot prompt may run into a new demonstration: cut it there.
    m = _NEXT_QUESTION_RE.search(text)
    return text[: m.start()] if m else text


def _strip_braces(lines: list[str]) -> list[str]:
    """Drop the block's `{` / `}` lines (missing or doubled braces are fine), keeping LaTeX braces."""
    lines = [ln.strip() for ln in lines]
    while lines and (not lines[0] or set(lines[0]) <= {"{", " "}):
        lines.pop(0)
    while lines and (not lines[-1] or set(lines[-1]) <= {"}", " "}):
        lines.pop()
    if lines and lines[0].startswith("{") and not lines[0].startswith("{}"):
        lines[0] = lines[0].lstrip("{ ").strip()
    if lines:
        last = lines[-1]
        while last.endswith("}") and last.count("}") > last.count("{"):
            last = last[:-1].rstrip()
        lines[-1] = last
    return [ln for ln in lines if ln]


def _solution_steps(lines: list[str]) -> list[tuple[int | None, str]]:
    """(number, text) per step; unnumbered lines continue the previous step; `...` lines drop."""
    steps: list[tuple[int | None, str]] = []
    for line in lines:
        if re.fullmatch(r"[.\u2026\s]+", line):
            continue
        m = _STEP_LINE_RE.match(line)
        if m:
            steps.append((int(m.group(1)), m.group(2).strip()))
        elif steps:
            num, text = steps[-1]
            steps[-1] = (num, f"{text}\n{line}".strip())
        else:
            steps.append((None, line))
    return steps


def parse_correction(raw: str | None, num_steps: int, task: str = "gsm8k") -> ParsedCorrection:
    """Read a corrector's continuation of `... Incorrect Step:` (or a full `Incorrect Step: ...` block).

    Never raises: any problem comes back as `reject_reason` (see `REJECT_REASONS`).
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

    if raw is None or not raw.strip():
        return ParsedCorrection(
            reject_reason="generation_failed" if raw is None else "parse_error", detail="empty output"
        )
    text = _normalize(raw)
    m = _INCORRECT_RE.match(text)
    if m:  # the model repeated the `Incorrect Step:` label
        text = text[m.end() :]
    exp_m = _EXPLANATION_RE.search(text)
    sol_m = _SOLUTION_RE.search(text)
    head_end = min(x.start() for x in (exp_m, sol_m) if x) if (exp_m or sol_m) else text.find("\n")
    head = text[: head_end if head_end >= 0 else len(text)]
    idx = _STEP_INDEX_RE.search(head) or re.match(r"\s*(\d+)\b", head)
    if idx is None:
        return ParsedCorrection(reject_reason="parse_error", detail="no 'Step k' after 'Incorrect Step:'")
    k = int(idx.group(1))
    out = ParsedCorrection(incorrect_step=k)
    if not 1 <= k <= num_steps:
        out.reject_reason, out.detail = "step_out_of_range", f"step {k} of a {num_steps}-step solution"
        return out
    if exp_m is None:
        out.reject_reason, out.detail = "empty_explanation", "no 'Explanation:'"
        return out
    exp_end = sol_m.start() if sol_m and sol_m.start() > exp_m.end() else None
    body = text[exp_m.end() : exp_end]
    if exp_end is None:  # no `Correct Solution:` label: the explanation ends where the steps begin
        lines = body.split("\n")
        cut = next(
            (i for i, ln in enumerate(lines) if i and (_STEP_LINE_RE.match(ln) or ln.strip() == "{")), None
        )
        explanation = "\n".join(lines[:cut]).strip()
        sol_text = "\n".join(lines[cut:]) if cut is not None else ""
    else:
        explanation = body.strip()
        sol_text = text[sol_m.end() :]
    out.explanation = explanation
    if not re.search(r"\w", explanation):
        out.reject_reason, out.detail = "empty_explanation", "the explanation is empty"
        return out
    steps = _solution_steps(_strip_braces(sol_text.split("\n")))
    if not steps:
        out.reject_reason, out.detail = "parse_error", "no corrected solution"
        return out
    numbered = [s for s in steps if s[0] is not None]
    if numbered:
        steps = [s for s in steps if s[0] is None or s[0] >= k]  # restated earlier steps are dropped
        if not steps or steps[0][0] != k:
            first = steps[0][0] if steps else None
            out.reject_reason = "inconsistent_steps"
            out.detail = f"the corrected solution starts at step {first}, not at the incorrect step {k}"
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
    """The rule-based locator's incorrect step (1-based), or None where it does not apply."""
    try:
        ref = _reference(problem)
        located = _locate(ref, steps) if ref else None
    except Exception:  # QA helper: never let one odd problem stop a run
        logger.debug("reference locator failed", exc_info=True)
        return None
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


_HUB_ID_RE = re.compile(r"^[\w.\-]+/[\w.\-]+$")


def _is_local(folder_or_repo: str) -> bool:
    """A folder, or a missing local path (not a Hub id): raises `MissingInputError` for the latter."""
    from lema_hub.errors import MissingInputError

    if Path(folder_or_repo).is_dir():
        return True
    if not _HUB_ID_RE.match(folder_or_repo) or Path(folder_or_repo).exists():
        raise MissingInputError(
            f"{folder_or_repo!r} is not a dataset folder (and not a Hub dataset id 'namespace/name')."
        )
    return False


def _hub_error(repo_id: str, exc: Exception) -> Exception:
    from lema_hub.errors import InvalidInputError

    return InvalidInputError(
        f"could not read the Hub dataset {repo_id!r}: {type(exc).__name__}: {exc}. "
        "Offline? Pass a local dataset folder."
    )


def main_config(folder_or_repo: str) -> str:
    """The main `<task>` config of an artifact folder or Hub dataset (not `-samples`/`-rejected`)."""
    from lema_hub.errors import InvalidInputError

    path = Path(folder_or_repo)
    if _is_local(folder_or_repo):
        from lema_hub.hub import discover_configs

        names = list(discover_configs(path))
        if not names:
            raise InvalidInputError(f"{folder_or_repo!r} holds no data/<config>/*.parquet files.")
    else:
        import datasets

        try:
            names = datasets.get_dataset_config_names(folder_or_repo)
        except Exception as exc:  # noqa: BLE001 - offline, missing, gated: all the user's to fix
            raise _hub_error(folder_or_repo, exc) from exc
    # A config with no rows is not written, so `<task>-rejected` alone still names the task.
    main = sorted({re.sub(r"-(samples|rejected)$", "", n) for n in names})
    if len(main) != 1:
        raise InvalidInputError(
            f"{folder_or_repo} has configs {names}; say which one to read "
            f"(e.g. --mistakes_config {main[0] if main else '...'})."
        )
    return main[0]


def load_rows(folder_or_repo: str, config: str, split: str = "train", missing_ok: bool = False) -> list[dict]:
    """Rows of one config/split of an artifact folder or Hub dataset (`missing_ok`: [] if absent)."""
    import pyarrow as pa

    from lema_hub.errors import InvalidInputError
    from lema_hub.hub import discover_configs, load_artifact

    path = Path(folder_or_repo)
    if not _is_local(folder_or_repo):
        try:
            return [dict(r) for r in load_artifact(folder_or_repo, config, split)]
        except Exception as exc:  # noqa: BLE001 - offline, missing, gated: all the user's to fix
            raise _hub_error(folder_or_repo, exc) from exc
    if missing_ok and config not in discover_configs(path):
        return []  # an empty config is not written at all
    try:
        return [dict(r) for r in load_artifact(folder_or_repo, config, split)]
    except pa.ArrowException as exc:
        raise InvalidInputError(f"{folder_or_repo} [{config}]: a parquet file cannot be read: {exc}") from exc


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
                parsed = ParsedCorrection(
                    reject_reason="no_reference",
                    detail="no calculator annotations in the gold solution, or no steps",
                )
            rows.append(_row(m, REFERENCE_CORRECTOR, ref_name, 0, raw, parsed, None))
        return rows, tokens

    from lema_hub.generation import GenerationRequest, SamplingParams, make_engine

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
        corrector=corrector,
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
        correction_prompt_tokens=getattr(res, "prompt_tokens", None),
        correction_completion_tokens=getattr(res, "completion_tokens", None),
    )
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

    from lema_hub.configs import config_to_dict, redact
    from lema_hub.errors import InvalidInputError
    from lema_hub.hub import (
        maybe_push,
        save_dataset_config,
        write_dataset_card,
        write_run_record,
    )

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

    rows, tokens = _correction_rows(cfg, mistakes, output_dir)
    if cfg.reference_qa:
        for r in rows:
            r["reference_step"] = reference_step(r, list(r["steps"]))
    _grade(rows, cfg.grading_workers)

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
    )
    ds = datasets.Dataset.from_list(rows)
    # An empty side is not written (and a stale one from an earlier run is removed).
    save_dataset_config(output_dir, name, {"train": ds.filter(lambda r: r["accepted"])})
    save_dataset_config(output_dir, f"{name}-rejected", {"train": ds.filter(lambda r: not r["accepted"])})
    write_run_record(output_dir, redact(config_to_dict(cfg)), summary, recipe="correct")
    write_dataset_card(output_dir, "corrections")
    url = maybe_push(output_dir, cfg, "dataset", "correct")
    if url:
        summary["hub_url"] = url
    logger.info(
        "corrections: %d/%d accepted (%s)", summary["accepted"], summary["n"], summary["reject_reasons"]
    )
    return summary
