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
import logging
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lema_hub import distributed
from lema_hub.answers import gsm8k_number  # the same number reading as exact grading
from lema_hub.artifacts import ConfigGroup, HubArgs, save_dataset_config
from lema_hub.cards.model import write_eval_results, write_model_card
from lema_hub.configs import config_to_dict
from lema_hub.errors import InvalidInputError
from lema_hub.formats import (
    NAMED_TEMPLATES,
    PromptTemplate,
    as_messages,
    load_prompt_template,
    problem_prompt,
)
from lema_hub.generation import GenerationRequest, SamplingParams
from lema_hub.generation.types import EndpointArgs
from lema_hub.grading import EXTRACTIONS, grade_rows
from lema_hub.metrics import comparison_table, model_card_table, protocol_notes, summarize_rows
from lema_hub.models import (
    base_model_hub_id,
    cache_dir,
    is_adapter,
    is_hub_id,
    load_model,
    load_tokenizer,
    read_model_meta,
    resolve_model,
    resolve_prompt_style,
)
from lema_hub.predictions import match_predictions, read_records
from lema_hub.problems import Problem, ProblemArgs, eval_only_source, load_problems, load_report, task_of
from lema_hub.publish import finish
from lema_hub.run_guard import RequestOutcome, RequestsFailed, earlier_requests, guard_publish
from lema_hub.schema import (
    BACKENDS,
    DEFAULT_MODEL,
    EMBEDDED_PREFIX,
    MATH_TASKS,
    MODEL_META_FILE,
    PROMPT_STYLE_CHOICES,
    TINY_PREFIX,
    conform,
    eval_detail_features,
    task_dataset_id,
)

logger = logging.getLogger(__name__)


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
    choice_mapping: str = field(
        default="lema_hub",
        metadata={
            "help": "Multiple choice (CSQA): how a stated answer is matched to a candidate. lema_hub (ours): "
            "a candidate as written, a bare label (B, (B), option B) by position, the one candidate named in "
            "the answer, or the unique nearest candidate within edit distance 0.4 of its length, else no match "
            "(wrong) | paper: every answer to its nearest candidate by edit distance (ties: the first), as the "
            "paper did. Recorded in the results."
        },
    )
    merge_shards: bool = field(
        default=False,
        metadata={
            "help": "Merge the finished <output_dir>-shard-* folders (from --shard i/n, same command) into "
            "output_dir as one unsharded run: one details config per model, metrics over all rows, the "
            "model card updated, one push; nothing is generated."
        },
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

    if name.startswith((EMBEDDED_PREFIX, TINY_PREFIX)):
        return None
    path = Path(name).expanduser()
    if not path.is_dir() or not (path / MODEL_META_FILE).is_file():
        return None
    if path.resolve().is_relative_to(cache_dir().resolve()):
        return None
    return path


def _write_minimal_model_card(folder: Path) -> None:

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


def model_templates(cfg: EvalConfig) -> list[PromptTemplate]:
    """One template per model in `cfg.models` (a single configured template applies to all)."""
    specs = cfg.prompt_templates or ["lema"]
    if len(specs) == 1:
        specs = specs * len(cfg.models)
    return [load_prompt_template(s) for s in specs]


def _build_prompt(problem: Problem, style: str, template: PromptTemplate | None = None) -> str | list[dict]:

    text = problem_prompt(problem, template)
    return as_messages(text) if style == "chat" else text


def _choice_protocol(
    problems: Sequence[Problem], template: PromptTemplate, choice_mapping: str = "lema_hub"
) -> dict[str, Any] | None:
    """Multiple-choice problems (CSQA) are prompted with the paper's CSQA prompt whatever the model's
    template (the templates are math prompts): the record of the prompt used, else None."""
    if not any(p.candidates for p in problems):
        return None
    from lema_hub.csqa import prompt_record

    if template.name != "lema-cot":
        logger.warning(
            "prompt template %s is a math template: CSQA uses the paper's CSQA prompt", template.name
        )
    return {**prompt_record(), "choice_mapping": choice_mapping}


def choice_stops() -> list[str]:
    """Where a base model starts the next CSQA example after its answer (plain prompts)."""
    from lema_hub.csqa import PLAIN_STOP

    return list(PLAIN_STOP)


def mapping_counts(rows: Sequence[dict[str, Any]], rule: str | None = None) -> dict[str, Any] | None:
    """How multiple-choice answers were matched to a candidate (the paper does not report it):
    answered rows, rows not a candidate as written (`mapping_needed`, its rate), and the rows of each
    kind (`csqa.MAPPING_KINDS`: exact, label, contains, edit_distance, no_match) under `rule`. None for math."""
    from lema_hub.csqa import MAPPING_KINDS

    answered = [r for r in rows if r.get("mapping_needed") is not None]
    if not answered:
        return None
    mapped = sum(bool(r["mapping_needed"]) for r in answered)
    kinds = {k: sum(r.get("mapping") == k for r in answered) for k in MAPPING_KINDS}
    return {
        "rule": rule,
        "answered": len(answered),
        "mapping_needed": mapped,
        "mapping_rate": mapped / len(answered),
        "by_kind": kinds,
    }


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _validate(cfg: EvalConfig) -> None:
    if cfg.backend not in BACKENDS:
        raise InvalidInputError(f"backend must be one of {BACKENDS}, got {cfg.backend!r}.")
    if cfg.prompt_style not in PROMPT_STYLE_CHOICES:
        raise InvalidInputError(
            f"prompt_style must be one of {PROMPT_STYLE_CHOICES}, got {cfg.prompt_style!r}."
        )
    if not cfg.models:
        raise InvalidInputError("models must name at least one model.")
    if cfg.model_labels is not None and len(cfg.model_labels) != len(cfg.models):
        raise InvalidInputError(
            f"model_labels has {len(cfg.model_labels)} names for {len(cfg.models)} models."
        )
    if cfg.num_samples < 1:
        raise InvalidInputError(f"num_samples must be >= 1, got {cfg.num_samples}.")

    if cfg.extraction not in EXTRACTIONS:
        raise InvalidInputError(f"extraction must be one of {EXTRACTIONS}, got {cfg.extraction!r}.")
    if cfg.num_samples > 1 and cfg.temperature == 0:
        raise InvalidInputError(
            "num_samples > 1 needs temperature > 0 (greedy decoding gives n identical samples)."
        )
    if cfg.max_new_tokens < 1:
        raise InvalidInputError(f"max_new_tokens must be >= 1, got {cfg.max_new_tokens}.")
    if cfg.backend in ("openai", "tgi") and not cfg.base_urls:
        raise InvalidInputError(f"backend {cfg.backend!r} needs base_urls (the endpoint(s) to query).")
    if cfg.predictions_path is not None and len(cfg.models) > 1:
        raise InvalidInputError(
            "predictions_path grades one model's completions: give exactly one entry in models."
        )
    if cfg.prompt_templates is not None:
        if len(cfg.prompt_templates) not in (1, len(cfg.models)):
            raise InvalidInputError(
                f"prompt_templates has {len(cfg.prompt_templates)} entries for {len(cfg.models)} models "
                "(give one for all models or one per model)."
            )
        for t in cfg.prompt_templates:
            load_prompt_template(t)  # a bad name or file fails before any model is loaded
    from lema_hub.csqa import CHOICE_MAPPINGS

    if cfg.choice_mapping not in CHOICE_MAPPINGS:
        raise InvalidInputError(
            f"choice_mapping must be one of {CHOICE_MAPPINGS}, got {cfg.choice_mapping!r}."
        )
    if cfg.answer_rounding is not None and not 0 <= cfg.answer_rounding <= 10:
        raise InvalidInputError(
            f"answer_rounding must be a number of decimals in 0..10, got {cfg.answer_rounding}."
        )
    distributed.check_shard_args(cfg.shard, cfg.merge_shards)


def _labels(cfg: EvalConfig) -> list[str]:
    labels = list(cfg.model_labels) if cfg.model_labels else [model_short_name(m) for m in cfg.models]
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return out


def cut_at_stop(text: str, stop: Sequence[str] | None) -> dict[str, Any]:
    """A predictions-file completion cut before its first stop string, as generation would have
    stopped (finish_reason "stop" when cut, else null: the file does not say)."""
    cuts = [i for i in (text.find(s) for s in stop or () if s) if i != -1]
    if not cuts:
        return {"text": text, "finish_reason": None}
    return {"text": text[: min(cuts)], "finish_reason": "stop"}


def _protocol(
    cfg: EvalConfig, style: str | None, stop: list[str] | None, predictions: bool
) -> dict[str, Any]:
    if predictions:  # nothing was generated here: record only what was done
        return {
            "shots": 0,
            "prompt": "lema-cot",
            "prompt_style": style,
            "decoding": "predictions file",
            "temperature": None,
            "top_p": None,
            "max_new_tokens": None,
            "num_samples": None,  # the file's rows per problem: samples_per_problem in the results
            "seed": None,
            "stop": stop,
            "backend": "predictions-file",
            "extraction": cfg.extraction,
            "metric": "pass@1 (from the file's completions per problem)",
            "answer_rounding": cfg.answer_rounding,
        }
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
            request_id=p.problem_id, prompt=_build_prompt(p, style, template), sampling=sampling
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


def _grade_rows(
    rows: list[dict[str, Any]],
    workers: int | None,
    extraction: str = "strict",
    choice_mapping: str = "lema_hub",
) -> None:
    """Fill predicted_answer / verdict / grade_reason in place, grading each task's rows together."""

    todo = []
    for r in rows:
        if r["completion"] is None:
            r.update(predicted_answer=None, verdict="ungradeable", grade_reason="generation failed")
        else:
            todo.append(r)
    for r, v in zip(
        todo, grade_rows(todo, extraction=extraction, workers=workers, choice_mapping=choice_mapping)
    ):
        r.update(
            predicted_answer=v.predicted_answer,
            verdict=v.verdict,
            grade_reason=v.reason,
            mapped_answer=v.mapped_answer,
            mapping_needed=v.mapping_needed,
            mapping=v.mapping,
        )


def _details_rows(
    problems: Sequence[Problem],
    outputs: Sequence[Sequence[Any]],
    model: str,
    label: str,
    style: str | None,
    sampling: dict[str, Any] | None,
    template: PromptTemplate | None = None,
) -> list[dict[str, Any]]:

    rows = []
    for p, outs in zip(problems, outputs):
        prompt = problem_prompt(p, template)
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


def mapping_note(mapping: dict[str, Any] | None) -> str:
    """`; choices matched by the lema_hub rule: 3 of 8 answers not a candidate as written (2 labels,
    1 no match)` for card notes (multiple choice), or nothing."""
    if not mapping:
        return ""
    kinds = {k: n for k, n in (mapping.get("by_kind") or {}).items() if n and k != "exact"}
    detail = f" ({', '.join(f'{n} {k}' for k, n in kinds.items())})" if kinds else ""
    rule = f" by the {mapping['rule']} rule" if mapping.get("rule") else ""
    return (
        f"; choices matched{rule}: {mapping['mapping_needed']} of {mapping['answered']} answers "
        f"not a candidate as written{detail}"
    )


_OUTPUT_COLUMNS = ("sample_index", "finish_reason", "prompt_tokens", "completion_tokens", "error")
_SHARDS_AGREE_ON = ("problems", "problems_split", "problems_limit", "protocol")


def _load_results(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass(frozen=True)
class ShardedConfig:
    """One details config gathered from every finished shard of a `--shard i/n` evaluation."""

    outputs: list[list[dict[str, Any]]]  # per problem, in the unsharded order: its samples by index
    wall_s: float  # the shards' wall times added up


def read_eval_shards(
    cfg: EvalConfig, out_dir: Path, problems: Sequence[Problem], configs: dict[str, str]
) -> tuple[dict[str, ShardedConfig], dict[str, Any], int]:
    """The completions of each `{config: model}` from every finished `<out_dir>-shard-*` folder, their
    request records added up, and the number of shards.

    Refused before anything is written: a missing or unfinished shard, or one whose requests partly
    failed (`distributed.read_shards`); a shard that did not evaluate a config; shards that disagree
    on a config's model, problems or protocol, or whose sampling is not this command's; a shard set
    that does not hold exactly this command's problems.
    """
    shards = distributed.read_shards(out_dir, "evaluate")
    n = len(shards)
    order = {p.problem_id for p in problems}
    sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens}
    sampling.update(num_samples=cfg.num_samples, seed=cfg.seed)
    merged: dict[str, ShardedConfig] = {}
    requests: dict[str, Any] = {}
    for config, model in configs.items():
        entries = []
        for i, shard in enumerate(shards):
            entry = (shard.summary.get("results") or {}).get(config)
            if not isinstance(entry, dict) or distributed.parse_shard_spec(entry.get("shard")) != (i, n):
                raise InvalidInputError(
                    f"evaluate: shard {shard.folder} holds no {config} results of shard {i}/{n}; "
                    "run it with this command's models and benchmark, then merge."
                )
            entries.append(distributed.FinishedShard(shard.folder, entry))
        # Shards that disagree are refused (shard_value), and so are shards of another command.
        agreed = {k: distributed.shard_value(entries, k) for k in ("model", *_SHARDS_AGREE_ON)}
        protocol = agreed["protocol"] or {}
        other = [
            f"{k}={protocol.get(k)!r}"
            for k, v in sampling.items()
            if protocol.get(k) != v and protocol.get("backend") != "predictions-file"  # nothing sampled
        ]
        if agreed["model"] != public_model_name(model):
            other.insert(0, f"model {agreed['model']!r}")
        if other:
            raise InvalidInputError(
                f"evaluate: the shards of {config} ran with {', '.join(other)}; merge with their command."
            )
        by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for shard in shards:
            for r in shard.rows(config, "test"):
                by_id[r["problem_id"]].append({"text": r["completion"], **{k: r[k] for k in _OUTPUT_COLUMNS}})
        twice = [pid for pid, outs in by_id.items() if len({o["sample_index"] for o in outs}) < len(outs)]
        held = len(order & by_id.keys())
        if held < len(order) or len(by_id) > held or twice:
            raise InvalidInputError(
                f"evaluate: the shards of {out_dir} hold {held} of the {len(order)} problems of {config}"
                f" ({len(by_id) - held} others, {len(twice)} in two shards); rerun them with this command."
            )
        outputs = [sorted(by_id[p.problem_id], key=lambda o: o["sample_index"]) for p in problems]
        wall = sum(float(e.summary.get("wall_time_s") or 0) for e in entries)
        merged[config] = ShardedConfig(outputs, wall)
        requests.update(distributed.merged_requests(shards, config) or {})
    # The settings no check above covers (extraction, prompt templates, answer rounding ...).
    distributed.check_merge_config(shards, "evaluate", cfg, record=_run_record(cfg))
    return merged, requests, n


def _run_record(cfg: EvalConfig) -> dict[str, Any]:
    """The config an evaluation records (`finish` redacts credentials): no output or cache folder,
    local paths by their last component only (a pushable artifact), the models' public names."""
    record = config_to_dict(cfg)
    for key in ("output_dir", "cache_dir"):
        record.pop(key, None)
    for key in ("problems_path", "predictions_path", "select_on"):
        if record.get(key):
            record[key] = Path(record[key]).name
    if record.get("prompt_templates"):
        record["prompt_templates"] = [
            t if t in NAMED_TEMPLATES else Path(t).name for t in record["prompt_templates"]
        ]
    record["models"] = [public_model_name(m) for m in cfg.models]
    return record


@distributed.stage
def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every model in `cfg.models` on the configured problems; return the summary.

    Returns {"output_dir", "benchmark", "results": {config_name: metrics}, "comparison": markdown,
    "model_cards": [folders updated]}.

    With `shard: i/n`, every n-th problem into `<output_dir>-shard-i-of-n` (no model card, no push);
    with `merge_shards`, the finished shards' completions, graded and written as one unsharded run.
    """

    if cfg.checkpoints:
        from lema_hub.sweep import evaluate_checkpoints  # deferred: lema_hub.sweep imports this module

        return evaluate_checkpoints(cfg)
    _validate(cfg)
    problems = load_problems(cfg)
    if not problems and not cfg.shard:  # a shard's slice may be empty (more shards than problems)
        raise InvalidInputError(f"No problems loaded from {cfg.problems!r} split {cfg.problems_split!r}.")
    source_report = _source_report(cfg)
    out_dir = distributed.shard_output(cfg.output_dir, cfg.shard)
    benchmark = benchmark_of(cfg)
    sharded: dict[str, ShardedConfig] = {}
    shard_requests: dict[str, Any] = {}
    if cfg.merge_shards:  # everything is checked before anything is written
        names = {f"{label}-{benchmark}": m for m, label in zip(cfg.models, _labels(cfg))}
        sharded, shard_requests, merged_shards = read_eval_shards(cfg, out_dir, problems, names)
    out_dir.mkdir(parents=True, exist_ok=True)
    # `.cache/` inside the folder is never pushed (hub.PUSH_IGNORE) and keeps the run resumable.
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / ".cache" / "generation"
    if cfg.cache_dir and cfg.shard:  # a cache_dir shared by the shards: each its own subfolder
        cache_root = cache_root / out_dir.name
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    all_results = _load_results(out_dir)
    run_results: dict[str, dict[str, Any]] = {}
    cards: list[str] = []
    requests: dict[str, Any] = shard_requests  # a merge's: what its shards asked
    refused: list[RequestsFailed] = []

    # Every model's details config is committed at once when the loop ends (a kill leaves the old
    # ones, never some models new and others old); the model cards are written after that commit.
    model_cards: list[tuple[Path, dict[str, Any], dict[str, Any]]] = []
    with ConfigGroup(out_dir) as group:
        for model, label, template in zip(cfg.models, _labels(cfg), model_templates(cfg)):
            started = time.perf_counter()
            if cfg.merge_shards:  # its wall time: every shard's (one process's time), then the merge's
                started -= sharded[f"{label}-{benchmark}"].wall_s
            predictions = cfg.predictions_path is not None
            choice = _choice_protocol(problems, template, cfg.choice_mapping)  # CSQA: the paper's CSQA prompt
            default_stop = choice_stops() if choice else template.stops()
            sampling: dict[str, Any] | None
            if predictions:
                # How the file's completions were made is the file's business: its prompt style is unknown
                # unless given, nothing was sampled here, and the template's stops (unless prompt_style is
                # chat, or `stop` says otherwise) cut them where generation would have stopped.
                style = None if cfg.prompt_style == "auto" else cfg.prompt_style
                stop = cfg.stop if cfg.stop is not None else (default_stop if style != "chat" else None)
                sampling = None
            else:
                style = resolve_prompt_style(cfg.prompt_style, model, cfg.backend)
                stop = cfg.stop if cfg.stop is not None else (default_stop if style == "plain" else None)
                sampling = {
                    "temperature": cfg.temperature,
                    "top_p": cfg.top_p,
                    "max_tokens": cfg.max_new_tokens,
                    "seed": cfg.seed,
                }
            protocol = {**_protocol(cfg, style, stop, predictions), **template.record(), **(choice or {})}
            config_name = f"{label}-{benchmark}"
            outcome = None
            if cfg.merge_shards:  # the shards' completions in problem order, graded below as one run's
                outputs = sharded[config_name].outputs
            elif predictions:
                texts = match_predictions(
                    problems, read_records(cfg.predictions_path), cfg.predictions_column
                )
                outputs = [[cut_at_stop(t, stop) for t in per_problem] for per_problem in texts]
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
            rows = _details_rows(
                problems, outputs, public_model_name(model), label, style, sampling, template
            )
            _grade_rows(rows, cfg.grading_workers, cfg.extraction, cfg.choice_mapping)
            if cfg.answer_rounding is not None:
                apply_answer_rounding(rows, cfg.answer_rounding)
            details = eval_detail_features()
            save_dataset_config(
                out_dir, config_name, {"test": conform(rows, details)}, features=details, group=group
            )

            metrics = summarize_rows(rows, cfg.confidence)
            mapping = mapping_counts(rows, cfg.choice_mapping if choice else None)
            if mapping is not None:
                metrics["choice_mapping"] = mapping
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
                # predictions-file completions cut at a stop string (a merge's: its shards' rows)
                **({"cut_at_stop": sum(r["finish_reason"] == "stop" for r in rows)} if predictions else {}),
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
                    "notes": protocol_notes(protocol)
                    + source_filter_note(source_report)
                    + mapping_note(mapping),
                }
                model_cards.append((folder, card_entry, entry))

    for folder, card_entry, entry in model_cards:
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
    if cfg.merge_shards:
        summary["merged_shards"] = merged_shards
    earlier = {k: earlier_requests(out_dir, "evaluate", k) for k in all_results}
    summary["requests"] = {**{k: v for k, v in earlier.items() if v is not None}, **requests}
    record = _run_record(cfg)
    whole = not cfg.shard  # a shard (maybe empty) gets no card and is never pushed; its merge is
    pushed = finish(
        out_dir, "eval_details", cfg, summary, recipe="evaluate", record=record, card=whole, push=whole
    )
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
