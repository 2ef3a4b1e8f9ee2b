"""`lema-hub bench-corrector`: does a corrector find the first wrong step? Measured on human labels.

Any corrector `correct` accepts (an LLM through `lema_hub.generation`, or the rule-based `reference`
corrector, whose fallback on paths without gold annotations is the arithmetic-claim check of
`lema_hub.corrector.claims`) reads step-labelled solutions, by default ProcessBench (Zheng et al. 2024), with
the same prompt, engine, request cache and parser as `correct`. Two protocols:

- **lema**: the corrector sees only wrong paths, as in the paper, with the LeMa prompt; exact
  first-error accuracy, within-one accuracy, the distribution of (predicted - labelled) step and the
  parse-failure rate.
- **processbench**: every path, with the prompt extended to allow "no incorrect step"; accuracy on
  erroneous items (predicted step == labelled step), on correct items (predicted "none"), and their
  harmonic mean F1, per split, as in ProcessBench's own evaluation code (QwenLM/ProcessBench,
  `code/run_eval_prm_trl.py`: `match = prediction == label`, label -1 for "no error"; acc over
  label != -1, acc over label == -1, F1 = 2ab/(a+b), average F1 over the splits). A prediction that
  could not be read counts as wrong, never skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lema_hub.artifacts import read_run_record, save_dataset_config
from lema_hub.correct import CorrectConfig
from lema_hub.corrector import claims
from lema_hub.corrector.parse import parse_correction
from lema_hub.corrector.prompt import (
    CorrectorPrompt,
    build_corrector_input,
    corrector_prompt,
    split_demonstrations,
)
from lema_hub.corrector.quality import (
    PROCESSBENCH_SPLITS,
    PROTOCOLS,
    RECIPE,
    accuracy_by_position,
    metrics,
)
from lema_hub.corrector.reference import reference_rules_ref, reference_step
from lema_hub.errors import InvalidInputError
from lema_hub.generation import GenerationRequest, SamplingParams, make_engine
from lema_hub.models import is_hub_id
from lema_hub.publish import finish
from lema_hub.schema import CORRECTOR_TOKENS, REFERENCE_CORRECTOR, TASKS

logger = logging.getLogger(__name__)

PROCESSBENCH = TASKS["processbench"].hub_id
# What a row's `prediction` says: a step, "no error", or why there is no usable answer.
PREDICTIONS = ("step", "no_error", "parse_failure", "generation_failed")
NO_ERROR_INSTRUCTION = (
    'If every step of the original solution is correct, answer "Incorrect Step: None." and nothing else.'
)
_NO_ERROR_RE = re.compile(
    r"^[\s>#*_:\-]*(?:incorrect\s+step\s*[:\-]?\s*)?[\s*_]*"
    r"(?:none\b|no\s+(?:incorrect|wrong|error)|n/a\b|-1\b|all\s+(?:the\s+)?steps\s+are\s+correct|"
    r"every\s+step\s+is\s+correct|there\s+is\s+no\s+(?:incorrect|wrong|error))",
    re.I,
)


@dataclass
class BenchCorrectorConfig(CorrectConfig):
    """`lema-hub bench-corrector`: any `correct` corrector config, plus which labelled data to read.

    It inherits every `correct` key, so a `correct` recipe YAML runs as is; the keys about mistakes
    and acceptance (`mistakes`, `num_attempts`, `reference_qa`, `check_arithmetic`, ...) are unused.
    """

    data: str = field(
        default=PROCESSBENCH,
        metadata={
            "help": f"{PROCESSBENCH} (Hub), a folder of <split>.json/.jsonl/.parquet files "
            "(e.g. ../shared/data/processbench), or one such file"
        },
    )
    data_splits: list[str] | None = field(
        default=None, metadata={"help": "Splits to run (default: all; ProcessBench: its four)"}
    )
    items_limit: int | None = field(default=None, metadata={"help": "First N items per split (smoke runs)"})
    id_column: str = field(default="id", metadata={"help": "Column map: item id"})
    question_column: str = field(default="problem", metadata={"help": "Column map: the problem text"})
    steps_column: str = field(default="steps", metadata={"help": "Column map: list of step strings"})
    label_column: str = field(default="label", metadata={"help": "Column map: the first wrong step"})
    label_base: int = field(default=0, metadata={"help": "Index base of the labels: 0 (ProcessBench) or 1"})
    no_error_label: int = field(default=-1, metadata={"help": "Label value meaning 'no wrong step'"})
    protocols: list[str] = field(
        default_factory=lambda: list(PROTOCOLS), metadata={"help": "lema and/or processbench"}
    )
    processbench_prompt_file: str | None = field(
        default=None,
        metadata={"help": "Prompt for the processbench protocol; default: the LeMa prompt + a 'None' rule"},
    )
    price_table: dict | None = field(
        default=None, metadata={"help": '$ per million tokens: {"model": {"input": x, "output": y}}'}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise InvalidInputError(
                f"protocols must be a non-empty subset of {list(PROTOCOLS)}, got {self.protocols}."
            )
        if self.label_base not in (0, 1):
            raise InvalidInputError(f"label_base must be 0 or 1, got {self.label_base}.")
        if self.items_limit is not None and self.items_limit < 1:
            raise InvalidInputError(f"items_limit must be >= 1, got {self.items_limit}.")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def _read_file(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        rows = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"bench-corrector: {path} is not valid JSON: {exc}") from None
    if not isinstance(rows, list):
        raise InvalidInputError(f"bench-corrector: {path} must hold a JSON array of items.")
    return rows


def _raw_splits(cfg: BenchCorrectorConfig) -> dict[str, tuple[str, list[dict]]]:
    """{split: (where it came from, rows)} from a local folder/file or the Hub."""
    path = Path(cfg.data)
    wanted = cfg.data_splits
    if path.is_dir() or path.is_file():
        files = (
            sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl", ".parquet"))
            if path.is_dir()
            else [path]
        )
        if not files:
            raise InvalidInputError(f"bench-corrector: {path} has no .json/.jsonl/.parquet files.")
        available = {p.stem: p for p in files}
        names = wanted or list(available)
        missing = [n for n in names if n not in available]
        if missing:
            raise InvalidInputError(
                f"bench-corrector: data_splits {missing} not in {path} (it has {sorted(available)})."
            )
        return {n: (str(available[n]), _read_file(available[n])) for n in names}
    if path.suffix in (".json", ".jsonl", ".parquet") or cfg.data.startswith((".", "/")):
        raise InvalidInputError(f"bench-corrector: data {cfg.data!r} does not exist.")
    import datasets

    names = wanted or (list(PROCESSBENCH_SPLITS) if cfg.data == PROCESSBENCH else None)
    if names is None:
        names = list(datasets.get_dataset_split_names(cfg.data))
    # ProcessBench keeps its four subsets as splits of one config (`load_dataset(..., split="gsm8k")`).
    out = {}
    for n in names:
        try:
            out[n] = (f"{cfg.data}[{n}]", [dict(r) for r in datasets.load_dataset(cfg.data, split=n)])
        except Exception as exc:  # noqa: BLE001 - offline, no such repo or split: one clear line
            raise InvalidInputError(
                f"bench-corrector: could not load split {n!r} of {cfg.data!r} from the Hub "
                f"({type(exc).__name__}: {str(exc)[:200]})."
            ) from None
    return out


def load_items(cfg: BenchCorrectorConfig) -> dict[str, list[dict]]:
    """{split: items}, each item with `labelled_step` (1-based, None when every step is correct)."""
    out: dict[str, list[dict]] = {}
    # ProcessBench (Hub id or its local copy) is named by its Hub id; other local data is "original".
    pb = cfg.data == PROCESSBENCH or Path(cfg.data).name.lower() == "processbench"
    source = PROCESSBENCH if pb else (cfg.data if is_hub_id(cfg.data) else "original")
    for split, (where, rows) in _raw_splits(cfg).items():
        items = []
        for i, row in enumerate(rows[: cfg.items_limit] if cfg.items_limit else rows):
            if not isinstance(row, dict):
                raise InvalidInputError(f"bench-corrector: {where} item {i} is not an object.")
            for col in (cfg.question_column, cfg.steps_column, cfg.label_column):
                if col not in row:
                    raise InvalidInputError(
                        f"bench-corrector: {where} item {i} has no column {col!r} (columns: {sorted(row)}); "
                        "map it with --question_column/--steps_column/--label_column."
                    )
            steps, label = row[cfg.steps_column], row[cfg.label_column]
            if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
                raise InvalidInputError(
                    f"bench-corrector: {where} item {i}: {cfg.steps_column!r} must be a non-empty list of strings."
                )
            if isinstance(label, bool) or not isinstance(label, int):
                raise InvalidInputError(
                    f"bench-corrector: {where} item {i}: label {label!r} is not an integer."
                )
            if label == cfg.no_error_label:
                labelled = None
            elif 0 <= label - cfg.label_base < len(steps):
                labelled = label - cfg.label_base + 1
            else:
                raise InvalidInputError(
                    f"bench-corrector: {where} item {i}: label {label} is not a step of its {len(steps)} "
                    f"steps (label_base {cfg.label_base}, no_error_label {cfg.no_error_label})."
                )
            items.append(
                {
                    "split": split,
                    "id": str(row.get(cfg.id_column, f"{split}-{i}")),
                    "generator": str(row.get("generator") or ""),
                    "source": source,
                    "question": str(row[cfg.question_column]),
                    "steps": list(steps),
                    "label": int(label),
                    "labelled_step": labelled,
                    "final_answer_correct": row.get("final_answer_correct"),
                }
            )
        if not _SPLIT_NAME.match(split):
            raise InvalidInputError(f"bench-corrector: split name {split!r} must be letters, digits and '_'.")
        out[split] = items
    if not any(out.values()):
        raise InvalidInputError(f"bench-corrector: {cfg.data} has no items.")
    return out


_SPLIT_NAME = re.compile(r"^\w+$")


# --------------------------------------------------------------------------------------------------
# Prompts and predictions
# --------------------------------------------------------------------------------------------------


def no_error_prompt(prompt: CorrectorPrompt) -> CorrectorPrompt:
    """The LeMa prompt with one more instruction line allowing "no incorrect step" (same demonstrations)."""
    instruction, demos = split_demonstrations(prompt.text)
    text = "\n\n".join([f"{instruction}\n{NO_ERROR_INSTRUCTION}", *demos]).replace("\n", prompt.newline)
    data = text.encode("utf-8")
    return CorrectorPrompt(
        name=f"{prompt.name}+no-error", text=text, sha=hashlib.sha256(data).hexdigest()[:12]
    )


def _task_of(split: str, cfg: BenchCorrectorConfig) -> str:
    if cfg.corrector_task:
        return cfg.corrector_task
    return "gsm8k" if split.lower().startswith(("gsm8k", "gsm")) else "math"


def read_prediction(raw: str | None, num_steps: int, task: str) -> dict[str, Any]:
    """`prediction`, `predicted_step`, `parse_reason`, `parse_detail` of one corrector output."""
    if raw is None:
        return _pred("generation_failed", None, "generation_failed", "no text")
    if _NO_ERROR_RE.match(raw.replace("**", "")):
        return _pred("no_error", None, None, "")
    parsed = parse_correction(raw, num_steps, task)
    k = parsed.incorrect_step
    if k is not None and 1 <= k <= num_steps:
        # Only the located step is scored; a later format problem is kept for reference.
        return _pred("step", k, parsed.reject_reason, parsed.detail)
    return _pred("parse_failure", None, parsed.reject_reason or "parse_error", parsed.detail)


def _pred(kind: str, step: int | None, reason: str | None, detail: str) -> dict[str, Any]:
    return {"prediction": kind, "predicted_step": step, "parse_reason": reason, "parse_detail": detail}


def _scored(item: dict, protocol: str, pred: dict) -> dict:
    row = {**item, "protocol": protocol, **pred}
    label, k = item["labelled_step"], pred["predicted_step"]
    if label is None:
        row["correct"] = pred["prediction"] == "no_error"
        row["delta"] = None
    else:
        row["correct"] = pred["prediction"] == "step" and k == label
        row["delta"] = k - label if k is not None else None
    return row


def _reference_rows(items: list[dict], protocol: str) -> list[dict]:

    ref = f"{reference_rules_ref()}+{claims.rules_ref()}"
    rows = []
    for it in items:
        # The item as a `correct` problem: no gold solution, so the reference locator falls back to
        # the arithmetic check of the steps.
        k = reference_step({"question": it["question"], "source": it["split"]}, it["steps"])
        located = claims.first_false_step(it["steps"]) if k is not None else None
        raw = f" Step {k}. {located[1].describe()}" if located and located[0] == k else ""
        pred = _pred("step", k, None, "") if k is not None else _pred("no_error", None, None, "")
        rows.append(
            {
                **_scored(it, protocol, pred),
                "corrector": REFERENCE_CORRECTOR,
                "corrector_prompt": ref,
                "raw_output": raw,
                "finish_reason": None,
                CORRECTOR_TOKENS.prompt: 0,
                CORRECTOR_TOKENS.completion: 0,
            }
        )
    return rows


def bench_rows(
    cfg: BenchCorrectorConfig, items: dict[str, list[dict]], output_dir: Path
) -> tuple[list[dict], dict]:
    """One scored row per (protocol, item); the engine runs every LLM request of every split at once."""
    jobs = [
        (protocol, it)
        for protocol in cfg.protocols
        for split_items in items.values()
        for it in split_items
        if protocol == "processbench" or it["labelled_step"] is not None
    ]
    tokens: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}
    if cfg.backend == REFERENCE_CORRECTOR:
        rows = []
        for protocol in cfg.protocols:
            rows += _reference_rows([it for p, it in jobs if p == protocol], protocol)
        return rows, tokens

    prompts: dict[tuple[str, str], CorrectorPrompt] = {}

    def prompt_for(protocol: str, task: str) -> CorrectorPrompt:
        if (protocol, task) not in prompts:
            base = corrector_prompt(task, cfg.corrector_prompt_file)
            if protocol == "processbench":
                base = (
                    corrector_prompt(task, cfg.processbench_prompt_file)
                    if cfg.processbench_prompt_file
                    else no_error_prompt(base)
                )
            prompts[(protocol, task)] = base
        return prompts[(protocol, task)]

    sampling = SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_tokens,
        n=1,
        seed=cfg.seed,
        stop=["\nQuestion:", "\r\nQuestion:"],
    )
    requests, owners = [], {}
    for protocol, it in jobs:
        task = _task_of(it["split"], cfg)
        p = prompt_for(protocol, task)
        content = build_corrector_input(p, it["question"], it["steps"], cfg.prompt_style)
        rid = hashlib.sha256(repr((protocol, it["split"], it["id"], content)).encode()).hexdigest()[:16]
        rid = f"bench-{rid}"
        if rid in owners:
            raise InvalidInputError(
                f"bench-corrector: item {it['id']!r} of split {it['split']!r} appears twice."
            )
        requests.append(GenerationRequest(request_id=rid, prompt=content, sampling=sampling))
        owners[rid] = (protocol, it, p, task)
    engine_cfg = cfg.engine_config(cfg.backend, cfg.model, cfg.prompt_style, progress=cfg.progress)
    key = hashlib.sha256(repr((cfg.backend, cfg.model)).encode()).hexdigest()[:12]
    # The engine's request cache (never pushed) makes a killed run resume without re-asking.
    engine = make_engine(engine_cfg, cache_path=output_dir / ".cache" / f"bench-{key}.jsonl")
    try:
        results = engine.generate(requests, desc="benchmarking the corrector")
        tokens["engine"] = dict(engine.last_summary)
    finally:
        engine.close()
    rows = []
    for res in results:
        protocol, it, p, task = owners[res.request_id]
        tokens["requests"] += 1
        tokens["prompt_tokens"] += res.prompt_tokens or 0
        tokens["completion_tokens"] += res.completion_tokens or 0
        pred = read_prediction(res.text if res.ok else None, len(it["steps"]), task)
        if not res.ok:
            pred["parse_detail"] = res.error or "no text"
        rows.append(
            {
                **_scored(it, protocol, pred),
                "corrector": cfg.model or "",
                "corrector_prompt": p.ref,
                "raw_output": res.text or "",
                "finish_reason": res.finish_reason,
                CORRECTOR_TOKENS.prompt: res.prompt_tokens,
                CORRECTOR_TOKENS.completion: res.completion_tokens,
            }
        )
    return rows, tokens


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def _default_output_dir(cfg: BenchCorrectorConfig) -> Path:
    name = re.sub(r"[^\w.\-]+", "_", (cfg.model or REFERENCE_CORRECTOR).split(":")[-1].strip("/"))
    return Path("outputs") / RECIPE / name


def _check_output_dir(output_dir: Path) -> None:

    _, summaries = read_run_record(output_dir) if output_dir.is_dir() else ({}, {})
    others = sorted(k for k in summaries if k != RECIPE)
    if others:
        raise InvalidInputError(
            f"bench-corrector: output_dir {output_dir} holds a `{others[0]}` artifact; "
            "write the benchmark to its own folder (--output_dir)."
        )


def bench_corrector(cfg: BenchCorrectorConfig) -> dict[str, Any]:
    """Run the corrector on the labelled items; write details per protocol, a summary and a card."""

    t0 = time.time()
    output_dir = Path(cfg.output_dir) if cfg.output_dir else _default_output_dir(cfg)
    _check_output_dir(output_dir)
    items = load_items(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    logger.info(
        "bench-corrector: %s on %s (%s)",
        cfg.model or cfg.backend,
        cfg.data,
        ", ".join(f"{s}: {len(v)}" for s, v in items.items()),
    )
    rows, tokens = bench_rows(cfg, items, output_dir)
    scores = metrics(rows)
    summary: dict[str, Any] = {
        "data": cfg.data,
        "splits": {s: len(v) for s, v in items.items()},
        "corrector": cfg.model or REFERENCE_CORRECTOR,
        "backend": cfg.backend,
        "corrector_prompt": sorted({r["corrector_prompt"] for r in rows}),
        "protocols": list(cfg.protocols),
        "rows": len(rows),
        **scores,
        "accuracy_by_position": accuracy_by_position(rows),
        "tokens": tokens,
        "output_dir": str(output_dir),
        "wall_s": round(time.time() - t0, 2),
    }
    for protocol in cfg.protocols:
        by_split: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            if r["protocol"] == protocol:
                by_split[r["split"]].append(r)
        if by_split:
            save_dataset_config(output_dir, protocol, dict(by_split))
    finish(output_dir, "corrector_bench", cfg, summary, recipe=RECIPE, prices=cfg.price_table)
    pb = scores.get("processbench", {})
    logger.info(
        "bench-corrector: lema exact %s, processbench average F1 %s",
        scores.get("lema", {}).get("all", {}).get("exact"),
        pb.get("average_f1"),
    )
    return summary


__all__ = [
    "BenchCorrectorConfig",
    "PROTOCOLS",
    "bench_corrector",
    "load_items",
    "no_error_prompt",
    "read_prediction",
]
