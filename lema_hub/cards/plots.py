"""Card images: one matplotlib figure per file under images/ (matplotlib imported on use)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from lema_hub.schema import IMAGES_DIR


def _plot(folder: Path, name: str, draw) -> str | None:
    """Draw one figure with `draw(ax)` and save it as images/<name>.png; returns the relative path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    try:
        if draw(ax) is False:
            return None
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        rel = f"{IMAGES_DIR}/{name}.png"
        fig.savefig(folder / rel, format="png", metadata={"Software": None})
        return rel
    finally:
        plt.close(fig)


def _bar(ax, labels: list[str], values: list[float], title: str, ylabel: str, fmt: str = "{:.0f}") -> None:
    bars = ax.bar(range(len(labels)), values, color="#4C72B0")
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=20 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    for b, v in zip(bars, values):
        ax.annotate(
            fmt.format(v),
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _rows_per_config_plot(folder: Path, counts: list[dict[str, Any]]) -> str | None:
    labels = [f"{c['config']}/{c['split']}" for c in counts]
    values = [c["rows"] for c in counts]
    if not labels:
        return None
    return _plot(
        folder, "rows_per_config", lambda ax: _bar(ax, labels, values, "Rows per config and split", "rows")
    )


# --- the per-kind figures of the dataset cards (statistics computed in cards.stats)


def verdicts_by_generator_plot(folder: Path, per_gen: dict[str, Counter]) -> str | None:
    """Mistakes: stacked bars of the sampled paths per generator by verdict."""
    gens = sorted(per_gen)

    def draw(ax):
        bottom = [0] * len(gens)
        colors = [
            ("correct", "#55A868"),
            ("wrong", "#C44E52"),
            ("no_answer", "#DD8452"),
            ("truncated", "#CCB974"),
            ("ungradeable", "#8C8C8C"),
        ]
        for verdict, color in [(v, c) for v, c in colors if any(per_gen[g][v] for g in gens)]:
            vals = [per_gen[g][verdict] for g in gens]
            ax.bar(range(len(gens)), vals, bottom=bottom, label=verdict, color=color)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(gens)), [g.split("/")[-1][:28] for g in gens])
        ax.set_title("Sampled paths per generator by verdict")
        ax.set_ylabel("paths")
        ax.legend(frameon=False)

    return _plot(folder, "verdicts_by_generator", draw)


def wrong_path_steps_plot(folder: Path, steps: list[int]) -> str | None:
    """Mistakes: histogram of the number of steps in the wrong paths."""

    def draw_steps(ax):
        ax.hist(steps, bins=range(1, max(steps) + 2), color="#C44E52", align="left", rwidth=0.85)
        ax.set_title("Number of steps in the wrong paths")
        ax.set_xlabel("steps")
        ax.set_ylabel("paths")

    return _plot(folder, "wrong_path_steps", draw_steps)


def incorrect_step_position_plot(folder: Path, positions: list[float]) -> str | None:
    """Corrections: where the first incorrect step sits (0 = first step, 1 = last)."""

    def draw_pos(ax):
        ax.hist(positions, bins=[i / 10 for i in range(11)], color="#4C72B0", rwidth=0.9)
        ax.set_title("Position of the first incorrect step (accepted corrections)")
        ax.set_xlabel("relative position in the wrong path (0 = first step, 1 = last)")
        ax.set_ylabel("corrections")

    return _plot(folder, "incorrect_step_position", draw_pos)


def acceptance_plot(folder: Path, label: str, keys: list[str], rates: list[float]) -> str | None:
    """Corrections: acceptance rate by `label` (level or task)."""
    return _plot(
        folder,
        f"acceptance_by_{label}",
        lambda ax: _bar(ax, keys, rates, f"Acceptance rate by {label}", "% accepted", "{:.0f}%"),
    )


def rows_by_kind_plot(folder: Path, table: list[dict[str, Any]]) -> str | None:
    """CoT / mixture: training rows per config, CoT stacked under correction."""
    labels = [r["config"] for r in table]

    def draw(ax):
        cot = [r["cot"] for r in table]
        corr = [r["correction"] for r in table]
        ax.bar(range(len(labels)), cot, label="cot", color="#4C72B0")
        ax.bar(range(len(labels)), corr, bottom=cot, label="correction", color="#DD8452")
        ax.set_xticks(
            range(len(labels)),
            labels,
            rotation=20 if len(labels) > 3 else 0,
            ha="right" if len(labels) > 3 else "center",
        )
        ax.set_title("Training rows per config by kind")
        ax.set_ylabel("rows")
        ax.legend(frameon=False)

    return _plot(folder, "rows_by_kind", draw)


def accuracy_plot(folder: Path, labels: list[str], values: list[float]) -> str | None:
    """Eval details: accuracy (pass@1) per config."""
    return _plot(
        folder,
        "accuracy",
        lambda ax: _bar(ax, labels, values, "Accuracy per config", "% correct", "{:.1f}%"),
    )
