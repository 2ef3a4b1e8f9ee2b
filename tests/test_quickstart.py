"""The quickstart's code path end to end on the tiny model (the smoke variant of `make quickstart`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard

from lema_hub.artifacts import discover_configs, find_leaks
from lema_hub.collect import mistake_verdicts
from lema_hub.grading import VERDICTS
from lema_hub.quickstart import QuickstartConfig, StageFailed, run_quickstart

pytestmark = pytest.mark.slow

SMOKE = dict(
    model="tiny:smollm2",
    train_limit=4,
    eval_limit=2,
    num_samples=2,
    max_tokens=24,
    include_unfinished=True,  # the random-weight model never finishes a path: no `wrong` answer to correct
    batch_size=8,
    sft_max_steps=2,
    sft_batch_size=2,
    eval_max_new_tokens=12,
    progress=False,
)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("quickstart") / "run"
    summary = run_quickstart(QuickstartConfig(output_dir=str(out), **SMOKE))
    return out, summary


def test_every_artifact_folder_loads_and_every_card_renders(smoke_run):
    out, summary = smoke_run
    for name in ("lema-mistakes", "lema-corrections", "lema-mixture", "eval"):
        folder = out / name
        configs = discover_configs(folder)
        assert configs, f"{name} has no data configs"
        for config, splits in configs.items():
            for split in splits:
                ds = datasets.load_dataset(str(folder), config, split=split)
                assert ds.num_rows > 0
        card = DatasetCard.load(folder / "README.md")
        listed = {c["config_name"] for c in card.data.to_dict()["configs"]}
        assert listed == set(configs)
        assert "An et al." in card.text or "2310.20689" in card.text
    for view in ("cot", "lema"):
        card = ModelCard.load(out / "models" / view / "README.md")
        assert (out / "models" / view / "adapter_config.json").is_file()
        assert (out / "models" / f"{view}-merged" / "config.json").is_file()
        # The bundled sample is no Hub dataset: its results stay beside the card, not in .eval_results/.
        assert (out / "models" / view / "lema_hub_eval_results.yaml").is_file(), (
            "eval results not in the card"
        )
        assert not (out / "models" / view / ".eval_results").exists()
        assert ".eval_results" not in card.text and "held-out problems written for lema_hub" in card.text
        assert "pass@1" in card.text or "accuracy" in card.text.lower()
    # Artifact folders (what gets pushed) hold no token and no absolute local path; the
    # .quickstart/ markers and the summary are local bookkeeping and never pushed.
    artifacts = [out / n for n in ("lema-mistakes", "lema-corrections", "lema-mixture", "eval")]
    artifacts += sorted((out / "models").iterdir())
    assert [leak for folder in artifacts for leak in find_leaks(folder)] == []


def test_counts_add_up_across_stages(smoke_run):
    _, summary = smoke_run
    st = summary["stages"]
    col, cor, bld = st["collect"], st["correct"], st["build"]
    assert col["problems"] == SMOKE["train_limit"]
    assert col["samples"] == SMOKE["train_limit"] * SMOKE["num_samples"]
    assert sum(col[v] for v in VERDICTS) == col["samples"]
    kept = mistake_verdicts(include_unfinished=SMOKE["include_unfinished"])
    assert col["mistakes"] + col["duplicates_removed"] == sum(col[v] for v in kept)
    assert cor["n"] == col["mistakes"] and cor["accepted"] + cor["rejected"] == cor["n"]
    views = bld["views"]
    assert views["cot"]["correction"] == 0 and views["cot"]["cot"] == views["lema"]["cot"]
    assert views["lema"]["correction"] == cor["accepted"]
    assert st["sft_cot"]["global_step"] == st["sft_lema"]["global_step"] == SMOKE["sft_max_steps"]
    labels = {r["model_label"] for r in st["evaluate"]["results"].values()}
    assert labels == {"base", "cot", "lema"}
    assert all(r["n"] == SMOKE["eval_limit"] for r in st["evaluate"]["results"].values())


def test_rerun_skips_finished_stages(smoke_run):
    out, first = smoke_run
    again = run_quickstart(QuickstartConfig(output_dir=str(out), **SMOKE))
    assert all(v is None for v in again["seconds"].values())
    assert again["stages"] == first["stages"]


def test_a_failing_stage_is_named_and_earlier_outputs_stay(smoke_run, tmp_path):
    src, _ = smoke_run
    out = tmp_path / "run"
    shutil.copytree(src, out)
    shutil.rmtree(out / "lema-mixture" / "data")  # the training data vanishes
    for marker in ("sft_cot", "sft_lema", "evaluate"):
        (out / ".quickstart" / f"{marker}.json").unlink()
    with pytest.raises(StageFailed, match="'sft_cot'"):
        run_quickstart(QuickstartConfig(output_dir=str(out), **{**SMOKE, "sft_max_steps": 3}))
    assert discover_configs(out / "lema-mistakes") and discover_configs(out / "lema-corrections")


def test_fresh_starts_over(tmp_path):
    out = tmp_path / "run"
    (out / ".quickstart").mkdir(parents=True)
    (out / "stale.txt").write_text("old")
    cfg = QuickstartConfig(output_dir=str(out), fresh=True, **{**SMOKE, "train_limit": 0})
    with pytest.raises(StageFailed):  # no problems: collect refuses, but only after the wipe
        run_quickstart(cfg)
    assert not (out / "stale.txt").exists()


def test_shipped_quickstart_yaml_is_the_default_run(repo_root: Path):
    data = yaml.safe_load((repo_root / "recipes" / "quickstart.yaml").read_text())
    cfg = QuickstartConfig(**data)
    assert cfg.model == "embedded:smollm2-135m-instruct" and cfg.problems == "sample"
    assert cfg.corrector_backend == "reference"


def test_llm_corrector_needs_model_and_url():
    with pytest.raises(ValueError, match="corrector_model"):
        QuickstartConfig(corrector_backend="openai")
    assert (
        QuickstartConfig(corrector_base_url="http://127.0.0.1:8000/v1", corrector_model="m").corrector_backend
        == "openai"
    )
