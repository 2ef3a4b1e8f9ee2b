"""Every shipped recipe YAML parses against its stage's dataclasses, so no recipe can rot."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lema_hub.cli import STAGES
from lema_hub.configs import check_config_mapping, parse_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STAGE_DIRS = {name for name in STAGES if name not in ("push", "demo", "quickstart")}


def _recipe_yamls() -> list[Path]:
    return sorted(p for p in RECIPES.rglob("*.yaml") if "accelerate_configs" not in p.parts)


def _stage_of(path: Path) -> str:
    if path.parent == RECIPES and path.stem == "quickstart" or path.stem.startswith("quickstart"):
        return "quickstart"
    stage = path.parent.name
    assert stage in STAGE_DIRS, (
        f"{path}: recipes/<model>/<stage>/config_<variant>.yaml with stage in {STAGE_DIRS}"
    )
    assert path.name.startswith("config_"), f"{path}: recipe files are named config_<variant>.yaml"
    return stage


def test_there_are_recipes_for_every_stage():
    stages = {_stage_of(p) for p in _recipe_yamls()}
    assert STAGE_DIRS | {"quickstart"} <= stages


@pytest.mark.parametrize("path", _recipe_yamls(), ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_parses(path: Path):
    stage = _stage_of(path)
    config_types, _ = STAGES[stage].load()
    mapping = yaml.safe_load(path.read_text())
    check_config_mapping(mapping, config_types, str(path))  # unknown keys, wrong types
    extra: list[str] = []
    if stage == "sft" and (mapping.get("bf16") or mapping.get("fp16") or mapping.get("load_in_4bit")):
        pytest.importorskip("torch").cuda.is_available() or extra.extend(
            ["--bf16", "false", "--fp16", "false"]
        )
    parsed = parse_config(config_types, ["--config", str(path), *extra])
    assert len(parsed) == len(config_types)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("accelerate_configs/*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_are_valid_yaml(path: Path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and "distributed_type" in data
