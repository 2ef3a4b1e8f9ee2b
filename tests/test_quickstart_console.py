"""What the quickstart prints: one line per stage, from the summary dict the stage really returned."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from lema_hub.quickstart import format_stage_line, format_summary, quiet_console

REPR = re.compile(r"[{}\[\]']|\(\{")  # dicts, lists, quoted keys: Python reprs, not prose


def _collect(tmp_path: Path, tiny_model: str) -> dict:
    from lema_hub.collect import CollectConfig, collect

    out = tmp_path / "lema-mistakes"
    cfg = CollectConfig(
        problems="sample",
        problems_split="train",
        problems_limit=2,
        model=tiny_model,
        num_samples=2,
        max_tokens=8,
        batch_size=4,
        progress=False,
        output_dir=str(out),
    )
    summary = collect(cfg)
    assert json.loads((out / "run_summary.json").read_text())["collect"]["samples"] == summary["samples"]
    return summary


def _correct(tmp_path: Path) -> dict:
    from lema_hub.correct import CorrectConfig, correct
    from tests.test_hub import build_mistakes

    mistakes = tmp_path / "mistakes"
    build_mistakes(mistakes)
    return correct(
        CorrectConfig(mistakes=str(mistakes), output_dir=str(tmp_path / "corrections"), progress=False)
    )


def test_stage_lines_are_prose_with_counts_and_rates(tmp_path, tiny_model):
    col = _collect(tmp_path, tiny_model)
    line = format_stage_line("collect", col, 4.0)
    assert line.startswith("collect ")
    assert f"2 problems, 4 sampled paths: {col['correct']} correct, {col['wrong']} wrong" in line
    assert f"{col['mistakes']} mistakes kept" in line and "4 s, 1.0 paths/s" in line
    assert not REPR.search(line), line

    cor = _correct(tmp_path)
    line = format_stage_line("correct", cor, 2.0)
    assert f"{cor['accepted']} of {cor['n']} corrections accepted ({cor['acceptance_rate']:.0%})" in line
    assert "from corrector reference" in line and not REPR.search(line), line
    # Reject reasons are words, not a dict.
    line = format_stage_line("correct", dict(cor, reject_reasons={"wrong_answer": 2}), 2.0)
    assert "rejected: wrong answer 2" in line and not REPR.search(line)
    # A stage finished by an earlier run says so instead of a time.
    assert format_stage_line("correct", cor, None).endswith("· done before")

    summary = {
        "model": tiny_model,
        "problems": "sample",
        "stages": {"collect": col, "correct": cor},
        "seconds": {"collect": 4.0, "correct": None},
        "wall_seconds": 6.0,
        "demo_command": "lema-hub demo",
        "folders": {"mistakes": str(tmp_path / "lema-mistakes")},
    }
    text = format_summary(summary)
    assert "LeMa quickstart summary" in text and "lema-hub demo" in text
    assert not [x for x in text.splitlines() if REPR.search(x)], text
    assert sum(x.startswith("collect") for x in text.splitlines()) == 1


def test_quiet_console_hides_library_chatter():
    quiet_console()
    for name in ("matplotlib.font_manager", "lema_hub.correct", "lema_hub.build", "datasets"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
    import transformers.utils.logging as tf_logging

    assert not tf_logging.is_progress_bar_enabled()
    import datasets.utils.logging as ds_logging

    tf_logging.enable_progress_bar()  # leave the session as it was for later tests
    ds_logging.enable_progress_bar()
