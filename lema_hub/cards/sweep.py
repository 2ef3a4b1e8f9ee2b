"""The checkpoint-sweep section of a model card (`checkpoint_sweep.json`, one block per benchmark)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lema_hub.artifacts import _atomic_write_text, _safe_name, _scrub_string
from lema_hub.cards.plots import _plot
from lema_hub.schema import README, SWEEP_FILE

_SWEEP_START, _SWEEP_END = (
    "<!-- lema-hub:checkpoint-sweep:start -->",
    "<!-- lema-hub:checkpoint-sweep:end -->",
)


def _carry_sweep_section(existing: str, text: str) -> str:
    """A re-rendered card keeps the checkpoint-sweep section of the card it replaces."""
    if _SWEEP_START not in existing or _SWEEP_END not in existing or _SWEEP_START in text:
        return text
    a, b = existing.index(_SWEEP_START), existing.index(_SWEEP_END) + len(_SWEEP_END)
    return text.rstrip("\n") + "\n\n" + existing[a:b] + "\n"


def _sweep_plot(folder: Path, benchmark: str, sweep: dict[str, Any]) -> str | None:
    points = sweep["points"]

    def draw(ax):
        steps = [p["step"] for p in points]
        acc = [100 * p["accuracy"] for p in points]
        low = [100 * p["ci_low"] for p in points]
        high = [100 * p["ci_high"] for p in points]
        ax.fill_between(steps, low, high, color="#4C72B0", alpha=0.15, label="95% CI")
        ax.plot(steps, acc, marker="o", color="#4C72B0", label="pass@1")
        best = sweep["best"]
        ax.scatter([best["step"]], [100 * best["accuracy"]], color="#C44E52", zorder=3, label="best")
        ax.set_xlabel("training step")
        ax.set_ylabel("pass@1 (%)")
        ax.set_title(f"{benchmark}: accuracy by checkpoint")
        ax.legend(fontsize=8)

    return _plot(folder, f"checkpoint_sweep_{_safe_name(benchmark)}", draw)


def checkpoint_sweep_section(folder: Path, sweeps: dict[str, dict[str, Any]]) -> str:
    """The card section for checkpoint sweeps (one block per benchmark), plots written into images/."""
    lines = [_SWEEP_START, "## Model selection: every checkpoint", ""]
    for benchmark, sw in sorted(sweeps.items()):
        best, last = sw["best"], sw["last"]
        image = _sweep_plot(folder, benchmark, sw)
        lines += [f"### {benchmark} ({sw['num_problems']} problems, split `{sw['problems_split']}`)", ""]
        if image:
            lines += [f"![{benchmark} accuracy by training step]({image})", ""]
        lines += ["| step | pass@1 (%) | 95% CI | details config |", "|---:|---:|---:|---|"]
        for pt in sw["points"]:
            lines.append(
                f"| {pt['step']} | {100 * pt['accuracy']:.1f} | {100 * pt['ci_low']:.1f}–{100 * pt['ci_high']:.1f} "
                f"| `{pt['details_config']}` |"
            )
        top = ", ".join(str(s) for s in sw["best3_steps"])
        lines += [
            "",
            f"- **Best checkpoint** (on this split): step {best['step']}, {100 * best['accuracy']:.1f} %",
            f"- **Mean of the best {len(sw['best3_steps'])}** (steps {top}): {100 * sw['best3_mean']:.1f} %",
            f"- **Last checkpoint**: step {last['step']}, {100 * last['accuracy']:.1f} %",
        ]
        dev = sw.get("selected_on_dev")
        if dev:
            lines.append(
                f"- **Selected on the dev split** `{dev['problems_split']}` ({dev['num_problems']} problems): step "
                f"{dev['step']} (dev {100 * dev['dev_accuracy']:.1f} %) -> **{100 * dev['accuracy']:.1f} %** here"
            )
        lines += [
            "",
            "Picking the best checkpoint on the test set is the paper's protocol (it evaluates a checkpoint "
            "every 100 steps and reports the best; its Table 5 reports the mean of the best three). It is "
            "optimistic: the test set chose the number that is reported. The honest alternative is to select "
            "on a held-out dev split the model never trained on (for example a slice of the train problems "
            "left out of the mixture): run the same sweep there (`lema-hub evaluate --checkpoints <run> "
            "--problems_split train ... --output_dir <dev-eval>`), then this one with `--select_on <dev-eval>`, "
            "and report the selected step's accuracy.",
            "",
            f"Protocol: {sw['protocol_notes']}.",
            "",
        ]
    lines.append(_SWEEP_END)
    return "\n".join(lines)


def write_checkpoint_sweep(folder: str | os.PathLike, benchmark: str, sweep: dict[str, Any]) -> None:
    """Record one benchmark's sweep in `checkpoint_sweep.json` and (re)write the card's sweep section."""
    folder = Path(folder)
    path = folder / SWEEP_FILE
    sweeps = json.loads(path.read_text()) if path.is_file() else {}
    sweeps[benchmark] = sweep
    _atomic_write_text(path, json.dumps(sweeps, indent=2, ensure_ascii=False) + "\n")
    readme = folder / README
    existing = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    section = checkpoint_sweep_section(folder, sweeps)
    if _SWEEP_START in existing and _SWEEP_END in existing:
        a, b = existing.index(_SWEEP_START), existing.index(_SWEEP_END) + len(_SWEEP_END)
        text = existing[:a] + section + existing[b:]
    else:
        text = existing.rstrip("\n") + ("\n\n" if existing else "") + section + "\n"
    _atomic_write_text(readme, _scrub_string(text, folder))
