"""The lema-hub console script and the one config system."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lema_hub.cli import STAGES, _positional_push_args, main
from lema_hub.configs import ConfigError, config_to_dict, parse_config, redact


def test_help_lists_every_stage():
    out = subprocess.run(
        [sys.executable, "-m", "lema_hub.cli", "--help"], capture_output=True, text=True, check=True
    )
    for stage in ["collect", "correct", "evolve", "build", "sft", "evaluate", "push", "demo", "quickstart"]:
        assert f"  {stage}" in out.stdout
    assert set(STAGES) == {
        "collect",
        "correct",
        "bench-corrector",
        "evolve",
        "build",
        "sft",
        "evaluate",
        "push",
        "demo",
        "quickstart",
    }


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_help_shows_its_options(stage, capsys):
    with pytest.raises(SystemExit) as exc:
        main([stage, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out or "usage" in out
    config_types, run = STAGES[stage].load()
    for cfg in config_types:
        # every field of our own dataclasses carries help text
        if cfg.__module__.startswith("lema_hub"):
            for f in cfg.__dataclass_fields__.values():
                assert f.metadata.get("help"), f"{cfg.__name__}.{f.name} has no help metadata"


def test_unknown_stage_is_refused():
    with pytest.raises(SystemExit, match="unknown stage 'colect'"):
        main(["colect"])


@dataclass
class _Demo:
    name: str = field(default="x", metadata={"help": "a name"})
    steps: int = field(default=3, metadata={"help": "steps"})
    rate: float = field(default=0.1, metadata={"help": "rate"})
    tags: list[str] | None = field(default=None, metadata={"help": "tags"})


def test_yaml_then_cli_overrides(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: from-yaml\nsteps: 7\ntags: [a, b]\n")
    (parsed,) = parse_config([_Demo], ["--config", str(cfg), "--steps", "9"])
    assert (parsed.name, parsed.steps, parsed.tags, parsed.rate) == ("from-yaml", 9, ["a", "b"], 0.1)


def test_unknown_yaml_key_names_the_key_and_the_file(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\nstepz: 3\n")
    with pytest.raises(ConfigError, match=r"'stepz'.*bad\.yaml"):
        parse_config([_Demo], ["--config", str(cfg)])


def test_mistyped_yaml_value_is_refused(tmp_path: Path):
    cfg = tmp_path / "typed.yaml"
    cfg.write_text("steps: many\n")
    with pytest.raises(ConfigError, match=r"'steps'.*typed\.yaml"):
        parse_config([_Demo], ["--config", str(cfg)])


def test_unknown_cli_flag_is_refused():
    with pytest.raises(ConfigError, match="--nope"):
        parse_config([_Demo], ["--nope", "1"])


def test_missing_config_file_is_named(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config([_Demo], ["--config", str(tmp_path / "missing.yaml")])


def test_lema_hub_stage_reports_bad_yaml_key(tmp_path: Path):
    cfg = tmp_path / "collect.yaml"
    cfg.write_text("not_a_real_option: 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lema_hub.cli", "collect", "--config", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "not_a_real_option" in proc.stderr and str(cfg) in proc.stderr


def test_push_takes_positional_folder_and_repo():
    assert _positional_push_args(["out/x", "me/lema-x", "--private", "true"]) == [
        "--folder",
        "out/x",
        "--repo_id",
        "me/lema-x",
        "--private",
        "true",
    ]


def test_run_records_never_keep_secrets():
    flat = redact(config_to_dict(_Demo()) | {"hub_token": "hf_abc", "api_key_env": "OPENAI_API_KEY"})
    assert flat["hub_token"] == "<redacted>"
    assert "hf_abc" not in str(flat)


def test_counts_named_like_tokens_are_not_redacted():
    flat = redact(
        {"max_tokens": 512, "completion_tokens": 9, "hub_token": "hf_x", "api_key_env": "OPENAI_API_KEY"}
    )
    assert flat == {
        "max_tokens": 512,
        "completion_tokens": 9,
        "hub_token": "<redacted>",
        "api_key_env": "OPENAI_API_KEY",
    }
