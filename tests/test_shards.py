"""`--shard i/n` and `--merge_shards` (Slurm arrays) for `correct` and `evolve`.

Each stage runs as n independent jobs into `<output_dir>-shard-i-of-n`, then merges: the merged
folder must hold what one process writes (same parquet files, so same rows in the same order), with
nothing asked twice and nothing pushed before the merge.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lema_hub import distributed
from lema_hub.correct import CorrectConfig, correct
from lema_hub.errors import InvalidInputError, MissingInputError
from lema_hub.evolve import DRAWS_FILE, EvolveConfig, evolve
from lema_hub.formats import correction_target
from lema_hub.problems import load_sample
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_correct import _mistakes_folder
from tests.test_distributed import _card, _tables
from tests.test_evolve import _corrections_folder
from tests.test_evolve import responder as evolve_responder

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ helpers
def test_shard_slices_concatenate_to_the_items_like_the_ranks_split_them():
    items = list(range(10))
    slices = [distributed.shard_slice(items, f"{i}/4") for i in range(4)]
    assert slices == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]  # the first 10 % 4 shards get one more
    assert distributed.shard_slice(items, None) == items
    assert [distributed.shard_slice(items[:2], f"{i}/3") for i in range(3)] == [[0], [1], []]
    assert distributed.shard_output("out/x", "2/3") == Path("out/x-shard-00002-of-00003")
    assert distributed.shard_output("out/x", None) == Path("out/x")
    with pytest.raises(InvalidInputError, match="'3/2'"):
        distributed.shard_slice(items, "3/2")


def test_add_counts_adds_nested_numbers():
    a = {"total": 4, "failed": 1, "failure_causes": {"HTTP 500": 1}, "note": "x", "ok": True}
    b = {"total": 6, "failed": 2, "failure_causes": {"HTTP 500": 1, "timeout": 1}}
    assert distributed.add_counts([a, None, b]) == {
        "total": 10,
        "failed": 3,
        "failure_causes": {"HTTP 500": 2, "timeout": 1},
    }


def test_merging_needs_every_shard_finished_and_of_the_stage(tmp_path):
    base = tmp_path / "out"
    with pytest.raises(MissingInputError, match="No shard folders"):
        distributed.read_shards(base, "correct")
    for i in range(2):
        distributed.shard_dir(base, i, 2).mkdir()
    (distributed.shard_dir(base, 0, 2) / "run_summary.json").write_text(json.dumps({"correct": {}}))
    with pytest.raises(MissingInputError, match="out-shard-00001-of-00002"):
        distributed.read_shards(base, "correct")
    (distributed.shard_dir(base, 1, 2) / "run_summary.json").write_text(json.dumps({"collect": {}}))
    with pytest.raises(InvalidInputError, match="no `correct` run summary"):
        distributed.read_shards(base, "correct")
    distributed.shard_dir(base, 0, 3).mkdir()
    with pytest.raises(InvalidInputError, match="different shard counts"):
        distributed.read_shards(base, "correct")


# ------------------------------------------------------------------------------------ correct
def _corrector_responder():
    """A LeMa-format correction; it reaches gold when (question index + seed) is even."""
    golds = [(p.question, p.gold_answer) for p in load_sample("train") + load_sample("test")]

    def respond(payload: dict) -> str:
        text = payload["messages"][-1]["content"]
        query = text.rsplit("Question:", 1)[1]
        for i, (q, gold) in enumerate(golds):
            if q in query:
                answer = gold if (i + (payload.get("seed") or 0)) % 2 == 0 else f"{gold}1"
                return correction_target(1, f"Question {i} needs another step.", [f"The answer is {answer}."])
        return "no idea"

    return respond


def _llm_corrector(url: str, **kw) -> dict:
    cfg = dict(
        backend="openai", model="fake-corrector", base_urls=[url], prompt_style="chat", num_attempts=2,
        temperature=0.7, max_tokens=128, concurrency=4, progress=False,
    )  # fmt: skip
    cfg.update(kw)
    return cfg


def test_correct_shards_merge_into_the_unsharded_dataset(tmp_path):
    folder, mistakes = _mistakes_folder(tmp_path)
    one, two = tmp_path / "one" / "corrections", tmp_path / "two" / "corrections"
    with FakeOpenAIServer(responder=_corrector_responder()) as srv:
        cfg = _llm_corrector(srv.base_url, mistakes=str(folder))
        single = correct(CorrectConfig(**cfg, output_dir=str(one)))
        asked = srv.total_requests
        srv.reset_counts()
        parts = [correct(CorrectConfig(**cfg, output_dir=str(two), shard=f"{i}/3")) for i in range(3)]
        # Each request asked once, by one shard: as many as one process asked.
        assert srv.total_requests == asked == 2 * len(mistakes) and max(srv.request_counts.values()) == 1
        assert not two.exists()  # only the merge writes the real folder
        srv.reset_counts()
        merged = correct(CorrectConfig(**cfg, output_dir=str(two), merge_shards=True))
        assert srv.total_requests == 0  # merging asks nothing
    assert [p["mistakes"] for p in parts] == [3, 2, 2]  # contiguous slices of the 7 mistakes
    for i, p in enumerate(parts):
        shard = tmp_path / "two" / f"corrections-shard-{i:05d}-of-00003"
        assert p["output_dir"] == str(shard) and (shard / "run_summary.json").is_file()
    # Same parquet files (content-named: same rows, same order) and the same card.
    assert _tables(one) == _tables(two)
    assert {k.split("/")[1] for k in _tables(two)} == {"sample", "sample-rejected"}
    assert _card(one) == _card(two)
    for key in (
        "n",
        "accepted",
        "rejected",
        "mistakes",
        "reject_reasons",
        "by_generator",
        "by_step_position",
    ):
        assert merged[key] == single[key], key
    assert 0 < merged["accepted"] < merged["n"] == 2 * len(mistakes)
    assert merged["merged_shards"] == 3 and merged["output_dir"] == str(two)
    for key in ("prompt_tokens", "completion_tokens", "requests"):
        assert merged["tokens"][key] == single["tokens"][key], key
    assert merged["requests"]["sample"]["total"] == single["requests"]["sample"]["total"] == 14


def test_a_shard_with_failed_requests_is_not_merged_until_rerun(tmp_path):
    folder, _ = _mistakes_folder(tmp_path)
    one, two = tmp_path / "one" / "corrections", tmp_path / "two" / "corrections"
    reply = _corrector_responder()
    with (
        FakeOpenAIServer(responder=reply) as ok,
        FakeOpenAIServer(reply, 0.5, faults=("500",), seed=3) as bad,
    ):
        cfg = _llm_corrector(ok.base_url, mistakes=str(folder), max_retries=0)
        correct(CorrectConfig(**cfg, output_dir=str(one)))
        correct(CorrectConfig(**cfg, output_dir=str(two), shard="0/2"))
        partial = correct(
            CorrectConfig(**{**cfg, "base_urls": [bad.base_url]}, output_dir=str(two), shard="1/2")
        )
        failed = partial["requests"]["sample"]["failed"]
        assert 0 < failed < partial["requests"]["sample"]["total"]  # a first, partial run is written
        with pytest.raises(InvalidInputError, match=rf"corrections-shard-00001-of-00002 \({failed}\); rerun"):
            correct(CorrectConfig(**cfg, output_dir=str(two), merge_shards=True))
        assert not two.exists()
        ok.reset_counts()
        correct(CorrectConfig(**cfg, output_dir=str(two), shard="1/2"))  # the rerun asks only what failed
        assert ok.total_requests == failed
        correct(CorrectConfig(**cfg, output_dir=str(two), merge_shards=True))
    assert _tables(one) == _tables(two)


def test_reference_corrector_with_more_shards_than_mistakes(tmp_path):
    folder, _ = _mistakes_folder(tmp_path)
    one, two = tmp_path / "one" / "corr", tmp_path / "two" / "corr"  # the card names the folder
    cfg = dict(mistakes=str(folder), mistakes_limit=2)
    single = correct(CorrectConfig(**cfg, output_dir=str(one)))
    parts = [correct(CorrectConfig(**cfg, output_dir=str(two), shard=f"{i}/3")) for i in range(3)]
    assert [p["n"] for p in parts] == [1, 1, 0]  # the empty shard still finishes
    assert not (tmp_path / "two" / "corr-shard-00002-of-00003" / "data").exists()
    merged = correct(CorrectConfig(**cfg, output_dir=str(two), merge_shards=True))
    assert merged["n"] == single["n"] == 2 and merged["accepted"] == single["accepted"]
    assert _tables(one) == _tables(two) and _card(one) == _card(two)


# ------------------------------------------------------------------------------------ evolve
@pytest.mark.parametrize("strategy", ["correction_centric", "general"])
def test_evolve_shards_merge_into_the_unsharded_dataset(tmp_path, strategy):
    one, two = tmp_path / "one" / "evolved", tmp_path / "two" / "evolved"
    with FakeOpenAIServer(responder=evolve_responder) as srv:
        cfg = dict(
            strategy=strategy, corrections=_corrections_folder(tmp_path), problems="sample", problems_limit=8,
            num_seeds=24, seed=1, backend="openai", model="fake-model", base_urls=[srv.base_url],
            prompt_style="chat", progress=False,
        )  # fmt: skip
        single = evolve(EvolveConfig(**cfg, output_dir=str(one)))
        srv.reset_counts()
        parts = [evolve(EvolveConfig(**cfg, output_dir=str(two), shard=f"{i}/3")) for i in range(3)]
        # Each draw's new question asked once; only a question that grew in two shards is answered
        # twice (a shard knows only its own questions).
        asked = Counter(json.dumps(p, sort_keys=True) for p in srv.payloads)
        evolved = [k for k in asked if "Seed Problem:" in k]
        assert len(evolved) == 24 and {asked[k] for k in evolved} == {1}
        srv.reset_counts()
        merged = evolve(EvolveConfig(**cfg, output_dir=str(two), merge_shards=True))
        assert srv.total_requests == 0
    assert [p["seeds"] for p in parts] == [8, 8, 8]
    for i in range(3):
        assert (tmp_path / "two" / f"evolved-shard-{i:05d}-of-00003" / DRAWS_FILE).is_file()
    # Seeds are drawn with replacement: the same new question grew in two shards, and each shard
    # kept its copy; the merge drops the later one as a duplicate, as one process did.
    assert sum(p["kept"] for p in parts) > merged["kept"]
    assert sum(p["dropped"].get("duplicate", 0) for p in parts) < merged["dropped"]["duplicate"]
    for key in ("seeds", "unique_seed_questions", "new_questions", "kept", "dropped", "keep_rate"):
        assert merged[key] == single[key], key
    assert _tables(one) == _tables(two) and _tables(one)
    assert _card(one) == _card(two)


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"num_seeds": 8}, "num_seeds=6 (evo-shard-00000-of-00002), this merge with num_seeds=8"),
        ({"seed": 3}, "seed=1 (evo-shard-00000-of-00002), this merge with seed=3"),
        ({"num_answers": 5}, "num_answers=3 (evo-shard-00000-of-00002), this merge with num_answers=5"),
    ],
)
def test_evolve_merge_refuses_shards_of_another_config(tmp_path, change, line):
    with FakeOpenAIServer(responder=evolve_responder) as srv:
        cfg = dict(
            corrections=_corrections_folder(tmp_path), num_seeds=6, seed=1, backend="openai", model="fake-model",
            base_urls=[srv.base_url], prompt_style="chat", progress=False, output_dir=str(tmp_path / "evo"),
        )  # fmt: skip
        for i in range(2):
            evolve(EvolveConfig(**cfg, shard=f"{i}/2"))
        with pytest.raises(InvalidInputError, match=re.escape(line)) as err:
            evolve(EvolveConfig(**{**cfg, **change}, merge_shards=True))
    assert "\n" not in str(err.value) and str(err.value).startswith("evolve: the shards ran with")
    assert not (tmp_path / "evo").exists()


# ------------------------------------------------------------------------------------ merge checks
def _collect_shards(tmp_path: Path, url: str, n: int = 2, **kw) -> tuple[dict, list[dict]]:
    from lema_hub.collect import CollectConfig, collect
    from tests.test_collect import _endpoint_config

    base = _endpoint_config(tmp_path, url, "mist", problems_limit=None, **kw)
    return base, [collect(CollectConfig(**base, shard=f"{i}/{n}")) for i in range(n)]


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"problems_limit": 3}, "problems_limit=None (mist-shard-00000-of-00002), this merge with problems_limit=3"),
        ({"num_samples": 3}, "num_samples=4 (mist-shard-00000-of-00002), this merge with num_samples=3"),
        ({"temperature": 0.1}, "temperature=0.8 (mist-shard-00000-of-00002), this merge with temperature=0.1"),
        ({"extraction": "strict"}, "extraction='flexible' (mist-shard-00000-of-00002), this merge with extraction='strict'"),
    ],
)  # fmt: skip
def test_collect_merge_refuses_other_data_settings_and_writes_nothing(tmp_path, change, line):
    from lema_hub.collect import CollectConfig, collect
    from tests.test_collect import graded_responder

    with FakeOpenAIServer(responder=graded_responder()) as srv:
        base, _ = _collect_shards(tmp_path, srv.base_url)
        with pytest.raises(InvalidInputError, match=re.escape(line)):
            collect(CollectConfig(**{**base, **change}, merge_shards=True))
        assert not (tmp_path / "mist").exists()
        # Where and how fast the engine ran is not the data: a merge may change it.
        free = dict(base_urls=["http://127.0.0.1:9/v1"], concurrency=1, max_retries=0, progress=True)
        merged = collect(CollectConfig(**{**base, **free}, merge_shards=True))
    assert merged["merged_shards"] == 2 and (tmp_path / "mist" / "run_summary.json").is_file()


def test_collect_merge_refuses_problems_it_cannot_reload(tmp_path):
    from lema_hub.collect import CollectConfig, collect
    from tests.test_collect import graded_responder

    path = tmp_path / "problems.jsonl"
    path.write_text(
        "".join(json.dumps({"question": p.question, "answer": p.gold_solution}) + "\n" for p in load_sample("train")[:5])
    )  # fmt: skip
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        base, _ = _collect_shards(tmp_path, srv.base_url, problems="gsm8k", problems_path=str(path))
    path.unlink()  # the source is gone: the unsharded order cannot be restored
    with pytest.raises(
        InvalidInputError, match=r"^collect: cannot reload the problems \(.*problems.jsonl\)"
    ) as err:
        collect(CollectConfig(**base, merge_shards=True))
    assert "\n" not in str(err.value) and not (tmp_path / "mist").exists()


def test_collect_merge_with_another_limit_is_one_line_exit_2_on_the_cli(tmp_path):
    import yaml

    from tests.test_collect import graded_responder

    with FakeOpenAIServer(responder=graded_responder()) as srv:
        base, _ = _collect_shards(tmp_path, srv.base_url)
    recipe = tmp_path / "cB.yaml"
    recipe.write_text(yaml.safe_dump(base))
    args = ["collect", "--config", str(recipe), "--merge_shards", "true", "--problems_limit", "100"]
    line = _one_line_exit_2(_lema_hub(args, tmp_path))
    assert "problems_limit=None" in line and "problems_limit=100" in line
    assert not (tmp_path / "mist").exists()


def test_merged_collect_summary_adds_up_the_shards_engine_statistics(tmp_path):
    from lema_hub.collect import CollectConfig, collect
    from tests.test_collect import _endpoint_config, graded_responder

    with FakeOpenAIServer(responder=graded_responder()) as srv:
        single = collect(
            CollectConfig(**_endpoint_config(tmp_path, srv.base_url, "one", problems_limit=None))
        )
        base, parts = _collect_shards(tmp_path, srv.base_url, n=3)
        merged = collect(CollectConfig(**base, merge_shards=True))
    assert set(single) - set(merged) == set()  # every key an unsharded run records
    assert merged["shard"] is None and merged["requests"]["sample"] == single["requests"]["sample"]
    assert merged["requests"]["sample"] == distributed.add_counts([p["requests"]["sample"] for p in parts])
    (name,) = single["generators"]
    stats = merged["generators"][name]
    for key in ("samples", "cached", "generated", "failed", "prompt_tokens", "completion_tokens", "hedges",
                "hedge_wins", "wall_s"):  # fmt: skip
        assert stats[key] == pytest.approx(sum(p["generators"][name][key] for p in parts)), key
    assert stats["samples"] == single["generators"][name]["samples"] == merged["samples"]
    assert {"tokens_per_s", "requests_per_s", "backend"} <= set(stats)
    shards_wall = sum(p["wall_s"] for p in parts)
    assert merged["wall_s"] == pytest.approx(shards_wall + merged["merge_wall_s"], abs=0.02)
    recorded = json.loads((tmp_path / "mist" / "run_summary.json").read_text())["collect"]
    assert recorded["generators"][name]["hedges"] == stats["hedges"]


def test_correct_merge_refuses_another_mistakes_limit_and_adds_up_engine_stats(tmp_path):
    folder, mistakes = _mistakes_folder(tmp_path)
    out = tmp_path / "corr"
    with FakeOpenAIServer(responder=_corrector_responder()) as srv:
        cfg = _llm_corrector(srv.base_url, mistakes=str(folder), output_dir=str(out))
        parts = [correct(CorrectConfig(**cfg, shard=f"{i}/3")) for i in range(3)]
        with pytest.raises(
            InvalidInputError,
            match=re.escape(
                "mistakes_limit=None (corr-shard-00000-of-00003), this merge with mistakes_limit=100"
            ),
        ):
            correct(CorrectConfig(**cfg, mistakes_limit=100, merge_shards=True))
        assert not out.exists()
        merged = correct(CorrectConfig(**cfg, merge_shards=True))
    engine = merged["tokens"]["engine"]
    for key in ("samples", "cached", "generated", "failed", "prompt_tokens", "completion_tokens", "hedges",
                "hedge_wins", "wall_s"):  # fmt: skip
        assert engine[key] == pytest.approx(sum(p["tokens"]["engine"][key] for p in parts)), key
    assert engine["samples"] == 2 * len(mistakes) and merged["requests"]["sample"]["total"] == 2 * len(
        mistakes
    )
    assert merged["wall_s"] == pytest.approx(
        sum(p["wall_s"] for p in parts) + merged["merge_wall_s"], abs=0.02
    )


# ------------------------------------------------------------------------------------ the CLI
def _lema_hub(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    full = dict(env or base, PYTHONPATH=str(REPO))
    full.pop("LEMA_HUB_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "lema_hub.cli", *args], capture_output=True, text=True, cwd=cwd, env=full,
        timeout=300,
    )  # fmt: skip


def _one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_bad_shard_specs_and_missing_shards_are_one_line_exit_2(tmp_path):
    folder, _ = _mistakes_folder(tmp_path)
    line = _one_line_exit_2(_lema_hub(["correct", "--mistakes", str(folder), "--shard", "3/2"], tmp_path))
    assert line == "lema-hub correct: shard must be 'i/n' with 0 <= i < n, got '3/2'"
    evolve_args = ["evolve", "--corrections", str(folder), "--shard", "2/2"]
    line = _one_line_exit_2(_lema_hub(evolve_args, tmp_path))
    assert line == "lema-hub evolve: shard must be 'i/n' with 0 <= i < n, got '2/2'"
    both = ["correct", "--mistakes", str(folder), "--shard", "0/2", "--merge_shards", "true"]
    assert "without --shard" in _one_line_exit_2(_lema_hub(both, tmp_path))
    out = tmp_path / "corr"
    shard = _lema_hub(
        ["correct", "--mistakes", str(folder), "--output_dir", str(out), "--shard", "1/3"], tmp_path
    )
    assert shard.returncode == 0, shard.stderr[-2000:]
    merge = ["correct", "--mistakes", str(folder), "--output_dir", str(out), "--merge_shards", "true"]
    line = _one_line_exit_2(_lema_hub(merge, tmp_path))
    assert (
        "corr-shard-00000-of-00003" in line and "corr-shard-00002-of-00003" in line and "not finished" in line
    )
    assert "corr-shard-00001-of-00003" not in line and not out.exists()


def test_shards_never_push_and_the_merge_pushes_once(tmp_path):
    from tests.hub_emulator import HubEmulator

    folder, _ = _mistakes_folder(tmp_path)
    out = tmp_path / "corr"
    args = ["correct", "--mistakes", str(folder), "--output_dir", str(out), "--push_to_hub", "true"]
    args += ["--hub_repo_id", "lema-tester/lema-corrections"]
    with HubEmulator() as hub:
        env = hub.client_env(tmp_path)
        for i in range(2):
            proc = _lema_hub([*args, "--shard", f"{i}/2"], tmp_path, env)
            assert proc.returncode == 0, proc.stderr[-2000:]
        assert hub.state.repos == {}  # no shard pushed
        proc = _lema_hub([*args, "--merge_shards", "true"], tmp_path, env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        commits = hub.commits("lema-tester/lema-corrections")
        assert len(commits) == 2  # the initial commit and the merged folder
        pushed = hub.files("lema-tester/lema-corrections")
    assert "README.md" in pushed and any(p.startswith("data/sample/") for p in pushed)
    assert not any("shard" in p for p in pushed)
    record = json.loads((out / "run_summary.json").read_text())["correct"]
    assert record["merged_shards"] == 2 and record["n"] == 7
