"""Evolution round two (the paper's App. C.5) as a recipe chain: the same seeds, mistakes collected
by the round-one LeMa model, then correct -> build -> sft -> evaluate. The chain's links are checked on
the shipped recipes, and the chain runs end to end offline on a tiny stand-in for round one."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lema_hub.cli import STAGES
from lema_hub.configs import parse_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "smollm2-135m"
ROUND2 = RECIPES / "round2"
CHAIN = ("collect", "correct", "build", "sft", "evaluate")


def _parse(stage: str, path: Path, *extra: str):
    types, _ = STAGES[stage].load()
    return parse_config(types, ["--config", str(path), *extra])


def test_round_two_generators_are_the_round_one_model_folders():
    from lema_hub.collect import generator_configs

    round1_collect = _parse("collect", RECIPES / "collect" / "config_sample.yaml")[0]
    round1_sft = _parse("sft", RECIPES / "sft" / "config_lema_lora.yaml", "--bf16", "false")
    script1, training1 = round1_sft[0], round1_sft[1]
    assert script1.merge_adapter
    (collect,) = _parse("collect", ROUND2 / "collect" / "config_sample.yaml")
    models = [engine.model for _, engine, _ in generator_configs(collect)]
    assert models == [training1.output_dir + "-merged"]  # the round-one LeMa model, not the base
    # The same seeds as round one.
    assert (collect.problems, collect.problems_split) == (
        round1_collect.problems,
        round1_collect.problems_split,
    )
    # The links of the chain: each stage reads what the previous one wrote, never round one's folders.
    (correct,) = _parse("correct", ROUND2 / "correct" / "config_sample.yaml")
    (build,) = _parse("build", ROUND2 / "build" / "config_sample.yaml")
    script2, training2, model2 = _parse("sft", ROUND2 / "sft" / "config_sample.yaml", "--bf16", "false")
    (evaluate,) = _parse("evaluate", ROUND2 / "evaluate" / "config_sample.yaml")
    assert correct.mistakes == collect.output_dir
    assert build.corrections == correct.output_dir
    assert script2.dataset_name == build.output_dir
    assert model2.model_name_or_path == round1_sft[2].model_name_or_path  # from the base again
    assert evaluate.models[1:] == [training1.output_dir + "-merged", training2.output_dir + "-merged"]
    outputs = [collect.output_dir, correct.output_dir, build.output_dir, training2.output_dir]
    assert all(o.startswith("outputs/smollm2-135m/round2/") for o in outputs)


def _rebased(stage: str, tmp: Path, overrides: dict) -> Path:
    """The shipped round-two recipe with `outputs/` under tmp and the given overrides."""
    text = (ROUND2 / stage / "config_sample.yaml").read_text().replace("outputs/", f"{tmp}/outputs/")
    data = yaml.safe_load(text)
    data.update(overrides)
    path = tmp / f"round2-{stage}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_round_two_chain_runs_end_to_end_offline(tmp_path, tiny_model):
    from lema_hub.artifacts import load_artifact
    from lema_hub.build import build
    from lema_hub.collect import collect
    from lema_hub.correct import correct
    from lema_hub.evaluate import evaluate
    from lema_hub.sft import train
    from tests.test_sft import _parse as sft_parse
    from tests.test_sft import make_mixture, tiny_config

    # Round one, in miniature: a LeMa model folder (merged) where the recipe expects it.
    round1 = tmp_path / "outputs" / "smollm2-135m" / "lema-smollm2-135m-sample"
    cfg1 = tiny_config(
        tmp_path / "r1.yaml", make_mixture(tmp_path / "m1"), round1, max_steps=1, merge_adapter=True
    )
    train(*sft_parse(cfg1))
    assert (round1.parent / (round1.name + "-merged") / "config.json").is_file()

    # include_unfinished: the random-weight model never finishes a path, so none is a `wrong` answer.
    fast = {
        "problems_limit": 3,
        "num_samples": 2,
        "max_tokens": 24,
        "batch_size": 6,
        "include_unfinished": True,
    }
    summary = collect(*_parse("collect", _rebased("collect", tmp_path, fast)))
    mistakes = Path(summary["output_dir"])
    # load_artifact reads the parquet files (datasets' folder cache keys on the folder name, not its content)
    samples = load_artifact(str(mistakes), "sample-samples", "train").to_list()
    assert {s["generator"] for s in samples} == {"lema-smollm2-135m-sample"}
    assert len(samples) == 6
    correct(*_parse("correct", _rebased("correct", tmp_path, {})))
    build(*_parse("build", _rebased("build", tmp_path, {})))
    mixture = tmp_path / "outputs" / "smollm2-135m" / "round2" / "lema-mixture"
    assert len(load_artifact(str(mixture), "sample-lema", "train")) >= 3  # gold CoT rows at least
    sft = _rebased(
        "sft",
        tmp_path,
        {"model_name_or_path": tiny_model, "max_steps": 1, "save_strategy": "no", "bf16": False},
    )
    round2 = train(*_parse("sft", sft))
    assert Path(round2["output_dir"]).name == "lema-smollm2-135m-sample"
    assert Path(round2["output_dir"]).parent.name == "round2"
    ev = _rebased(
        "evaluate",
        tmp_path,
        {
            "models": [tiny_model]
            + yaml.safe_load((ROUND2 / "evaluate" / "config_sample.yaml").read_text())["models"][1:],
            "problems_limit": 2,
            "max_new_tokens": 4,
        },
    )
    ev_text = ev.read_text().replace("- outputs/", f"- {tmp_path}/outputs/")
    ev.write_text(ev_text)
    result = evaluate(*_parse("evaluate", ev))
    assert sorted(result["results"]) == ["base-sample", "lema-round1-sample", "lema-round2-sample"]
