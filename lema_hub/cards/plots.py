"""Card images: one matplotlib figure per file under images/ (matplotlib imported on use)."""

from __future__ import annotations

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
