"""Zero-shot pass@1 evaluation on GSM8K, MATH, MATH-500, the bundled sample or any problem source.

The protocol defaults to the paper's: zero-shot, the LeMa CoT prompt (raw text for base models, inside
the chat template for instruct models, chosen per model), greedy decoding, up to 2048 new tokens.
With `num_samples > 1` (and a temperature above 0) pass@1 is estimated from n samples per problem.

Every run writes into `output_dir`, which is a Hub-layout dataset folder:
- `data/<model-short-name>-<task>/test-*.parquet`: one row per sample (problem fields, prompt,
  completion, extracted answer, verdict, tokens), with the dataset card and the run record;
- `results.json`: the metrics of every (model, benchmark) evaluated into this folder;
- `comparison.md`: a Markdown table across models, one per benchmark.
When a model is a local folder that lema_hub wrote (it has `lema_hub_model.json`), its card gets
`.eval_results/<task>.yaml` entries and a results table.
Predictions from elsewhere (`predictions_path`) are graded through the same code path, without generation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lema_hub import distributed
from lema_hub.artifacts import HubArgs
from lema_hub.generation.types import EndpointArgs
from lema_hub.models import is_hub_id, read_model_meta, resolve_prompt_style
from lema_hub.problems import Problem, ProblemArgs, eval_only_source
from lema_hub.publish import finish
from lema_hub.schema import (
    AUTO,
    BACKENDS,
    DEFAULT_MODEL,
    EMBEDDED_PREFIX,
    MATH_TASKS,
    MODEL_META_FILE,
    PROMPT_STYLE_CHOICES,
    PROMPT_STYLES,
    TINY_PREFIX,
    conform,
    eval_detail_features,
    task_dataset_id,
)

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


@dataclass
class EvalConfig(ProblemArgs, HubArgs, EndpointArgs):
    """`lema-hub evaluate`: pass@1 of one or more models on one benchmark (see the module docstring)."""

    models: list[str] = field(
        default_factory=lambda: [DEFAULT_MODEL],
        metadata={
            "help": "Models to evaluate side by side: Hub ids, local folders (LoRA adapters too), "
            "embedded:/tiny: aliases, or served model names for the openai/tgi backends."
        },
    )
    model_labels: list[str] | None = field(
        default=None, metadata={"help": "Display names for the models (e.g. baseline lema), one per model."}
    )
    problems_split: str = field(default="test", metadata={"help": "Split of the problem source to evaluate."})
    benchmark_name: str | None = field(
        default=None,
        metadata={"help": "Name of the benchmark in configs and cards (default: from `problems`)."},
    )
    backend: str = field(default="transformers", metadata={"help": "transformers | vllm | openai | tgi"})
    prompt_style: str = field(
        default="auto",
        metadata={
            "help": "auto (chat template when the model has one, else the raw CoT prompt) | plain | chat"
        },
    )
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy (the paper's protocol)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p."})
    max_new_tokens: int = field(
        default=2048, metadata={"help": "Max new tokens per answer (the paper: 2048)."}
    )
    num_samples: int = field(
        default=1, metadata={"help": "Samples per problem; pass@1 is estimated from them."}
    )
    seed: int | None = field(
        default=0, metadata={"help": "Random seed (used when sampling, num_samples > 1)."}
    )
    stop: list[str] | None = field(
        default=None, metadata={"help": "Stop strings (default: none for chat, a new 'Question:' for plain)."}
    )
    predictions_path: str | None = field(
        default=None,
        metadata={
            "help": "Grade completions from this .jsonl/.json/.parquet file instead of generating. Rows are "
            "matched to problems by problem_id, question, prompt, or position (in that order)."
        },
    )
    predictions_column: str = field(
        default="completion", metadata={"help": "Column of predictions_path holding the completion text."}
    )
    output_dir: str = field(
        default="outputs/eval",
        metadata={
            "help": "Output folder (a Hub-layout dataset of per-problem details + results.json + comparison.md)."
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Generation cache for resuming (default: <output_dir>/.cache/generation)."},
    )
    grading_workers: int | None = field(
        default=None, metadata={"help": "Processes for batch grading (default: CPU count)."}
    )
    extraction: str = field(
        default="strict",
        metadata={
            "help": "Answer extraction: strict (the paper's 'The answer is' / \\boxed{} rule) | flexible "
            "(also 'Answer:', '####', the last sentence...); recorded in the results."
        },
    )
    update_model_card: bool = field(
        default=True,
        metadata={"help": "Write .eval_results and a results table into lema_hub model folders."},
    )
    confidence: float = field(default=0.95, metadata={"help": "Confidence level of the accuracy interval."})
    prompt_templates: list[str] | None = field(
        default=None,
        metadata={
            "help": "Prompt template per model (one for all, or one per model): lema (the paper's CoT prompt, "
            "default) | alpaca (the Alpaca template the paper used for WizardMath) | a text file containing "
            "{question}."
        },
    )
    checkpoints: str | None = field(
        default=None,
        metadata={
            "help": "A training run folder: evaluate each of its checkpoint-* folders (adapters or full models) "
            "instead of `models`, and put the accuracy-by-step curve, the best, best-3 mean and last checkpoint "
            "on the run's model card (the paper's model selection)."
        },
    )
    select_on: str | None = field(
        default=None,
        metadata={
            "help": "With checkpoints: the output_dir of the same sweep on a held-out dev split; the step that is "
            "best there is reported here too (the honest alternative to picking the best on test)."
        },
    )
    answer_rounding: int | None = field(
        default=None,
        metadata={
            "help": "Numeric tasks: also count an answer correct when it equals the gold after rounding both "
            "to this many decimals (the paper's SVAMP/ASDiv protocol: 2). Default: exact comparison."
        },
    )


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 % and 100 %)."""
    if total <= 0:
        return (0.0, 0.0)
    if not 0 <= successes <= total:
        raise ValueError(f"successes must be in [0, {total}], got {successes}.")
    z = _z(confidence)
    p = successes / total
    denom = 1 + z * z / total
    center = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    # At 0 % / 100 % the bound is exactly 0 / 1 (floating point would leave ~1e-17).
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == total else min(1.0, center + half)
    return (low, high)


def bootstrap_interval(
    scores: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem scores (for pass@1 from n samples)."""
    import numpy as np

    if len(scores) == 0:
        return (0.0, 0.0)
    arr = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n_resamples, len(arr)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def pass_at_k(n: int, c: int, k: int = 1) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021); pass@1 = c / n."""
    if n <= 0 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k}).")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def accuracy_with_interval(scores: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean score with a 95 % interval: Wilson when every score is 0/1, else bootstrap. Fractions."""
    n = len(scores)
    acc = sum(scores) / n if n else 0.0
    if all(s in (0, 1) for s in scores):
        low, high = wilson_interval(int(sum(scores)), n, confidence)
        method = "wilson"
    else:
        low, high = bootstrap_interval(scores, confidence)
        method = "bootstrap"
    return {"accuracy": acc, "ci_low": low, "ci_high": high, "ci_method": method, "n": n}


def summarize_rows(rows: Sequence[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """Metrics of one (model, benchmark) from its details rows (one row per sample).

    Accuracy is the mean over problems of pass@1 estimated from that problem's samples; the invalid rate
    is the share of samples with no extractable answer. Breakdowns by level and subject when present.
    """
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem_id"]].append(r)
    scores = {
        pid: pass_at_k(len(rs), sum(r["verdict"] == "correct" for r in rs), 1)
        for pid, rs in by_problem.items()
    }
    out = accuracy_with_interval(list(scores.values()), confidence)
    out["num_problems"] = out.pop("n")
    out["num_samples"] = len(rows)
    out["samples_per_problem"] = len(rows) / len(by_problem) if by_problem else 0
    out["invalid_rate"] = sum(r["predicted_answer"] is None for r in rows) / len(rows) if rows else 0.0
    out["error_count"] = sum(bool(r.get("error")) for r in rows)
    out["truncated_rate"] = sum(r.get("finish_reason") == "length" for r in rows) / len(rows) if rows else 0.0
    tokens = [r["completion_tokens"] for r in rows if r.get("completion_tokens") is not None]
    out["mean_output_tokens"] = sum(tokens) / len(tokens) if tokens else None
    for key in ("level", "subject"):
        groups: dict[str, list[float]] = defaultdict(list)
        for pid, rs in by_problem.items():
            value = rs[0].get(key)
            if value is not None:
                groups[str(value)].append(scores[pid])
        if groups:
            out[f"by_{key}"] = {
                g: {k: v for k, v in accuracy_with_interval(s, confidence).items() if k != "ci_method"}
                for g, s in sorted(groups.items(), key=lambda kv: _natural_key(kv[0]))
            }
    return out


def _natural_key(s: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s))


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown tables across models, one per benchmark, from `results.json`-style entries."""
    by_bench: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in results.values():
        by_bench[entry["benchmark"]].append(entry)
    parts = []
    for bench, entries in sorted(by_bench.items()):
        proto = entries[0]["protocol"]
        parts.append(f"### {bench} ({entries[0]['num_problems']} problems, {proto['decoding']})\n")
        parts.append(
            "| Model | pass@1 (%) | 95% CI | Invalid (%) | Truncated (%) | Mean output tokens | Prompt |"
        )
        parts.append("|---|---:|---:|---:|---:|---:|---|")
        for e in sorted(entries, key=lambda e: -e["accuracy"]):
            tok = "–" if e["mean_output_tokens"] is None else f"{e['mean_output_tokens']:.0f}"
            parts.append(
                f"| {e['model_label']} | {_pct(e['accuracy'])} | {_pct(e['ci_low'])}–{_pct(e['ci_high'])} "
                f"| {_pct(e['invalid_rate'])} | {_pct(e['truncated_rate'])} | {tok} | {_prompt_cell(e['protocol'])} |"
            )
        for key in ("level", "subject"):
            models_with = [e for e in entries if e.get(f"by_{key}")]
            if not models_with:
                continue
            groups = sorted({g for e in models_with for g in e[f"by_{key}"]}, key=_natural_key)
            parts.append(f"\npass@1 (%) by {key}:\n")
            parts.append("| Model | " + " | ".join(groups) + " |")
            parts.append("|---|" + "---:|" * len(groups))
            for e in models_with:
                cells = [_pct(e[f"by_{key}"][g]["accuracy"]) if g in e[f"by_{key}"] else "–" for g in groups]
                parts.append(f"| {e['model_label']} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts).strip() + "\n"


def _prompt_cell(protocol: dict[str, Any]) -> str:
    template = protocol.get("prompt")
    style = protocol["prompt_style"]
    return style if template in (None, "lema-cot") else f"{template}, {style}"


def model_card_table(entries: Sequence[dict[str, Any]]) -> str:
    """The results table written into a model's card."""
    lines = [
        "| Benchmark | pass@1 (%) | 95% CI | Invalid (%) | Problems | Protocol |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['benchmark']} | {_pct(e['accuracy'])} | {_pct(e['ci_low'])}–{_pct(e['ci_high'])} "
            f"| {_pct(e['invalid_rate'])} | {e['num_problems']} | {protocol_notes(e['protocol'])} |"
        )
    return "\n".join(lines) + "\n"


def protocol_notes(protocol: dict[str, Any]) -> str:
    n = protocol["num_samples"]
    est = "" if n == 1 else f", pass@1 from {n} samples"
    if protocol.get("answer_rounding") is not None:
        est += f", numbers compared after rounding to {protocol['answer_rounding']} decimals"
    template = protocol.get("prompt")
    prompt = "" if template in (None, "lema-cot") else f"{template} template, "
    return (
        f"zero-shot CoT ({prompt}{protocol['prompt_style']} prompt), {protocol['decoding']}, "
        f"max {protocol['max_new_tokens']} new tokens{est}"
    )


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


def model_short_name(name: str) -> str:
    """A config-safe short name: `meta-llama/Llama-2-7b-hf` -> `llama-2-7b-hf`, `tiny:smollm2` -> `tiny-smollm2`."""
    if name.startswith("tiny:"):
        base = "tiny-" + name.split(":", 1)[1]
    elif ":" in name and not Path(name).exists():
        base = name.split(":", 1)[1]
    else:
        base = Path(name.rstrip("/")).name or name
    short = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-.")
    return short or "model"


def benchmark_of(cfg: EvalConfig) -> str:
    """Benchmark name: gsm8k | math | math500 | sample | `benchmark_name` | derived from the source."""
    if cfg.benchmark_name:
        name = cfg.benchmark_name
    elif eval_only_source(cfg.problems):
        name = eval_only_source(cfg.problems)
    elif cfg.problems in MATH_TASKS:
        name = cfg.problems
    else:
        name = (
            Path(cfg.problems.rstrip("/")).stem if Path(cfg.problems).suffix else cfg.problems.split("/")[-1]
        )
    return re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "benchmark"


def benchmark_dataset_id(cfg: EvalConfig) -> str:
    """The benchmark's dataset for `.eval_results` entries: a named task's source, a Hub id, or its name."""
    known = task_dataset_id(eval_only_source(cfg.problems) or cfg.problems)
    if known:
        return known
    if is_hub_id(cfg.problems):
        return cfg.problems
    return benchmark_of(cfg)


# ---------------------------------------------------------------------------------------------
# Models and prompts
# ---------------------------------------------------------------------------------------------


def public_model_name(name: str) -> str:
    """The model name to record: aliases and Hub ids as given, a local folder by its own name only."""
    if not name.startswith((EMBEDDED_PREFIX, TINY_PREFIX)) and Path(name).expanduser().is_dir():
        return Path(name).expanduser().resolve().name
    return name


def owned_model_folder(name: str) -> Path | None:
    """The model's folder when it is a local folder written by lema_hub (never a cache or a user's download)."""
    from lema_hub.models import cache_dir

    if name.startswith((EMBEDDED_PREFIX, TINY_PREFIX)):
        return None
    path = Path(name).expanduser()
    if not path.is_dir() or not (path / MODEL_META_FILE).is_file():
        return None
    if path.resolve().is_relative_to(cache_dir().resolve()):
        return None
    return path


def _write_minimal_model_card(folder: Path) -> None:
    from lema_hub.cards.model import write_model_card
    from lema_hub.models import base_model_hub_id, is_adapter

    meta = read_model_meta(folder)
    write_model_card(
        folder,
        {
            "model_name": folder.name,
            "base_model": base_model_hub_id(str(folder)),
            "base_model_name": meta.get("base_model_name") or meta.get("name"),
            "adapter": is_adapter(str(folder)),
            "prompt_style": meta.get("prompt_style"),
        },
    )


@dataclass(frozen=True)
class PromptTemplate:
    """An evaluation prompt: `name` as recorded (lema-cot, alpaca, file:<name>), its text, its hash."""

    name: str
    text: str
    sha256: str

    def render(self, question: str) -> str:
        from lema_hub.formats import normalize_question

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
    import hashlib

    from lema_hub.formats import COT_PROMPT

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


def model_templates(cfg: EvalConfig) -> list[PromptTemplate]:
    """One template per model in `cfg.models` (a single configured template applies to all)."""
    specs = cfg.prompt_templates or ["lema"]
    if len(specs) == 1:
        specs = specs * len(cfg.models)
    return [load_prompt_template(s) for s in specs]


def _build_prompt(question: str, style: str, template: PromptTemplate | None = None) -> str | list[dict]:
    from lema_hub.formats import as_messages, cot_prompt

    text = template.render(question) if template is not None else cot_prompt(question)
    return as_messages(text) if style == "chat" else text


# ---------------------------------------------------------------------------------------------
# Predictions files
# ---------------------------------------------------------------------------------------------


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json (list of objects) or .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file {path} does not exist.")
    if path.suffix == ".jsonl":
        rows = []
        with path.open(encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{i} is not valid JSON: {exc}") from None
        return rows
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path} must hold a JSON list of objects.")
        return data
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"Predictions file {path} must be .jsonl, .json or .parquet.")


def _norm(text: str) -> str:
    return " ".join(str(text).split())


_QUESTION_IN_PROMPT = re.compile(r"Question:\s*(.*?)\s*\nAnswer:", re.S)


def match_predictions(
    problems: Sequence[Problem], rows: Sequence[dict[str, Any]], column: str
) -> list[list[str]]:
    """Completions per problem (several rows per problem = several samples).

    Rows are matched by `problem_id`, else `question`, else the question inside a LeMa CoT `prompt`,
    else by position (then the file must have exactly one row per problem). Rows matching no problem
    (e.g. outside `problems_limit`) are ignored; a problem without a completion is an error.
    """
    if not rows:
        raise ValueError("The predictions file is empty.")
    if column not in rows[0]:
        raise ValueError(f"Predictions have no column {column!r} (columns: {', '.join(rows[0])}).")
    out: list[list[str]] = [[] for _ in problems]
    cols = set(rows[0])
    if "problem_id" in cols:
        index = {p.problem_id: [i] for i, p in enumerate(problems)}
        keys = [str(r["problem_id"]) for r in rows]
    elif "question" in cols or "prompt" in cols:
        index = defaultdict(list)
        for i, p in enumerate(problems):
            index[_norm(p.question)].append(i)
        keys = []
        for r in rows:
            if "question" in cols:
                keys.append(_norm(r["question"]))
            else:
                m = _QUESTION_IN_PROMPT.search(str(r["prompt"]))
                keys.append(_norm(m.group(1) if m else r["prompt"]))
    else:
        if len(rows) != len(problems):
            raise ValueError(
                f"Predictions have {len(rows)} rows for {len(problems)} problems and no problem_id/question/prompt "
                "column to match them by."
            )
        return [[_completion_text(r, column)] for r in rows]
    for key, row in zip(keys, rows):
        targets = index.get(key)
        if targets:
            # Duplicate questions: give each row to the least-served problem with that text.
            i = min(targets, key=lambda t: len(out[t]))
            out[i].append(_completion_text(row, column))
    missing = [problems[i].problem_id for i, c in enumerate(out) if not c]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(problems)} problems have no prediction (first: {', '.join(missing[:3])})."
        )
    return out


def _completion_text(row: dict[str, Any], column: str) -> str:
    value = row[column]
    if isinstance(value, list):  # a conversational completion: [{"role": "assistant", "content": ...}]
        value = "".join(m.get("content", "") for m in value if isinstance(m, dict))
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _validate(cfg: EvalConfig) -> None:
    if cfg.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {cfg.backend!r}.")
    if cfg.prompt_style not in PROMPT_STYLE_CHOICES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLE_CHOICES}, got {cfg.prompt_style!r}.")
    if not cfg.models:
        raise ValueError("models must name at least one model.")
    if cfg.model_labels is not None and len(cfg.model_labels) != len(cfg.models):
        raise ValueError(f"model_labels has {len(cfg.model_labels)} names for {len(cfg.models)} models.")
    if cfg.num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {cfg.num_samples}.")
    from lema_hub.grading import EXTRACTIONS

    if cfg.extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {EXTRACTIONS}, got {cfg.extraction!r}.")
    if cfg.num_samples > 1 and cfg.temperature == 0:
        raise ValueError("num_samples > 1 needs temperature > 0 (greedy decoding gives n identical samples).")
    if cfg.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}.")
    if cfg.backend in ("openai", "tgi") and not cfg.base_urls:
        raise ValueError(f"backend {cfg.backend!r} needs base_urls (the endpoint(s) to query).")
    if cfg.predictions_path is not None and len(cfg.models) > 1:
        raise ValueError("predictions_path grades one model's completions: give exactly one entry in models.")
    if cfg.prompt_templates is not None:
        if len(cfg.prompt_templates) not in (1, len(cfg.models)):
            raise ValueError(
                f"prompt_templates has {len(cfg.prompt_templates)} entries for {len(cfg.models)} models "
                "(give one for all models or one per model)."
            )
        for t in cfg.prompt_templates:
            load_prompt_template(t)  # a bad name or file fails before any model is loaded
    if cfg.answer_rounding is not None and not 0 <= cfg.answer_rounding <= 10:
        raise ValueError(f"answer_rounding must be a number of decimals in 0..10, got {cfg.answer_rounding}.")


def _labels(cfg: EvalConfig) -> list[str]:
    labels = list(cfg.model_labels) if cfg.model_labels else [model_short_name(m) for m in cfg.models]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


def _protocol(cfg: EvalConfig, style: str, stop: list[str] | None, predictions: bool) -> dict[str, Any]:
    decoding = "greedy" if cfg.temperature == 0 else f"sampling (T={cfg.temperature}, top_p={cfg.top_p})"
    return {
        "shots": 0,
        "prompt": "lema-cot",
        "prompt_style": style,
        "decoding": decoding,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "stop": stop,
        "backend": "predictions-file" if predictions else cfg.backend,
        "extraction": cfg.extraction,
        "metric": "pass@1" if cfg.num_samples == 1 else f"pass@1 estimated from {cfg.num_samples} samples",
        "answer_rounding": cfg.answer_rounding,
    }


def merged_adapter_folder(model: str, target: Path) -> str:
    """A LoRA adapter merged into its base and saved once (vLLM loads full checkpoints only)."""
    from lema_hub.models import is_adapter, load_model, load_tokenizer, resolve_model

    resolved = resolve_model(model)
    if not is_adapter(resolved):
        return model
    if not (target / "config.json").is_file():
        tmp = target.with_name(target.name + ".tmp")
        load_model(model).save_pretrained(tmp)
        load_tokenizer(model).save_pretrained(tmp)
        tmp.replace(target)
    return str(target)


def _generate(
    cfg: EvalConfig,
    model: str,
    problems: Sequence[Problem],
    style: str,
    stop,
    cache_path: Path,
    outcome: Any = None,
    template: PromptTemplate | None = None,
):
    """Per problem, its samples; `outcome` (a `run_guard.RequestOutcome`) counts the failures."""
    from lema_hub.generation import GenerationRequest, SamplingParams

    sampling = SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_new_tokens,
        n=cfg.num_samples,
        stop=stop,
        seed=cfg.seed,
    )
    if cfg.backend == "vllm":  # the transformers backend merges adapters itself (models.load_model)
        model = merged_adapter_folder(model, cache_path.parent / "merged" / cache_path.stem)
    engine_cfg = cfg.engine_config(cfg.backend, model, style)
    requests = [
        GenerationRequest(
            request_id=p.problem_id, prompt=_build_prompt(p.question, style, template), sampling=sampling
        )
        for p in problems
    ]
    engine = distributed.make_engine(engine_cfg, cache_path=cache_path)  # shared by the ranks when launched
    try:
        results = engine.generate(requests, desc=f"evaluating {model}")
    finally:
        engine.close()
    if outcome is not None:
        outcome.add(results, engine.last_summary)
    by_id: dict[str, list] = defaultdict(list)
    for r in results:
        by_id[r.request_id].append(r)
    return [sorted(by_id[p.problem_id], key=lambda r: r.sample_index) for p in problems]


def _grade_rows(rows: list[dict[str, Any]], workers: int | None, extraction: str = "strict") -> None:
    """Fill predicted_answer / verdict / grade_reason in place, grading each task's rows together."""
    from lema_hub.grading import grade_rows

    todo = []
    for r in rows:
        if r["completion"] is None:
            r.update(predicted_answer=None, verdict="ungradeable", grade_reason="generation failed")
        else:
            todo.append(r)
    for r, v in zip(todo, grade_rows(todo, extraction=extraction, workers=workers)):
        r.update(predicted_answer=v.predicted_answer, verdict=v.verdict, grade_reason=v.reason)


def _details_rows(
    problems: Sequence[Problem],
    outputs: Sequence[Sequence[Any]],
    model: str,
    label: str,
    style: str,
    sampling: dict[str, Any],
    template: PromptTemplate | None = None,
) -> list[dict[str, Any]]:
    from lema_hub.formats import cot_prompt

    rows = []
    for p, outs in zip(problems, outputs):
        prompt = template.render(p.question) if template is not None else cot_prompt(p.question)
        for i, o in enumerate(outs):
            if isinstance(o, str):  # from a predictions file
                o = {"text": o, "sample_index": i}
            elif not isinstance(o, dict):
                o = dataclasses.asdict(o)
            rows.append(
                {
                    **p.to_dict(),
                    "generator": model,
                    "model_label": label,
                    "sample_index": int(o.get("sample_index", i)),
                    "prompt_style": style,
                    "prompt": prompt,
                    "sampling": sampling,
                    "completion": o.get("text"),
                    "finish_reason": o.get("finish_reason"),
                    "prompt_tokens": o.get("prompt_tokens"),
                    "completion_tokens": o.get("completion_tokens"),
                    "error": o.get("error"),
                }
            )
    return rows


def apply_answer_rounding(rows: list[dict[str, Any]], digits: int) -> int:
    """The paper's SVAMP/ASDiv rule: a numeric answer that is wrong exactly but equal to the gold after
    rounding both to `digits` decimals (Python's `round` on floats) becomes correct. Returns how many changed.

    Only numeric-task rows with an extracted answer are looked at; MATH rows are left alone.
    """
    from lema_hub.answers import gsm8k_number  # the same number reading as exact grading
    from lema_hub.problems import task_of

    changed = 0
    for r in rows:
        if r.get("verdict") != "wrong" or r.get("predicted_answer") is None or task_of(r) != "gsm8k":
            continue
        pred, gold = gsm8k_number(str(r["predicted_answer"])), gsm8k_number(str(r["gold_answer"]))
        if pred is None or gold is None:
            continue
        if round(float(pred), digits) == round(float(gold), digits):
            r.update(verdict="correct", grade_reason=f"equal after rounding to {digits} decimals")
            changed += 1
    return changed


def _source_report(cfg: EvalConfig) -> dict[str, Any] | None:
    """What an evaluation-only source dropped on loading (ASDiv's non-numeric answers), for the results."""
    from lema_hub.problems import load_report

    name = eval_only_source(cfg.problems)
    return load_report(name) if name else None


def source_filter_note(report: dict[str, Any] | None) -> str:
    """`; 2084 of 2305 rows (221 non-numeric answers dropped)` for card notes, or nothing."""
    if not report or not report.get("dropped_non_numeric"):
        return ""
    return (
        f"; {report['kept']} of {report['rows']} rows "
        f"({report['dropped_non_numeric']} with non-numeric answers dropped)"
    )


def _load_results(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@distributed.stage
def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every model in `cfg.models` on the configured problems; return the summary.

    Returns {"output_dir", "benchmark", "results": {config_name: metrics}, "comparison": markdown,
    "model_cards": [folders updated]}.
    """
    from lema_hub.artifacts import save_dataset_config
    from lema_hub.cards.model import write_eval_results
    from lema_hub.configs import config_to_dict
    from lema_hub.problems import load_problems
    from lema_hub.run_guard import RequestOutcome, RequestsFailed, earlier_requests, guard_publish

    if cfg.checkpoints:
        return evaluate_checkpoints(cfg)
    _validate(cfg)
    problems = load_problems(cfg)
    if not problems:
        raise ValueError(f"No problems loaded from {cfg.problems!r} split {cfg.problems_split!r}.")
    source_report = _source_report(cfg)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # `.cache/` inside the folder is never pushed (hub.PUSH_IGNORE) and keeps the run resumable.
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / ".cache" / "generation"
    benchmark = benchmark_of(cfg)
    shard_suffix = f"-shard-{cfg.shard.replace('/', '-of-')}" if cfg.shard else ""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    all_results = _load_results(out_dir)
    run_results: dict[str, dict[str, Any]] = {}
    cards: list[str] = []
    requests: dict[str, Any] = {}
    refused: list[RequestsFailed] = []

    for model, label, template in zip(cfg.models, _labels(cfg), model_templates(cfg)):
        started = time.perf_counter()
        predictions = cfg.predictions_path is not None
        if predictions:  # how the completions were prompted is the file's business; default: the paper's
            style = "plain" if cfg.prompt_style == "auto" else cfg.prompt_style
        else:
            style = resolve_prompt_style(cfg.prompt_style, model, cfg.backend)
        stop = cfg.stop if cfg.stop is not None else (template.stops() if style == "plain" else None)
        protocol = {**_protocol(cfg, style, stop, predictions), **template.record()}
        sampling = {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_new_tokens,
            "seed": cfg.seed,
        }
        config_name = f"{label}-{benchmark}{shard_suffix}"
        outcome = None
        if predictions:
            outputs = match_predictions(problems, read_records(cfg.predictions_path), cfg.predictions_column)
        else:
            outcome = RequestOutcome(f"evaluate [{label}]")
            outputs = _generate(
                cfg, model, problems, style, stop, cache_root / f"{config_name}.jsonl", outcome, template
            )
        # Failed requests never replace a finished config; the other models' results are still written.
        try:
            guard_publish(outcome, out_dir, "evaluate", config_name, [config_name])
        except RequestsFailed as exc:
            refused.append(exc)
            continue
        if outcome is not None:
            requests[config_name] = outcome.record()
        rows = _details_rows(problems, outputs, public_model_name(model), label, style, sampling, template)
        _grade_rows(rows, cfg.grading_workers, cfg.extraction)
        if cfg.answer_rounding is not None:
            apply_answer_rounding(rows, cfg.answer_rounding)
        details = eval_detail_features()
        save_dataset_config(out_dir, config_name, {"test": conform(rows, details)}, features=details)

        metrics = summarize_rows(rows, cfg.confidence)
        entry = {
            "model": public_model_name(model),
            "model_label": label,
            "benchmark": benchmark,
            "benchmark_dataset": benchmark_dataset_id(cfg),
            "problems": cfg.problems,
            "problems_split": cfg.problems_split,
            "problems_limit": cfg.problems_limit,
            "shard": cfg.shard,
            "details_config": config_name,
            "date": date,
            "wall_time_s": round(time.perf_counter() - started, 1),
            "protocol": protocol,
            **metrics,
            "n": metrics["num_problems"],
        }
        if source_report is not None:
            entry["source_filter"] = source_report
        run_results[config_name] = entry
        all_results[config_name] = entry

        folder = owned_model_folder(model)
        if folder is not None and cfg.update_model_card and not cfg.shard:
            card_entry = {
                "dataset_id": entry["benchmark_dataset"],
                "task_id": benchmark,
                "value": round(100 * entry["accuracy"], 2),
                "ci_low": round(100 * entry["ci_low"], 2),
                "ci_high": round(100 * entry["ci_high"], 2),
                "n": entry["num_problems"],
                "date": date,
                "notes": protocol_notes(protocol) + source_filter_note(source_report),
            }
            if not (folder / "README.md").is_file():  # a bare folder gets a model card to hold the results
                _write_minimal_model_card(folder)
            write_eval_results(folder, [card_entry], model_card_table([entry]))
            cards.append(str(folder))

    if refused and not run_results:  # nothing to write: the folder stays exactly as it was
        raise RequestsFailed("\n".join(e.message for e in refused), refused[0].outcome)
    (out_dir / "results.json").write_text(json.dumps(all_results, indent=2, ensure_ascii=False) + "\n")
    table = comparison_table(all_results)
    (out_dir / "comparison.md").write_text(table)
    print(table)

    summary: dict[str, Any] = {"benchmark": benchmark, "results": all_results, **distributed.record()}
    earlier = {k: earlier_requests(out_dir, "evaluate", k) for k in all_results}
    summary["requests"] = {**{k: v for k, v in earlier.items() if v is not None}, **requests}
    record = config_to_dict(cfg)  # `finish` redacts credentials
    for key in ("output_dir", "cache_dir"):
        record.pop(key, None)
    # Local paths stay out of a pushable artifact: keep only their last component.
    for key in ("problems_path", "predictions_path", "select_on"):
        if record.get(key):
            record[key] = Path(record[key]).name
    if record.get("prompt_templates"):
        record["prompt_templates"] = [
            t if t in NAMED_TEMPLATES else Path(t).name for t in record["prompt_templates"]
        ]
    record["models"] = [public_model_name(m) for m in cfg.models]
    pushed = finish(out_dir, "eval_details", cfg, summary, recipe="evaluate", record=record)
    if refused:  # the others were written; the run still failed
        raise RequestsFailed("\n".join(e.message for e in refused), refused[0].outcome)
    return {
        "output_dir": str(out_dir),
        "benchmark": benchmark,
        "results": run_results,
        "comparison": table,
        "model_cards": cards,
        "pushed": pushed,
    }


# ---------------------------------------------------------------------------------------------
# Model selection: every checkpoint of a run
# ---------------------------------------------------------------------------------------------

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-<step>` in a run folder, by step."""
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise ValueError(f"checkpoints: {run} is not a folder (give a training run's output_dir).")
    found = []
    for child in run.iterdir():
        m = _CHECKPOINT.match(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    if not found:
        raise ValueError(f"checkpoints: {run} has no checkpoint-* folders (train with save_strategy: steps).")
    return sorted(found)


def sweep_summary(points: Sequence[dict[str, Any]], top_k: int = 3) -> dict[str, Any]:
    """Best (ties: the earliest step), mean of the best `top_k` and last of per-step results."""
    if not points:
        raise ValueError("sweep_summary needs at least one checkpoint result.")
    by_step = sorted(points, key=lambda p: p["step"])
    ranked = sorted(by_step, key=lambda p: (-p["accuracy"], p["step"]))
    top = ranked[:top_k]
    return {
        "points": by_step,
        "best": ranked[0],
        "best3_mean": sum(p["accuracy"] for p in top) / len(top),
        "best3_steps": [p["step"] for p in top],
        "last": by_step[-1],
    }


def _dev_selection(select_on: str, benchmark_points: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The step that is best on a dev sweep (from its output folder), with this split's accuracy at that step."""
    from lema_hub.schema import SWEEP_FILE

    path = Path(select_on).expanduser() / SWEEP_FILE
    if not path.is_file():
        raise ValueError(f"select_on: {path} does not exist (run the dev sweep into that output_dir first).")
    dev_sweeps = json.loads(path.read_text())
    if len(dev_sweeps) != 1:
        raise ValueError(f"select_on: {path} holds sweeps for {sorted(dev_sweeps)}; use a folder with one.")
    dev = next(iter(dev_sweeps.values()))
    step = dev["best"]["step"]
    if step not in benchmark_points:
        raise ValueError(f"select_on: the dev sweep's best step {step} was not evaluated here.")
    return {
        "step": step,
        "dev_accuracy": dev["best"]["accuracy"],
        "accuracy": benchmark_points[step]["accuracy"],
        "problems_split": dev["problems_split"],
        "num_problems": dev["num_problems"],
        "benchmark": dev["benchmark"],
    }


def evaluate_checkpoints(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every `checkpoint-*` of `cfg.checkpoints` (one details config each, each resumable
    from its own generation cache), then write the sweep to `checkpoint_sweep.json` in the output folder
    and, when the run folder is a lema_hub model folder, onto its card (curve, best, best-3 mean, last)."""
    from lema_hub.cards.sweep import write_checkpoint_sweep

    run = Path(cfg.checkpoints).expanduser()
    found = list_checkpoints(run)
    if cfg.prompt_templates is not None and len(cfg.prompt_templates) != 1:
        raise ValueError("With checkpoints, give one prompt template (every checkpoint is the same model).")
    prefix = model_short_name(str(run))
    style = cfg.prompt_style
    if style == "auto":  # the run's prompt style, not a guess from each checkpoint's tokenizer
        trained = read_model_meta(run).get("prompt_style")
        style = trained if trained in PROMPT_STYLES else AUTO
    sub = dataclasses.replace(
        cfg,
        checkpoints=None,
        models=[str(path) for _, path in found],
        model_labels=[f"{prefix}-step-{step}" for step, _ in found],
        prompt_style=style,
        update_model_card=False,  # checkpoints have no card; the sweep goes on the run's card below
    )
    summary = evaluate(sub)
    benchmark = summary["benchmark"]
    points = []
    for (step, path), label in zip(found, sub.model_labels):
        entry = summary["results"][f"{label}-{benchmark}{_shard_suffix(cfg)}"]
        points.append(
            {
                "step": step,
                "checkpoint": path.name,
                "accuracy": entry["accuracy"],
                "ci_low": entry["ci_low"],
                "ci_high": entry["ci_high"],
                "details_config": entry["details_config"],
            }
        )
    first = summary["results"][points[0]["details_config"]]
    sweep = {
        "benchmark": benchmark,
        "benchmark_dataset": first["benchmark_dataset"],
        "problems_split": cfg.problems_split,
        "num_problems": first["num_problems"],
        "protocol_notes": protocol_notes(first["protocol"]),
        "selection_protocol": "best on this split (the paper's; optimistic on a test split)",
        **sweep_summary(points),
    }
    if cfg.select_on:
        sweep["selected_on_dev"] = _dev_selection(cfg.select_on, {p["step"]: p for p in points})
    out_dir = Path(cfg.output_dir)
    write_checkpoint_sweep_json(out_dir, benchmark, sweep)
    card = owned_model_folder(str(run))
    if card is not None and cfg.update_model_card and not cfg.shard:
        write_checkpoint_sweep(card, benchmark, sweep)
    summary["sweep"] = sweep
    summary["model_cards"] = [str(card)] if card is not None and cfg.update_model_card else []
    return summary


def _shard_suffix(cfg: EvalConfig) -> str:
    return f"-shard-{cfg.shard.replace('/', '-of-')}" if cfg.shard else ""


def write_checkpoint_sweep_json(out_dir: Path, benchmark: str, sweep: dict[str, Any]) -> None:
    """`<output_dir>/checkpoint_sweep.json`: {benchmark: sweep} (what `select_on` reads)."""
    from lema_hub.schema import SWEEP_FILE

    path = out_dir / SWEEP_FILE
    sweeps = json.loads(path.read_text()) if path.is_file() else {}
    sweeps[benchmark] = sweep
    path.write_text(json.dumps(sweeps, indent=2, ensure_ascii=False) + "\n")
