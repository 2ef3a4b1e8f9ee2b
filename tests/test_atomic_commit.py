"""A kill at any step of a write leaves a loadable folder holding one run's rows: old or new, never a mix.

README.md is the commit point: the kill is simulated by making the k-th filesystem change of the
commit (and every one after it) raise, for every k, as `kill -9` would stop the process there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset

from lema_hub import artifacts, build, collect, correct
from lema_hub.artifacts import (
    ConfigGroup,
    DatasetConfigWriter,
    discover_configs,
    load_artifact,
    save_dataset_config,
)
from lema_hub.schema import sample_features
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_collect import graded_responder
from tests.test_correct import _mistakes_folder
from tests.test_stream_write import _sample_rows


class _Killed(BaseException):
    """The process stopped here (not an `Exception`: no handler of the code under test runs)."""


def _kill_from(monkeypatch, k: int) -> dict[str, int]:
    """From the k-th call on, `os.replace` / `os.unlink` / `os.rmdir` raise `_Killed` (a dead process
    changes nothing more); returns the call count."""
    calls = {"n": 0}
    for name in ("replace", "unlink", "rmdir"):
        real = getattr(os, name)

        def step(*args, _real=real, _name=name, **kwargs):
            calls["n"] += 1
            if calls["n"] >= k:
                raise _Killed(f"killed at step {calls['n']} (os.{_name})")
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, step)
    return calls


def _listed(folder: Path) -> list[str]:
    meta = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    return [c["config_name"] for c in meta["configs"]]


def _state(folder: Path, cache: Path) -> dict[str, list[dict]]:
    """{config: rows} of every config README.md lists, read by `datasets` and by lema_hub (they agree)."""
    out = {
        c: load_dataset(str(folder), c, split="train", cache_dir=str(cache)).to_list()
        for c in _listed(folder)
    }
    assert {c: load_artifact(str(folder), c).to_list() for c in discover_configs(folder)} == out
    return out


def _assert_clean(folder: Path) -> None:
    """Nothing but what README.md lists: no hidden work folder, temp file or unlisted data file."""
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    listed = {f for splits in discover_configs(folder).values() for fs in splits.values() for f in fs}
    on_disk = {p.relative_to(folder).as_posix() for p in (folder / "data").rglob("*") if p.is_file()}
    assert on_disk == listed


def _killed_at_every_step(monkeypatch, tmp_path: Path, base: Path, write, arm=None):
    """Run `write(folder)` on a copy of `base` killed at step k = 1, 2, ... until it finishes; yields
    (k, the folder after the kill). `arm(start)` arms the kill at some later point (default: now)."""
    k = 1
    while True:
        folder = tmp_path / f"k{k}" / base.name
        shutil.copytree(base, folder)
        with monkeypatch.context() as m:
            killed = False
            try:
                if arm is None:
                    _kill_from(m, k)
                else:
                    arm(m, lambda m=m, k=k: _kill_from(m, k))
                write(folder)
            except _Killed:
                killed = True
                artifacts._OPEN_STAGING.clear()  # a dead process has no writer open
        if not killed:
            return
        yield k, folder
        k += 1


def _old_and_new(tmp_path: Path, base: Path, write) -> tuple[dict, dict]:
    new = tmp_path / "new" / base.name
    shutil.copytree(base, new)
    write(new)
    return _state(base, tmp_path / "cache"), _state(new, tmp_path / "cache")


def _base(tmp_path: Path) -> tuple[Path, list[dict]]:
    feats, rows = sample_features(), _sample_rows(12)
    base = tmp_path / "base" / "f"
    save_dataset_config(base, "x-samples", {"train": rows[:6]}, features=feats)
    save_dataset_config(base, "x", {"train": rows[:3]}, features=feats)
    save_dataset_config(base, "other", {"train": rows[:1]}, features=feats)
    return base, rows


def test_a_kill_at_any_step_of_one_config_write_leaves_old_or_new_rows(tmp_path, monkeypatch):
    base, rows = _base(tmp_path)

    def write(folder: Path) -> None:
        save_dataset_config(folder, "x", {"train": rows[3:9]}, features=sample_features())

    old, new = _old_and_new(tmp_path, base, write)
    seen = set()
    for k, folder in _killed_at_every_step(monkeypatch, tmp_path, base, write):
        state = _state(folder, tmp_path / "cache")  # the old code: FileNotFoundError after the swap
        assert state in (old, new), k
        seen.add("new" if state == new else "old")
        save_dataset_config(folder, "other", {"train": rows[:2]}, features=sample_features())
        _assert_clean(folder)
        assert _state(folder, tmp_path / "cache")["x"] == state["x"]
    assert seen == {"old", "new"}  # killed before and after README.md's replace


@pytest.mark.parametrize("mistakes", ["some", "none"])
def test_a_kill_at_any_step_of_a_group_commit_leaves_one_runs_rows(tmp_path, monkeypatch, mistakes):
    """Two configs of one run (the second emptied by the rerun: removed) commit together."""
    base, rows = _base(tmp_path)
    feats = sample_features()
    new_mistakes = rows[6:8] if mistakes == "some" else []

    def write(folder: Path) -> None:
        with (
            ConfigGroup(folder) as group,
            DatasetConfigWriter(folder, "x", feats, group=group) as mistake_writer,
            DatasetConfigWriter(folder, "x-samples", feats, group=group) as sample_writer,
        ):
            sample_writer.write(rows[6:12])
            mistake_writer.write(new_mistakes)

    def arm(m, kill) -> None:  # only the commit: the writers' own steps touch the staging folders
        real = ConfigGroup.__exit__
        m.setattr(ConfigGroup, "__exit__", lambda self, *exc: (kill(), real(self, *exc))[1])

    old, new = _old_and_new(tmp_path, base, write)
    assert list(new) == (["x-samples", "x", "other"] if mistakes == "some" else ["x-samples", "other"])
    seen = set()
    for k, folder in _killed_at_every_step(monkeypatch, tmp_path, base, write, arm):
        state = _state(folder, tmp_path / "cache")
        assert state in (old, new), k
        seen.add("new" if state == new else "old")
        write(folder)  # the next run commits and cleans up
        _assert_clean(folder)
        assert _state(folder, tmp_path / "cache") == new
    assert seen == {"old", "new"}


def test_a_failed_group_changes_nothing(tmp_path):
    base, rows = _base(tmp_path)
    before = {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="later config failed"):
        with ConfigGroup(base) as group:
            save_dataset_config(base, "x", {"train": rows[6:]}, features=sample_features(), group=group)
            with DatasetConfigWriter(base, "x-samples", sample_features(), group=group) as w:
                w.write(rows)
                raise RuntimeError("later config failed")
    after = {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}
    assert after == before
    assert not [p.name for p in base.iterdir() if p.name.startswith(".")]


def test_files_of_a_commit_cut_short_are_not_read_and_are_cleaned(tmp_path):
    """New files moved in beside the old ones (a kill before README.md's replace) are not rows."""
    base, rows = _base(tmp_path)
    old = load_artifact(str(base), "x").to_list()
    stray = base / "data" / "x" / "train-00000-of-00001-0123456789abcdef.parquet"
    shutil.copy(next((base / "data" / "x-samples").glob("*.parquet")), stray)
    unlisted = base / "data" / "y"
    shutil.copytree(base / "data" / "x-samples", unlisted)
    assert load_artifact(str(base), "x").to_list() == old
    assert set(discover_configs(base)) == {"x", "x-samples", "other"}
    assert set(artifacts.uncommitted_files(base)) == {stray, unlisted}
    save_dataset_config(base, "other", {"train": rows[:2]}, features=sample_features())
    _assert_clean(base)


# --- the stages: one commit for all the configs a run writes -------------------------------------


def _arm_at_first_writer_exit(m, kill) -> None:
    """Arm when the first writer finishes (as the code before groups had it, each writer committed)."""
    real = DatasetConfigWriter.__exit__
    armed = []

    def exit_(self, *exc):
        if not armed:
            armed.append(kill())
        return real(self, *exc)

    m.setattr(DatasetConfigWriter, "__exit__", exit_)


def _collect_cfg(folder: Path, url: str, limit: int) -> collect.CollectConfig:
    return collect.CollectConfig(
        problems="sample", problems_split="train", problems_limit=limit, output_dir=str(folder),
        backend="openai", model="fake-model", base_urls=[url], prompt_style="chat", num_samples=4,
        seed=0, concurrency=4, progress=False, write_card=False,
    )  # fmt: skip


def _check_stage(monkeypatch, tmp_path: Path, base: Path, write) -> None:
    old, new = _old_and_new(tmp_path, base, write)
    assert len(old) >= 2 and old != new and set(old) == set(new)
    for k, folder in _killed_at_every_step(monkeypatch, tmp_path, base, write, _arm_at_first_writer_exit):
        state = _state(folder, tmp_path / "cache")
        assert state in (old, new), f"killed at step {k}: configs of two runs"
        write(folder)
        assert _state(folder, tmp_path / "cache") == new
        assert not [p for p in artifacts.uncommitted_files(folder)]


def test_a_killed_collect_keeps_samples_and_mistakes_of_one_run(tmp_path, monkeypatch):
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        base = tmp_path / "base" / "m"
        collect.collect(_collect_cfg(base, srv.base_url, 3))
        _check_stage(monkeypatch, tmp_path, base, lambda f: collect.collect(_collect_cfg(f, srv.base_url, 5)))


def test_a_killed_correct_or_build_keeps_one_runs_configs(tmp_path, monkeypatch):
    _, rows = _mistakes_folder(tmp_path / "all")  # the last one is rejected (no reference)
    for name, part in (("m-few", rows[:2] + rows[-1:]), ("m-all", rows)):
        save_dataset_config(tmp_path / name, "sample", {"train": part})

    def run_correct(mistakes: str, out: Path) -> None:
        correct.correct(correct.CorrectConfig(mistakes=str(tmp_path / mistakes), output_dir=str(out)))

    base = tmp_path / "base" / "c"
    run_correct("m-few", base)
    assert set(_listed(base)) == {"sample", "sample-rejected"}
    _check_stage(monkeypatch, tmp_path / "correct", base, lambda f: run_correct("m-all", f))

    run_correct("m-all", tmp_path / "c-all")

    def run_build(corrections: Path, limit: int, out: Path) -> None:
        cfg = build.BuildConfig(
            corrections=str(corrections), problems="sample", problems_limit=limit, output_dir=str(out),
            views=["lema", "cot"],
        )  # fmt: skip
        build.build(cfg)

    mix = tmp_path / "base" / "mix"
    run_build(base, 3, mix)  # both views differ between the runs: the gold CoT rows of 3 or 5 problems
    _check_stage(monkeypatch, tmp_path / "build", mix, lambda f: run_build(tmp_path / "c-all", 5, f))


def test_a_killed_evaluate_keeps_every_models_details_of_one_run(tmp_path, monkeypatch):
    """evaluate's per-model details configs are one commit: a kill never leaves one model's new
    details beside another's old ones (results.json and the cards follow the commit)."""
    from lema_hub.evaluate import EvalConfig, evaluate

    def details(folder: Path) -> dict[str, list[dict]]:
        return {c: load_artifact(str(folder), c, split="test").to_list() for c in discover_configs(folder)}

    with FakeOpenAIServer(responder=lambda payload: "We add them up. The answer is 18.") as srv:

        def run(folder: Path, limit: int) -> None:
            evaluate(EvalConfig(
                models=["fake-a", "fake-b"], problems="sample", problems_split="test", problems_limit=limit,
                backend="openai", base_urls=[srv.base_url], prompt_style="chat", concurrency=4,
                output_dir=str(folder), grading_workers=1,
            ))  # fmt: skip

        base = tmp_path / "base" / "eval"
        run(base, 3)
        new = tmp_path / "new" / "eval"
        shutil.copytree(base, new)
        run(new, 5)
        old_state, new_state = details(base), details(new)
        assert set(old_state) == {"fake-a-sample", "fake-b-sample"} and old_state != new_state

        def arm_at_first_commit(m, kill) -> None:
            real, armed = artifacts._commit, []

            def commit(*args, **kwargs):
                if not armed:
                    armed.append(kill())
                return real(*args, **kwargs)

            m.setattr(artifacts, "_commit", commit)

        kills = 0
        for k, folder in _killed_at_every_step(
            monkeypatch, tmp_path, base, lambda f: run(f, 5), arm_at_first_commit
        ):
            kills += 1
            assert details(folder) in (old_state, new_state), f"killed at step {k}: details of two runs"
        assert kills >= 3
