"""Model selection as the paper did it: every checkpoint of a tiny run evaluated, resumable per checkpoint,
one details config each, and the curve / best / best-3 mean / last on the run's card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lema_hub.evaluate import EvalConfig, evaluate
from lema_hub.sweep import list_checkpoints, sweep_summary


def _pt(step: int, acc: float) -> dict:
    return {"step": step, "accuracy": acc, "ci_low": 0.0, "ci_high": 1.0, "details_config": f"s{step}"}


def test_sweep_summary_best_best3_and_last():
    points = [_pt(300, 0.50), _pt(100, 0.40), _pt(200, 0.55), _pt(400, 0.55), _pt(500, 0.45)]
    s = sweep_summary(points)
    assert [p["step"] for p in s["points"]] == [100, 200, 300, 400, 500]
    assert s["best"]["step"] == 200  # a tie goes to the earlier step
    assert s["best3_steps"] == [200, 400, 300]
    assert s["best3_mean"] == pytest.approx((0.55 + 0.55 + 0.50) / 3)
    assert s["last"]["step"] == 500 and s["last"]["accuracy"] == 0.45
    two = sweep_summary([_pt(1, 0.1), _pt(2, 0.3)])
    assert two["best3_mean"] == pytest.approx(0.2) and two["best3_steps"] == [2, 1]


def test_bad_run_folders_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        list_checkpoints(tmp_path / "missing")
    (tmp_path / "run" / "checkpoint-x").mkdir(parents=True)
    with pytest.raises(ValueError, match="has no checkpoint-\\* folders"):
        evaluate(EvalConfig(checkpoints=str(tmp_path / "run"), output_dir=str(tmp_path / "eval")))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model) -> Path:
    """A finished tiny LoRA run with checkpoint-1, checkpoint-2 and checkpoint-3 (and its card)."""
    from lema_hub.sft import train
    from tests.test_sft import _parse, make_mixture, tiny_config

    tmp = tmp_path_factory.mktemp("run")
    mixture = make_mixture(tmp / "mixture", style="plain")
    out = tmp / "lema-tiny-run"
    config = tiny_config(
        tmp / "c.yaml",
        mixture,
        out,
        prompt_style="plain",
        max_steps=3,
        save_strategy="steps",
        save_steps=1,
    )
    train(*_parse(config))
    assert [step for step, _ in list_checkpoints(out)] == [1, 2, 3]
    return out


def test_every_checkpoint_is_evaluated_and_the_sweep_is_on_the_card(tiny_run, tmp_path):
    import datasets

    out = tmp_path / "eval"
    cfg = EvalConfig(
        checkpoints=str(tiny_run), problems="sample", problems_limit=2, max_new_tokens=4, output_dir=str(out)
    )
    summary = evaluate(cfg)
    configs = [f"lema-tiny-run-step-{s}-sample" for s in (1, 2, 3)]
    assert sorted(summary["results"]) == configs
    for name in configs:  # one details config per checkpoint
        rows = datasets.load_dataset(str(out), name, split="test").to_list()
        assert len(rows) == 2 and rows[0]["prompt_style"] == "plain"  # the run's style (lema_hub_model.json)
    sweep = summary["sweep"]
    assert [p["step"] for p in sweep["points"]] == [1, 2, 3] and sweep["last"]["step"] == 3
    assert (
        json.loads((out / "checkpoint_sweep.json").read_text())["sample"]["best3_steps"]
        == sweep["best3_steps"]
    )

    card = (tiny_run / "README.md").read_text()
    assert "## Model selection: every checkpoint" in card
    assert (
        "images/checkpoint_sweep_sample.png" in card
        and (tiny_run / "images/checkpoint_sweep_sample.png").is_file()
    )
    assert (
        "**Best checkpoint**" in card
        and "**Mean of the best 3**" in card
        and "**Last checkpoint**: step 3" in card
    )
    assert "optimistic" in card and "held-out dev split" in card
    assert "`lema-tiny-run-step-2-sample`" in card

    # Resume per checkpoint: drop one checkpoint's generations; a rerun regenerates only that one.
    cache = out / ".cache" / "generation"
    before = {p.name: p.read_text() for p in cache.glob("*.jsonl")}
    assert len(before) == 3
    (cache / "lema-tiny-run-step-2-sample.jsonl").unlink()
    again = evaluate(cfg)
    after = {p.name: p.read_text() for p in cache.glob("*.jsonl")}
    assert after["lema-tiny-run-step-1-sample.jsonl"] == before["lema-tiny-run-step-1-sample.jsonl"]
    assert after["lema-tiny-run-step-3-sample.jsonl"] == before["lema-tiny-run-step-3-sample.jsonl"]
    assert len(after["lema-tiny-run-step-2-sample.jsonl"].splitlines()) == 2  # generated again
    assert again["sweep"]["points"] == sweep["points"]  # greedy: the same answers

    # Re-rendering the model card (as training or a later stage does) keeps the sweep section.
    from lema_hub.cards.model import write_model_card

    write_model_card(tiny_run, {"model_name": "lema-tiny-run", "adapter": True})
    assert "## Model selection: every checkpoint" in (tiny_run / "README.md").read_text()


def test_selection_on_a_dev_split_is_reported(tiny_run, tmp_path):
    dev, test = tmp_path / "dev", tmp_path / "test"
    common = dict(checkpoints=str(tiny_run), problems="sample", problems_limit=2, max_new_tokens=4)
    evaluate(EvalConfig(**common, problems_split="train", output_dir=str(dev)))
    summary = evaluate(EvalConfig(**common, select_on=str(dev), output_dir=str(test)))
    chosen = summary["sweep"]["selected_on_dev"]
    dev_sweep = json.loads((dev / "checkpoint_sweep.json").read_text())["sample"]
    assert chosen["step"] == dev_sweep["best"]["step"] and chosen["problems_split"] == "train"
    test_acc = {p["step"]: p["accuracy"] for p in summary["sweep"]["points"]}
    assert chosen["accuracy"] == test_acc[chosen["step"]]
    assert "**Selected on the dev split** `train`" in (tiny_run / "README.md").read_text()
    with pytest.raises(ValueError, match="select_on: .* does not exist"):
        evaluate(EvalConfig(**common, select_on=str(tmp_path / "nowhere"), output_dir=str(test)))
