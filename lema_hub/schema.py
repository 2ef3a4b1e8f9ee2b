"""The vocabulary the stages share: tasks and their sources, model names, backends, prompt styles,
column names, fixed values, and the `datasets.Features` of rows.

A stage writes these names and a card (or the next stage) reads the same ones, so a rename happens
here or nowhere. Importing this module is cheap: `datasets` is imported only when Features are built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Features

# --------------------------------------------------------------------------------- tasks and sources


@dataclass(frozen=True)
class Task:
    """A problem collection the stages name by `name` (`problems: gsm8k`), and where it comes from."""

    name: str
    pretty_name: str
    hub_id: str | None  # the source dataset on the Hub; None: bundled with lema_hub
    configs: tuple[str, ...]  # Hub configs read (MATH: every subject); () = the default config
    splits: tuple[str, ...]
    license: str  # the Hub licence id of the problems (rows derived from them inherit it)
    license_name: str  # the same licence as cards write it
    answers: str  # "number" | "latex" | "choice" | "steps": what a gold answer is
    eval_only: bool = False  # an evaluation benchmark in the paper, never trained on

    @property
    def numeric(self) -> bool:
        """Answers are numbers (graded as `gsm8k`), else LaTeX / choices."""
        return self.answers == "number"


MATH_SUBJECT_CONFIGS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
_TRAIN_TEST = ("train", "test")
TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("sample", "the bundled sample", None, (), _TRAIN_TEST, "apache-2.0", "Apache-2.0", "number"),
        Task("gsm8k", "GSM8K", "openai/gsm8k", ("main",), _TRAIN_TEST, "mit", "MIT", "number"),
        Task(
            "math",
            "MATH",
            "EleutherAI/hendrycks_math",
            MATH_SUBJECT_CONFIGS,
            _TRAIN_TEST,
            "mit",
            "MIT",
            "latex",
        ),
        Task("math500", "MATH-500", "HuggingFaceH4/MATH-500", (), ("test",), "mit", "MIT", "latex"),
        Task("svamp", "SVAMP", "ChilleD/SVAMP", (), _TRAIN_TEST, "mit", "MIT", "number", eval_only=True),
        Task(
            "asdiv",
            "ASDiv",
            "EleutherAI/asdiv",
            (),
            ("validation",),
            "cc-by-nc-4.0",
            "CC BY-NC 4.0",
            "number",
            True,
        ),
        Task(
            "csqa",
            "CommonsenseQA",
            "tau/commonsense_qa",
            (),
            ("train", "validation", "test"),
            "mit",
            "MIT",
            "choice",
        ),
        # lema_hub's own CSQA-format sample (`lema_hub/data/csqa_sample_{train,test}.jsonl`).
        Task(
            "csqa_sample",
            "the bundled CSQA sample",
            None,
            (),
            _TRAIN_TEST,
            "apache-2.0",
            "Apache-2.0",
            "choice",
        ),
        Task(
            "processbench",
            "ProcessBench",
            "Qwen/ProcessBench",
            (),
            ("gsm8k", "math", "olympiadbench", "omnimath"),
            "apache-2.0",
            "Apache-2.0",
            "steps",
            eval_only=True,
        ),
    )
}
# The math problem collections `problems:` names (the loaders in lema_hub.problems).
MATH_TASKS: tuple[str, ...] = tuple(n for n, t in TASKS.items() if t.answers in ("number", "latex"))
NUMERIC_TASKS: tuple[str, ...] = tuple(n for n in MATH_TASKS if TASKS[n].numeric)
# Multiple-choice collections (CommonsenseQA): a Problem carries its `candidates`; `problems.task_of`
# names their rows CHOICE_TASK, and grading, the corrector and build read that name.
CHOICE_TASK = "csqa"
CHOICE_TASKS: tuple[str, ...] = tuple(n for n, t in TASKS.items() if t.answers == "choice")
# The ones mistakes are collected on (the rest are evaluation benchmarks only). CSQA is the paper's
# third training task (mistakes from its train split; evaluated on its dev split).
TRAIN_TASKS: tuple[str, ...] = tuple(n for n in (*MATH_TASKS, *CHOICE_TASKS) if not TASKS[n].eval_only)
# Where the bundled samples are named as benchmark datasets (they are not datasets on the Hub).
BUNDLED_SAMPLE_ID = "lema-hub/bundled-sample"
BUNDLED_CSQA_SAMPLE_ID = "lema-hub/bundled-csqa-sample"
_BUNDLED_IDS = {"csqa_sample": BUNDLED_CSQA_SAMPLE_ID}


def task_dataset_id(name: str) -> str | None:
    """The dataset a task's rows come from: its Hub id, the bundled sample's id, or None if unknown."""
    task = TASKS.get(name)
    if task is None:
        return None
    return task.hub_id or _BUNDLED_IDS.get(name, BUNDLED_SAMPLE_ID)


# ------------------------------------------------------------------------------------------ models

EMBEDDED_PREFIX = "embedded:"
TINY_PREFIX = "tiny:"
# The model shipped with lema_hub (see lema_hub.models), by its alias and by its Hub id.
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_MODEL = EMBEDDED_MODEL
# Written by lema_hub into every model folder it makes (models.write_model_meta / read_model_meta).
MODEL_META_FILE = "lema_hub_model.json"

# ----------------------------------------------------------------------------- backends and prompts

# Generation backends of lema_hub.generation; LOCAL_BACKENDS load the model in this process.
BACKENDS: tuple[str, ...] = ("transformers", "openai", "tgi", "vllm")
LOCAL_BACKENDS: tuple[str, ...] = ("transformers", "vllm")
# What a prompt is: raw text (`plain`) or chat messages (`chat`); a config may also say `auto`.
PROMPT_STYLES: tuple[str, ...] = ("plain", "chat")
AUTO = "auto"
PROMPT_STYLE_CHOICES: tuple[str, ...] = (AUTO, *PROMPT_STYLES)

# The offline rule-based corrector: its name as a `backend` and as the `corrector` column's value.
REFERENCE_CORRECTOR = "reference"
CORRECTOR_BACKENDS: tuple[str, ...] = (REFERENCE_CORRECTOR, *BACKENDS)

# Why a correction was rejected (`reject_reason`): a fixed vocabulary, so rows can be counted and filtered.
REJECT_REASONS: tuple[str, ...] = (
    "generation_failed",  # the engine gave no text (error after retries)
    "too_long",  # the output is longer than the parser's cap (`correction.MAX_CORRECTION_CHARS`)
    "parse_error",  # no `Step k` index, or no corrected solution to read (CSQA: no `Corrected Answer:` block)
    "step_out_of_range",  # the incorrect step is not a step of the original solution
    "empty_explanation",  # no (or an empty) `Explanation:`
    "inconsistent_steps",  # the corrected solution does not restart at the incorrect step
    "no_answer",  # the corrected solution states no final answer
    "wrong_answer",  # the final answer grades `wrong` against gold
    "ungradeable",  # the final answer could not be compared with gold
    "no_reference",  # reference corrector: its rules do not apply to this problem or path
    "false_claim",  # check_arithmetic: the accepted correction reaches gold through a false `a op b = c`
    "inexact_choice",  # CSQA: the corrected answer reaches the gold candidate only via the edit-distance mapping
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


# ------------------------------------------------------------------------------------- row schemas
# dtypes: a `datasets.Value` name, `list<dtype>`, `messages` (chat messages), or a dict (a struct).

# A Problem (lema_hub.problems.Problem), the first columns of every row derived from one.
PROBLEM_COLUMNS: dict[str, Any] = {
    "problem_id": "string",
    "source": "string",
    "split": "string",
    "question": "string",
    "gold_solution": "string",
    "gold_answer": "string",
    "level": "int64",
    "subject": "string",
    "candidates": "list<string>",  # the answer choices of a multiple-choice task (CSQA); null for math
}
# The sampling parameters a path was generated with.
SAMPLING_COLUMNS: dict[str, Any] = {
    "temperature": "float64",
    "top_p": "float64",
    "max_tokens": "int64",
    "seed": "int64",
}
# Sample row (`<task>-samples` of `collect`): one sampled path, graded. A Mistake row (`<task>`) is a
# Sample row whose verdict is a mistake: the same columns.
SAMPLE_COLUMNS: dict[str, Any] = {
    **PROBLEM_COLUMNS,
    GENERATOR_TOKENS.model: "string",
    "sample_index": "int64",
    "sampling": SAMPLING_COLUMNS,
    "completion": "string",
    "steps": "list<string>",
    "predicted_answer": "string",
    "verdict": "string",  # one of grading.VERDICTS
    "format_ok": "bool",
    "finish_reason": "string",
    GENERATOR_TOKENS.prompt: "int64",
    GENERATOR_TOKENS.completion: "int64",
    "pass_rate": "float64",
}
MISTAKE_COLUMNS = SAMPLE_COLUMNS
# EvalDetail row (`<label>-<benchmark>` of `evaluate`): one model's graded answer to one problem.
EVAL_DETAIL_COLUMNS: dict[str, Any] = {
    **PROBLEM_COLUMNS,
    GENERATOR_TOKENS.model: "string",
    "model_label": "string",
    "sample_index": "int64",
    "prompt_style": "string",
    "prompt": "string",
    "sampling": SAMPLING_COLUMNS,
    "completion": "string",
    "finish_reason": "string",
    GENERATOR_TOKENS.prompt: "int64",
    GENERATOR_TOKENS.completion: "int64",
    "error": "string",
    "predicted_answer": "string",
    "verdict": "string",
    "grade_reason": "string",
    # Multiple-choice tasks (CSQA): the candidate the stated answer maps to (smallest edit distance) and
    # whether a mapping was needed (the stated answer is not a candidate as written); null for math.
    "mapped_answer": "string",
    "mapping_needed": "bool",
    # ... and how it matched: exact | label | contains | edit_distance | no_match (csqa.MAPPING_KINDS).
    "mapping": "string",
}


def training_row_columns(prompt_style: str) -> dict[str, Any]:
    """TrainingRow (`<prefix>-<view>` of `build`): TRL's prompt/completion, as text or chat messages."""
    text = "string" if prompt_style == "plain" else "messages"
    return {
        "kind": "string",  # cot | correction
        "origin": "string",  # gold | sample | correction
        "problem_id": "string",
        "question": "string",
        "prompt": text,
        "completion": text,
        "source": "string",
        GENERATOR_TOKENS.model: "string",
        CORRECTOR_TOKENS.model: "string",
    }


def _feature(dtype: Any):
    from datasets import List, Value

    if isinstance(dtype, dict):
        return {name: _feature(d) for name, d in dtype.items()}
    if dtype == "messages":
        return List({"role": Value("string"), "content": Value("string")})
    if dtype.startswith("list<") and dtype.endswith(">"):
        return List(_feature(dtype[5:-1]))
    return Value(dtype)


def features(columns: dict[str, Any]) -> Features:
    """`datasets.Features` of a row schema above (`features(SAMPLE_COLUMNS)`)."""
    from datasets import Features

    return Features({name: _feature(dtype) for name, dtype in columns.items()})


def sample_features() -> Features:
    """Features of a Sample (and Mistake) row, so every shard and every run writes the same types."""
    return features(SAMPLE_COLUMNS)


def mistake_features() -> Features:
    return features(MISTAKE_COLUMNS)


def eval_detail_features() -> Features:
    return features(EVAL_DETAIL_COLUMNS)


def training_row_features(prompt_style: str) -> Features:
    return features(training_row_columns(prompt_style))


def conform(rows: list[dict], feats: Features | dict) -> list[dict]:
    """Rows with exactly the schema's columns, in its order (a missing column is null)."""
    return [{name: r.get(name) for name in feats} for r in rows]


def conform_in_place(rows: list[dict], feats: Features | dict) -> list[dict]:
    """`conform`, replacing each row in the caller's list: no second copy of every row is alive."""
    for i, r in enumerate(rows):
        rows[i] = {name: r.get(name) for name in feats}
    return rows


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
# Problem collections by the `source` a row names (a task name, or its Hub id): (Hub id, license).
SOURCES: dict[str, tuple[str | None, str]] = {
    **{name: (t.hub_id, t.license) for name, t in TASKS.items()},
    **{t.hub_id: (t.hub_id, t.license) for t in TASKS.values() if t.hub_id},
}

# The Hub dataset of each task (a model card's `datasets:`).
_TASK_DATASETS: dict[str, str] = {name: t.hub_id for name, t in TASKS.items() if t.hub_id}

# Benchmarks that are not datasets on the Hub: their results stay out of `.eval_results/` (which the
# Hub links to a dataset page) and live in LOCAL_EVAL_FILE, shown in the card with what they are.
LOCAL_BENCHMARKS = {
    BUNDLED_SAMPLE_ID: "the bundled sample: 12 held-out problems written for lema_hub in "
    "GSM8K's format (`lema_hub/data/sample_test.jsonl`), not a Hub dataset",
    BUNDLED_CSQA_SAMPLE_ID: "the bundled CSQA sample: 8 held-out multiple-choice questions written for "
    "lema_hub in CommonsenseQA's format (`lema_hub/data/csqa_sample_test.jsonl`), not a Hub dataset",
}

CODE_LICENSE = "apache-2.0"  # lema_hub's own license (LICENSE, pyproject.toml)
# License of the problems each task derives from, as cards name it: (pretty name, license).
TASK_DATA_LICENSES: dict[str, tuple[str, str]] = {
    n: (t.pretty_name, t.license_name) for n, t in TASKS.items()
}

# Display names of license ids.
_LICENSE_NAMES = {
    "mit": "MIT",
    "apache-2.0": "Apache-2.0",
    "cc-by-nc-4.0": "CC BY-NC 4.0",
    "other": "Other (see below)",
}
