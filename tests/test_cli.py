"""The lema-hub console script and the one config system."""

from __future__ import annotations

import errno
import os
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


# ------------------------------------------------------------------ input errors: one line, exit 2
def _lema_hub(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    from tests.conftest import REPO_ROOT

    full_env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    full_env.pop("LEMA_HUB_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "lema_hub.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env | env,
        timeout=300,
    )


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """case -> (lema-hub arguments, what the one stderr line must name)."""
    (tmp / "bad.yaml").write_text("problems: [sample\nnum_samples: 2\n")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "corrupt.parquet").write_bytes(b"not a parquet file at all")
    (tmp / "a_file").write_text("x")
    corrupt = tmp / "corrupt_mistakes" / "data" / "sample"
    corrupt.mkdir(parents=True)
    (corrupt / "train-00000-of-00001.parquet").write_bytes(b"PAR1 garbage")
    remote = ["--backend", "openai", "--model", "m", "--base_urls", "http://127.0.0.1:9/v1"]
    return {
        "malformed yaml": (["collect", "--config", "bad.yaml"], ["bad.yaml", "YAML", "line 2"]),
        "missing problems file": (["collect", "--problems", "missing.jsonl"], ["missing.jsonl"]),
        "empty problems file": (["collect", "--problems", "empty.jsonl"], ["empty.jsonl", "no rows"]),
        "missing problems_path": (
            ["collect", "--problems", "gsm8k", "--problems_path", "gone/test.jsonl"],
            ["gone/test.jsonl"],
        ),
        "corrupt parquet": (["collect", "--problems", "corrupt.parquet"], ["corrupt.parquet"]),
        "hub id offline": (["collect", "--problems", "someone/some-dataset"], ["someone/some-dataset"]),
        "unknown backend": (["collect", "--backend", "nope"], ["backend", "'nope'"]),
        "bad shard": (["collect", "--shard", "3/2"], ["shard", "'3/2'"]),
        "missing mistakes folder": (["correct", "--mistakes", "no/such/folder"], ["no/such/folder"]),
        "corrupt mistakes folder": (["correct", "--mistakes", "corrupt_mistakes"], ["corrupt_mistakes"]),
        "mistakes hub id offline": (["correct", "--mistakes", "someone/mistakes"], ["someone/mistakes"]),
        "bad int flag": (["collect", "--num_samples", "abc"], ["lema-hub collect", "--num_samples", "'abc'"]),
        "output under a file": (
            ["collect", "--output_dir", "a_file/out", "--problems_limit", "1", *remote],
            ["a_file/out"],
        ),
        "no problems left": (["collect", "--problems_limit", "0"], ["No problems", "'sample'"]),
        "mistakes not set": (["correct"], ["`mistakes`"]),
        # A stage's own config checks are input errors too (they raise InvalidInputError).
        "endpoint without base_urls": (["evaluate", "--backend", "openai", "--models", "m"], ["base_urls"]),
        "bad label_base": (["bench-corrector", "--label_base", "5"], ["label_base", "5"]),
        "build without corrections": (
            ["build", "--corrections", "no/such/corrections"],
            ["no/such/corrections"],
        ),
    }


_CASES = [
    "malformed yaml",
    "missing problems file",
    "empty problems file",
    "missing problems_path",
    "corrupt parquet",
    "hub id offline",
    "unknown backend",
    "bad shard",
    "missing mistakes folder",
    "corrupt mistakes folder",
    "mistakes hub id offline",
    "bad int flag",
    "output under a file",
    "no problems left",
    "mistakes not set",
    "endpoint without base_urls",
    "bad label_base",
    "build without corrections",
]


@pytest.mark.parametrize("case", _CASES)
def test_bad_input_prints_one_line_naming_it_and_exits_2(tmp_path: Path, case: str):
    cases = _bad_inputs(tmp_path)
    assert sorted(cases) == sorted(_CASES)
    args, names = cases[case]
    proc = _lema_hub(args, tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"lema-hub {args[0]}: ") and f"{args[0]}: {args[0]}: " not in lines[0]
    assert [n for n in names if n not in lines[0]] == [], lines[0]


@pytest.mark.parametrize("how", ["--debug first", "--debug last", "LEMA_HUB_DEBUG=1"])
def test_debug_shows_the_traceback(tmp_path: Path, how: str):
    args = ["collect", "--shard", "3/2"]
    env = {}
    if how == "--debug first":
        args = ["--debug", *args]
    elif how == "--debug last":
        args = [*args, "--debug"]
    else:
        env["LEMA_HUB_DEBUG"] = "1"
    proc = _lema_hub(args, tmp_path, **env)
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "parse_shard" in proc.stderr
    assert (
        proc.stderr.rstrip().splitlines()[-1]
        == "lema-hub collect: shard must be 'i/n' with 0 <= i < n, got '3/2'"
    )


def test_recipe_scripts_report_input_errors_the_same_way(tmp_path: Path):
    from tests.conftest import REPO_ROOT

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1")
    env.pop("LEMA_HUB_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / "collect.py"), "--problems", "missing.jsonl"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "lema-hub collect: problems file 'missing.jsonl' does not exist"


def test_read_only_output_folder_is_one_line(tmp_path: Path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root ignores permission bits: give the answer a read-only filesystem gives
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if Path(path).is_relative_to(ro):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    out = ro / "out"
    args = ["collect", "--output_dir", str(out), "--problems_limit", "1", "--backend", "openai"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--model", "m", "--base_urls", "http://127.0.0.1:9/v1", "--progress", "false"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lema-hub collect: Permission denied: ") and str(out) in err and "\n" not in err


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only input errors are shortened: an unexpected exception propagates unchanged."""

    def broken(cfg):
        raise KeyError("internal bookkeeping")

    monkeypatch.setattr("lema_hub.push.push", broken)
    with pytest.raises(KeyError, match="internal bookkeeping"):
        main(["push", "some/folder", "me/repo"])


def test_quickstart_names_the_stage_and_the_bad_input(tmp_path: Path):
    """The quickstart wraps stage errors (StageFailed); one caused by bad input is still one line."""
    proc = _lema_hub(["quickstart", "--output_dir", "qs", "--problems", "missing.jsonl"], tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("lema-hub quickstart: quickstart stage 'collect' failed") and "missing.jsonl" in last
    )


def test_renamed_stage_modules_and_recipe_scripts_keep_their_old_paths():
    import importlib
    import warnings

    from tests.conftest import REPO_ROOT as repo

    moved = {"mistakes": "collect", "mixture": "build", "training": "sft"}
    moved |= {"evaluation": "evaluate", "evolution": "evolve", "corrector_bench": "bench_corrector"}
    for old, new in moved.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            shim = importlib.reload(importlib.import_module(f"lema_hub.{old}"))
        assert any(issubclass(w.category, DeprecationWarning) for w in caught), old
        stage = importlib.import_module(f"lema_hub.{new}")
        public = [n for n in vars(stage) if not n.startswith("_")]
        assert public and all(getattr(shim, n) is getattr(stage, n) for n in public), old
    for old in ("collect_mistakes", "build_mixture"):
        out = subprocess.run(
            [sys.executable, str(repo / "recipes" / f"{old}.py"), "--help"],
            capture_output=True,
            text=True,
        )
        stage = {"collect_mistakes": "collect", "build_mixture": "build"}[old]
        assert out.returncode == 0 and f"usage: lema-hub {stage}" in out.stdout, out.stderr
