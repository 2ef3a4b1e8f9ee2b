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


def test_sft_runs_the_sft_recipes_values(smoke_run, repo_root: Path):
    """Values the quickstart does not expose come from recipes/smollm2-135m/sft/ (no second copy)."""
    out, _ = smoke_run
    sft_recipes = repo_root / "recipes" / "smollm2-135m" / "sft"
    for view in ("cot", "lema"):
        recipe = yaml.safe_load((sft_recipes / f"config_{view}_lora.yaml").read_text())
        record = yaml.safe_load((out / "models" / view / "lema_hub_config.yaml").read_text())["sft"]
        for key in ("learning_rate", "max_grad_norm", "lora_r", "lora_alpha", "lora_dropout"):
            assert float(record[key]) == float(recipe[key]), key
        # ... and the quickstart's own options are laid over them
        assert record["max_steps"] == SMOKE["sft_max_steps"]
        assert record["model_name_or_path"] == SMOKE["model"]


def test_a_changed_recipe_value_reaches_its_stage_only(smoke_run, tmp_path, repo_root: Path):
    src, first = smoke_run
    out, recipes = tmp_path / "run", tmp_path / "recipes"
    shutil.copytree(src, out)
    shutil.copytree(repo_root / "recipes" / "smollm2-135m", recipes)
    path = recipes / "evaluate" / "config_sample.yaml"
    path.write_text(path.read_text() + "\ntop_p: 0.5\nseed: 7\n")
    again = run_quickstart(QuickstartConfig(output_dir=str(out), recipes_dir=str(recipes), **SMOKE))
    assert {k for k, v in again["seconds"].items() if v is not None} == {"evaluate"}  # the rest resumed
    record = yaml.safe_load((out / "eval" / "lema_hub_config.yaml").read_text())["evaluate"]
    assert record["top_p"] == 0.5 and record["seed"] == 7
    assert record["max_new_tokens"] == SMOKE["eval_max_new_tokens"]  # the override still wins
    effective = yaml.safe_load((out / ".quickstart" / "evaluate.yaml").read_text())
    assert effective["top_p"] == 0.5 and effective["max_new_tokens"] == SMOKE["eval_max_new_tokens"]


@pytest.mark.parametrize("stage_file", ["evaluate/config_sample.yaml", "sft/config_lema_lora.yaml"])
def test_an_unknown_recipe_key_fails_before_any_stage_as_the_cli_does(
    tmp_path, repo_root: Path, capsys, stage_file: str
):
    from lema_hub.cli import main

    recipes, out = tmp_path / "recipes", tmp_path / "run"
    shutil.copytree(repo_root / "recipes" / "smollm2-135m", recipes)
    path = recipes / stage_file
    path.write_text(path.read_text() + "\nbogus_knob: 1\n")
    stage = stage_file.split("/")[0]
    with pytest.raises(SystemExit) as cli_exit:
        main([stage, "--config", str(path)])
    cli_message = capsys.readouterr().err.strip().removeprefix(f"lema-hub {stage}: ")
    with pytest.raises(SystemExit) as qs_exit:
        main(["quickstart", "--output_dir", str(out), "--recipes_dir", str(recipes), "--model", "tiny"])
    err = capsys.readouterr().err.strip()
    assert cli_exit.value.code == qs_exit.value.code == 2
    assert err == f"lema-hub quickstart: {cli_message}" and "'bogus_knob'" in err and str(path) in err
    assert not (out / "lema-mistakes").exists()  # nothing ran


def test_an_llm_corrector_runs_the_endpoint_recipe(tmp_path, repo_root: Path):
    """corrector_base_url switches the correct stage to correct/config_endpoint.yaml, its values kept."""
    from lema_hub.quickstart import _Layout
    from lema_hub.quickstart_configs import correct_config

    recipes = tmp_path / "recipes"
    shutil.copytree(repo_root / "recipes" / "smollm2-135m", recipes)
    path = recipes / "correct" / "config_endpoint.yaml"
    path.write_text(path.read_text().replace("concurrency: 32", "concurrency: 3"))
    url = "http://127.0.0.1:9/v1"
    cfg = QuickstartConfig(recipes_dir=str(recipes), corrector_base_url=url, corrector_model="judge")
    correct_cfg = correct_config(cfg, _Layout(tmp_path / "run"))
    assert correct_cfg.concurrency == 3 and correct_cfg.prompt_style == "chat"  # the recipe's
    assert (correct_cfg.backend, correct_cfg.model, correct_cfg.base_urls) == ("openai", "judge", [url])
    assert correct_cfg.output_dir == str(tmp_path / "run" / "lema-corrections")
    reference = correct_config(QuickstartConfig(recipes_dir=str(recipes)), _Layout(tmp_path))
    assert reference.backend == "reference"
