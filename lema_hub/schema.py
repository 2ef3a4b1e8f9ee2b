"""The vocabulary the stages share: column names, fixed values, and the `datasets.Features` of rows.

A stage writes these names and a card (or the next stage) reads the same ones, so a rename happens
here or nowhere. Importing this module is cheap: `datasets` is imported only when Features are built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Features

# The offline rule-based corrector: its name as a `backend` and as the `corrector` column's value.
REFERENCE_CORRECTOR = "reference"

# Why a correction was rejected (`reject_reason`): a fixed vocabulary, so rows can be counted and filtered.
REJECT_REASONS: tuple[str, ...] = (
    "generation_failed",  # the engine gave no text (error after retries)
    "too_long",  # the output is longer than the parser's cap (`correction.MAX_CORRECTION_CHARS`)
    "parse_error",  # no `Step k` index, or no corrected solution to read
    "step_out_of_range",  # the incorrect step is not a step of the original solution
    "empty_explanation",  # no (or an empty) `Explanation:`
    "inconsistent_steps",  # the corrected solution does not restart at the incorrect step
    "no_answer",  # the corrected solution states no final answer
    "wrong_answer",  # the final answer grades `wrong` against gold
    "ungradeable",  # the final answer could not be compared with gold
    "no_reference",  # reference corrector: its rules do not apply to this problem or path
    "false_claim",  # check_arithmetic: the accepted correction reaches gold through a false `a op b = c`
)


@dataclass(frozen=True)
class TokenColumns:
    """Which columns of a row name the model and hold its prompt/completion token counts."""

    model: str
    prompt: str
    completion: str


# Sample / Mistake rows: the generator that sampled the path and what it cost.
GENERATOR_TOKENS = TokenColumns(model="generator", prompt="prompt_tokens", completion="completion_tokens")
# Correction rows also carry the mistake's generator columns; the corrector's own cost is kept apart.
CORRECTOR_TOKENS = TokenColumns(
    model="corrector", prompt="correction_prompt_tokens", completion="correction_completion_tokens"
)

# Correction row = every Mistake column + these (the correct stage's own), with their types.
CORRECTION_COLUMNS: dict[str, str] = {
    CORRECTOR_TOKENS.model: "string",  # the corrector model, or REFERENCE_CORRECTOR
    "corrector_kind": "string",  # "llm" | "rule-based"
    "corrector_prompt": "string",  # `name@sha256:<12 hex>` of the few-shot prompt (or the rules)
    "attempt": "int64",  # 0-based sample index among the corrector's attempts for this mistake
    "raw_output": "string",  # the corrector's full text, verbatim
    "incorrect_step": "int64",  # 1-based; null when no step could be read
    "explanation": "string",
    "corrected_steps": "list<string>",  # the corrected solution from the incorrect step on
    "corrected_answer": "string",
    "accepted": "bool",  # the corrected answer grades `correct` against gold
    "reject_reason": "string",  # one of REJECT_REASONS; null when accepted
    "reject_detail": "string",
    "reference_step": "int64",  # the rule-based locator's step, where its rules apply
    "correction_finish_reason": "string",
    CORRECTOR_TOKENS.prompt: "int64",
    CORRECTOR_TOKENS.completion: "int64",
}


def _feature(dtype: str):
    from datasets import List, Value

    if dtype.startswith("list<") and dtype.endswith(">"):
        return List(_feature(dtype[5:-1]))
    return Value(dtype)


def correction_features(mistake_features: Features | dict | None = None) -> Features:
    """Features of a Correction row: the given Mistake columns' types, then the fixed correction columns.

    The mistake part is taken as given (a mistakes dataset from the Hub may carry extra columns); the
    correction columns always get the same types, so a column that is null in every row of a run
    (e.g. token counts of the reference corrector) is still `int64` on disk.
    """
    from datasets import Features

    merged = dict(mistake_features or {})
    merged.update({name: _feature(dtype) for name, dtype in CORRECTION_COLUMNS.items()})
    return Features(merged)


# --- cards and repos (from hub.py)

# File and folder names of an artifact folder (the Hub layout).
README = "README.md"
CONFIG_FILE = "lema_hub_config.yaml"
SUMMARY_FILE = "run_summary.json"
DATA_DIR = "data"
IMAGES_DIR = "images"
EVAL_RESULTS_DIR = ".eval_results"
DEFAULT_NAMESPACE = "your-username"  # placeholder in "how to load" snippets when no repo id is known
LOCAL_EVAL_FILE = "lema_hub_eval_results.yaml"  # results on benchmarks that are not Hub datasets
SWEEP_FILE = "checkpoint_sweep.json"  # a model folder's checkpoint sweeps, by benchmark

# Kinds of dataset artifact, their default repo names and their cards' pretty names.
KINDS = ("mistakes", "corrections", "cot", "mixture", "evolved", "eval_details", "corrector_bench")
_REPO_NAMES = {
    "mistakes": "lema-mistakes",
    "corrections": "lema-corrections",
    "cot": "lema-cot",
    "mixture": "lema-mixture",
    "evolved": "lema-evolved",
    "eval_details": "lema-eval-details",
    "corrector_bench": "lema-corrector-bench",
}
_PRETTY = {
    "mistakes": "LeMa mistakes: wrong chain-of-thought paths",
    "corrections": "LeMa corrections: mistake-correction pairs",
    "cot": "LeMa chain-of-thought training rows",
    "mixture": "LeMa training mixture (CoT + corrections)",
    "evolved": "LeMa correction-centric evolved problems",
    "eval_details": "LeMa evaluation details",
    "corrector_bench": "LeMa corrector benchmark: first-error location on human labels",
}
# Problem collections: Hub id of the source dataset and its license.
SOURCES = {
    "gsm8k": ("openai/gsm8k", "mit"),
    "math": ("EleutherAI/hendrycks_math", "mit"),
    "math500": ("HuggingFaceH4/MATH-500", "mit"),
    "sample": (None, "apache-2.0"),  # the bundled sample problems were written for this project
    "Qwen/ProcessBench": ("Qwen/ProcessBench", "apache-2.0"),  # step-labelled solutions (bench-corrector)
    "svamp": ("ChilleD/SVAMP", "mit"),
    "asdiv": ("EleutherAI/asdiv", "cc-by-nc-4.0"),  # non-commercial: rows derived from it inherit that
}

# The Hub dataset of each training/eval task (a model card's `datasets:`).
_TASK_DATASETS = {
    "gsm8k": "openai/gsm8k",
    "math": "EleutherAI/hendrycks_math",
    "math500": "HuggingFaceH4/MATH-500",
}

# Benchmarks that are not datasets on the Hub: their results stay out of `.eval_results/` (which the
# Hub links to a dataset page) and live in LOCAL_EVAL_FILE, shown in the card with what they are.
LOCAL_BENCHMARKS = {
    "lema-hub/bundled-sample": "the bundled sample: 12 held-out problems written for lema_hub in "
    "GSM8K's format (`lema_hub/data/sample_test.jsonl`), not a Hub dataset",
}

CODE_LICENSE = "apache-2.0"  # lema_hub's own license (LICENSE, pyproject.toml)
# License of the problems each training/eval task derives from (see SOURCES for the Hub ids).
TASK_DATA_LICENSES = {
    "gsm8k": ("GSM8K", "MIT"),
    "math": ("MATH", "MIT"),
    "math500": ("MATH-500 (MATH)", "MIT"),
    "sample": ("the bundled sample (written for lema_hub)", "Apache-2.0"),
    "svamp": ("SVAMP", "MIT"),
    "asdiv": ("ASDiv", "CC BY-NC 4.0"),
    "processbench": ("ProcessBench", "Apache-2.0"),
}

# Display names of license ids.
_LICENSE_NAMES = {
    "mit": "MIT",
    "apache-2.0": "Apache-2.0",
    "cc-by-nc-4.0": "CC BY-NC 4.0",
    "other": "Other (see below)",
}
