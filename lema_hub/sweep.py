"""Model selection as the paper did it: evaluate every `checkpoint-*` of a run, and pick on a dev split."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lema_hub.cards.sweep import write_checkpoint_sweep
from lema_hub.errors import InvalidInputError
from lema_hub.evaluate import EvalConfig, evaluate, model_short_name, owned_model_folder
from lema_hub.metrics import protocol_notes
from lema_hub.models import read_model_meta
from lema_hub.schema import AUTO, PROMPT_STYLES, SWEEP_FILE

# ---------------------------------------------------------------------------------------------
# Model selection: every checkpoint of a run
# ---------------------------------------------------------------------------------------------

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-<step>` in a run folder, by step."""
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise InvalidInputError(f"checkpoints: {run} is not a folder (give a training run's output_dir).")
    found = []
    for child in run.iterdir():
        m = _CHECKPOINT.match(child.name)
        if m and child.is_dir():
            found.append((int(m.group(1)), child))
    if not found:
        raise InvalidInputError(
            f"checkpoints: {run} has no checkpoint-* folders (train with save_strategy: steps)."
        )
    return sorted(found)


def sweep_summary(points: Sequence[dict[str, Any]], top_k: int = 3) -> dict[str, Any]:
    """Best (ties: the earliest step), mean of the best `top_k` and last of per-step results."""
    if not points:
        raise InvalidInputError("sweep_summary needs at least one checkpoint result.")
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
    path = Path(select_on).expanduser() / SWEEP_FILE
    if not path.is_file():
        raise InvalidInputError(
            f"select_on: {path} does not exist (run the dev sweep into that output_dir first)."
        )
    dev_sweeps = json.loads(path.read_text())
    if len(dev_sweeps) != 1:
        raise InvalidInputError(
            f"select_on: {path} holds sweeps for {sorted(dev_sweeps)}; use a folder with one."
        )
    dev = next(iter(dev_sweeps.values()))
    step = dev["best"]["step"]
    if step not in benchmark_points:
        raise InvalidInputError(f"select_on: the dev sweep's best step {step} was not evaluated here.")
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
    run = Path(cfg.checkpoints).expanduser()
    found = list_checkpoints(run)
    if cfg.prompt_templates is not None and len(cfg.prompt_templates) != 1:
        raise InvalidInputError(
            "With checkpoints, give one prompt template (every checkpoint is the same model)."
        )
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
        entry = summary["results"][f"{label}-{benchmark}"]
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
    out_dir = Path(summary["output_dir"])  # a shard's sweep (on its problems) stays in its shard folder
    write_checkpoint_sweep_json(out_dir, benchmark, sweep)
    card = owned_model_folder(str(run))
    if cfg.shard or not cfg.update_model_card:  # a shard's sweep covers its problems only
        card = None
    if card is not None:
        write_checkpoint_sweep(card, benchmark, sweep)
    summary["sweep"] = sweep
    summary["model_cards"] = [str(card)] if card is not None else []
    return summary


def write_checkpoint_sweep_json(out_dir: Path, benchmark: str, sweep: dict[str, Any]) -> None:
    """`<output_dir>/checkpoint_sweep.json`: {benchmark: sweep} (what `select_on` reads)."""
    path = out_dir / SWEEP_FILE
    sweeps = json.loads(path.read_text()) if path.is_file() else {}
    sweeps[benchmark] = sweep
    path.write_text(json.dumps(sweeps, indent=2, ensure_ascii=False) + "\n")
