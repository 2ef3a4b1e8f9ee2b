"""Generation stages under `accelerate launch`: two CPU ranks write what one process writes.

The launched tests start `accelerate launch --config_file recipes/accelerate_configs/cpu_multiprocess.yaml`
(torchrun: two processes on 127.0.0.1, gloo) against the fake OpenAI server with deterministic
replies, and compare every config's rows and the card with a single-process run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lema_hub import distributed
from lema_hub.distributed import World
from lema_hub.problems import load_sample
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_collect import graded_responder

REPO = Path(__file__).resolve().parents[1]
LAUNCH_CONFIG = REPO / "recipes" / "accelerate_configs" / "cpu_multiprocess.yaml"


# ------------------------------------------------------------------------------------ unit tests
def test_world_from_launcher_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.world() == World(0, 1, 0, 1) and distributed.world().is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    w = distributed.world()
    assert w == World(3, 4, 1, 2) and not w.is_main


def test_rank_endpoints_caches_and_devices(monkeypatch, tmp_path):
    urls = [f"http://h{i}/v1" for i in range(4)]
    assert distributed.rank_base_urls(urls, World(1, 2, 1, 2)) == [urls[1], urls[3]]
    assert distributed.rank_base_urls(urls[:1], World(1, 2, 1, 2)) == urls[:1]  # fewer than ranks: share
    assert distributed.rank_cache_path(tmp_path / "g.jsonl", World(1, 2, 1, 2)) == tmp_path / (
        "g.rank-00001-of-00002.jsonl"
    )
    assert distributed.rank_cache_path(tmp_path / "g.jsonl", World()) == tmp_path / "g.jsonl"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert distributed.bind_devices(World(1, 2, 1, 2)) == ["6", "7"]  # a block of 2 GPUs per rank
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6,7"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert distributed.bind_devices(World(1, 2, 1, 2)) is None  # fewer GPUs than ranks: left alone
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_merge_summaries_adds_counts_and_rates():
    a = {"backend": "openai", "model": "m", "samples": 4, "cached": 1, "generated": 2, "failed": 1}
    a.update(
        failure_reasons={"HTTP 500": 1}, prompt_tokens=10, completion_tokens=20, wall_s=2.0, tokens_per_s=5.0
    )
    b = dict(a, samples=6, cached=0, generated=6, failed=0, failure_reasons={}, tokens_per_s=10.0)
    m = distributed.merge_summaries([a, b], wall=4.0)
    assert (m["samples"], m["cached"], m["generated"], m["failed"]) == (10, 1, 8, 1)
    assert m["failure_reasons"] == {"HTTP 500": 1} and m["prompt_tokens"] == 20
    assert m["requests_per_s"] == 9 / 4 and m["tokens_per_s"] == (10 + 20) / 4


def test_finished_shards_needs_every_shard(tmp_path):
    base = tmp_path / "out"
    for i in (0, 2):
        distributed.shard_dir(base, i, 3).mkdir()
        (distributed.shard_dir(base, i, 3) / "run_summary.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="out-shard-00001-of-00003"):
        distributed.finished_shards(base)
    distributed.shard_dir(base, 1, 3).mkdir()
    (distributed.shard_dir(base, 1, 3) / "run_summary.json").write_text("{}")
    assert [p.name for p in distributed.finished_shards(base)] == [
        f"out-shard-0000{i}-of-00003" for i in range(3)
    ]


# ------------------------------------------------------------------------------------ launched runs
def corrector_responder():
    """A LeMa-format correction per question: even questions reach gold, odd ones a wrong answer."""
    from lema_hub.formats import correction_target

    golds = [(p.question, p.gold_answer) for p in load_sample("train")]

    def respond(payload: dict) -> str:
        text = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
        for i, (q, gold) in enumerate(golds):
            if q in text:
                answer = gold if i % 2 == 0 else f"{gold}1"
                return correction_target(1, f"Question {i} needs another step.", [f"The answer is {answer}."])
        return "no idea"

    return respond


def responder():
    """Collect paths (graded_responder) or corrections, by the prompt."""
    collect_reply, correct_reply = graded_responder(), corrector_responder()

    def respond(payload: dict) -> str:
        text = json.dumps(payload)
        return correct_reply(payload) if "Incorrect Step:" in text else collect_reply(payload)

    return respond


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, config: dict, tmp: Path, name: str, ok: bool = True) -> subprocess.CompletedProcess:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(LAUNCH_CONFIG),
        "--main_process_port",  # a free port: other launches may hold accelerate's default 29500
        str(_free_port()),
        str(REPO / "recipes" / script),
        "--config",
        str(path),
    ]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stderr[-4000:]
    return proc


def _tables(folder: Path) -> dict[str, list[dict]]:
    import pyarrow.parquet as pq

    return {
        p.relative_to(folder).as_posix(): pq.read_table(p).to_pylist()
        for p in sorted((folder / "data").rglob("*.parquet"))
    }


def _card(folder: Path) -> str:
    return (folder / "README.md").read_text()  # cards carry no clock: byte-equal


def _ranks(folder: Path, recipe: str) -> list[list[dict]]:
    summary = json.loads((folder / "run_summary.json").read_text())[recipe]
    assert summary["distributed"]["world_size"] == 2
    return [call["ranks"] for call in summary["distributed"]["calls"]]


def _assert_two_ranks(calls: list[list[dict]], cache_dir: Path, total: int) -> None:
    for ranks in calls:
        assert [r["rank"] for r in ranks] == [0, 1]
        assert len({r["pid"] for r in ranks}) == 2, ranks  # two processes generated
        assert all(r["requests"] > 0 for r in ranks) and "error" not in str(ranks)
    # Each rank wrote its own shard of the results (its request cache), one line per sample.
    shards = sorted(cache_dir.rglob("*.rank-*-of-00002.jsonl"))
    by_cache: dict[str, list[str]] = {}
    for p in shards:
        stem, rank = re.fullmatch(r"(.*)\.rank-(\d+)-of-00002\.jsonl", p.name).groups()
        by_cache.setdefault(stem, []).append(rank)
    assert by_cache and all(ranks == ["00000", "00001"] for ranks in by_cache.values()), by_cache
    lines = [len(p.read_text().splitlines()) for p in shards]
    assert all(n > 0 for n in lines) and sum(lines) == total


@pytest.mark.slow
def test_collect_and_correct_on_two_ranks_equal_one_process(tmp_path):
    from lema_hub.collect import CollectConfig, collect
    from lema_hub.correct import CorrectConfig, correct

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    with FakeOpenAIServer(responder=responder()) as srv:
        collect_cfg = dict(
            problems="sample", problems_split="train", problems_limit=7, backend="openai", model="fake-model",
            base_urls=[srv.base_url], prompt_style="chat", num_samples=4, temperature=0.8, max_tokens=64,
            seed=0, concurrency=4, progress=False,
        )  # fmt: skip
        one = tmp_path / "one" / "lema-mistakes"
        collect(CollectConfig(**collect_cfg, output_dir=str(one)))
        single = srv.total_requests
        srv.reset_counts()
        two = tmp_path / "two" / "lema-mistakes"
        _launch("collect.py", {**collect_cfg, "output_dir": str(two)}, tmp_path, "collect")
        # Every request asked once, by one of the two ranks: as many as one process asked.
        assert srv.total_requests == single == 28 and max(srv.request_counts.values()) == 1
        first = _tables(two)
        srv.reset_counts()  # relaunched: each rank resumes from its own shard, nothing is asked again
        _launch("collect.py", {**collect_cfg, "output_dir": str(two)}, tmp_path, "collect")
        assert srv.total_requests == 0 and _tables(two) == first

        correct_cfg = dict(
            backend="openai", model="fake-model", base_urls=[srv.base_url], prompt_style="chat",
            max_tokens=128, progress=False, reference_qa=True,
        )  # fmt: skip
        c_one = tmp_path / "one" / "lema-corrections"
        correct(CorrectConfig(**correct_cfg, mistakes=str(one), output_dir=str(c_one)))
        srv.reset_counts()
        c_two = tmp_path / "two" / "lema-corrections"
        _launch(
            "correct.py", {**correct_cfg, "mistakes": str(two), "output_dir": str(c_two)}, tmp_path, "correct"
        )
        assert max(srv.request_counts.values()) == 1

    # Same rows, same order, in every config; the same card, byte for byte.
    for a, b in ((one, two), (c_one, c_two)):
        assert _tables(a) == _tables(b) and _tables(a)
        assert _card(a) == _card(b)
    mistakes = [r for k, rows in _tables(two).items() if k.startswith("data/sample-samples/") for r in rows]
    assert len(mistakes) == 28 and {r["verdict"] for r in mistakes} == {"correct", "wrong"}
    accepted = [r for rows in _tables(c_two).values() for r in rows if r["accepted"]]
    assert accepted and len(accepted) < sum(len(rows) for rows in _tables(c_two).values())

    _assert_two_ranks(_ranks(two, "collect"), two / ".cache", total=28)
    corr_calls = _ranks(c_two, "correct")
    n_corrections = sum(len(rows) for rows in _tables(c_two).values())
    _assert_two_ranks(corr_calls, c_two / ".cache", total=n_corrections)
    assert sum(r["requests"] for r in corr_calls[0]) == n_corrections
    # The single-process record has no `distributed` entry.
    assert "distributed" not in json.loads((one / "run_summary.json").read_text())["collect"]


@pytest.mark.slow
def test_evolve_and_evaluate_on_two_ranks_equal_one_process(tmp_path):
    from lema_hub.evaluate import EvalConfig, evaluate
    from lema_hub.evolve import EvolveConfig, evolve
    from tests.test_evolve import _corrections_folder
    from tests.test_evolve import responder as evolve_responder

    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    golds = {p.question: p.gold_answer for p in load_sample("test")}

    def eval_responder(payload: dict) -> str:
        text = payload["messages"][-1]["content"]
        question = text.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
        if payload["model"] == "good" or len(question) % 3 == 0:
            return f"Step 1: compute. The answer is {golds[question]}."
        return "Step 1: guess. The answer is -1."

    with FakeOpenAIServer(responder=evolve_responder) as srv:
        evolve_cfg = dict(
            strategy="correction_centric", corrections=_corrections_folder(tmp_path), num_seeds=24, seed=1,
            backend="openai", model="fake-model", base_urls=[srv.base_url], prompt_style="chat", progress=False,
        )  # fmt: skip
        one = tmp_path / "one" / "lema-evolved"
        evolve(EvolveConfig(**evolve_cfg, output_dir=str(one)))
        single = srv.total_requests
        srv.reset_counts()
        two = tmp_path / "two" / "lema-evolved"
        _launch("evolve.py", {**evolve_cfg, "output_dir": str(two)}, tmp_path, "evolve")
        assert srv.total_requests == single and max(srv.request_counts.values()) == 1

    with FakeOpenAIServer(responder=eval_responder) as srv:
        eval_cfg = dict(
            models=["good", "bad"], model_labels=["lema", "baseline"], backend="openai", base_urls=[srv.base_url],
            problems="sample", problems_limit=9, max_retries=1, prompt_style="chat", update_model_card=False,
        )  # fmt: skip
        e_one = tmp_path / "one" / "eval"
        evaluate(EvalConfig(**eval_cfg, output_dir=str(e_one)))
        srv.reset_counts()
        e_two = tmp_path / "two" / "eval"
        _launch("evaluate.py", {**eval_cfg, "output_dir": str(e_two)}, tmp_path, "evaluate")
        assert srv.total_requests == 18 and max(srv.request_counts.values()) == 1

    for a, b in ((one, two), (e_one, e_two)):
        assert _tables(a) == _tables(b) and _tables(a)
        assert _card(a) == _card(b)
    results = json.loads((e_two / "results.json").read_text())
    assert results["lema-sample"]["accuracy"] == 1.0 > results["baseline-sample"]["accuracy"] > 0
    assert (e_one / "comparison.md").read_text() == (e_two / "comparison.md").read_text()

    evolve_calls = _ranks(two, "evolve")  # new questions, then their answers: both split
    assert len(evolve_calls) == 2
    n_samples = sum(len(p.read_text().splitlines()) for p in (one / ".cache").rglob("*.jsonl"))
    _assert_two_ranks(evolve_calls, two / ".cache", total=n_samples)
    eval_calls = _ranks(e_two, "evaluate")  # one engine per model, each split
    assert len(eval_calls) == 2 and [sum(r["requests"] for r in ranks) for ranks in eval_calls] == [9, 9]
    _assert_two_ranks(eval_calls, e_two / ".cache", total=18)


@pytest.mark.slow
def test_each_rank_uses_its_own_endpoint(tmp_path):
    from lema_hub.collect import CollectConfig, collect

    questions = [p.question for p in load_sample("train")[:7]]

    def asked(srv: FakeOpenAIServer) -> set[int]:
        texts = [p["messages"][-1]["content"] for p in srv.payloads]
        return {i for i, q in enumerate(questions) if any(f"Question: {q}\n" in t for t in texts)}

    reply = graded_responder()
    with FakeOpenAIServer(responder=reply) as a, FakeOpenAIServer(responder=reply) as b:
        cfg = dict(
            problems="sample", problems_split="train", problems_limit=7, backend="openai", model="fake-model",
            base_urls=[a.base_url, b.base_url], prompt_style="chat", num_samples=2, max_tokens=64, seed=0,
            concurrency=4, progress=False,
        )  # fmt: skip
        one = tmp_path / "one" / "lema-mistakes"
        collect(CollectConfig(**cfg, output_dir=str(one)))
        assert asked(a) and asked(b)  # one process spreads its requests over both servers
        a.reset_counts()
        b.reset_counts()
        two = tmp_path / "two" / "lema-mistakes"
        _launch("collect.py", {**cfg, "output_dir": str(two)}, tmp_path, "collect")
        # Rank 0 took the first 4 problems and asked only server a; rank 1 the last 3, server b.
        assert asked(a) == {0, 1, 2, 3} and asked(b) == {4, 5, 6}
        assert (a.total_requests, b.total_requests) == (8, 6)
    assert _tables(one) == _tables(two)


@pytest.mark.slow
def test_a_failing_rank_is_reported_and_the_relaunch_completes_the_run(tmp_path):
    from lema_hub.collect import CollectConfig, collect

    reply = graded_responder()
    dead = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there: rank 1's requests fail
    with FakeOpenAIServer(responder=reply) as a, FakeOpenAIServer(responder=reply) as b:
        cfg = dict(
            problems="sample", problems_split="train", problems_limit=7, backend="openai", model="fake-model",
            prompt_style="chat", num_samples=2, max_tokens=64, seed=0, concurrency=4, progress=False,
            max_retries=0, request_timeout=5,
        )  # fmt: skip
        one = tmp_path / "one" / "lema-mistakes"
        collect(CollectConfig(**cfg, base_urls=[a.base_url], output_dir=str(one)))
        a.reset_counts()
        two = tmp_path / "two" / "lema-mistakes"
        partial = _launch(
            "collect.py", {**cfg, "base_urls": [a.base_url, dead], "output_dir": str(two)}, tmp_path,
            "collect", ok=False,
        )  # fmt: skip
        # As on one process: the first, partial run is written, says what failed and why, exits 1.
        assert "6 of 14 requests failed" in partial.stderr or "6 failed" in partial.stderr, partial.stderr[
            -2000:
        ]
        summary = json.loads((two / "run_summary.json").read_text())["collect"]
        assert summary["failed_requests"] == 6 and summary["samples"] == 8
        assert a.total_requests == 8  # rank 0 finished its 4 problems
        a.reset_counts()
        _launch("collect.py", {**cfg, "base_urls": [a.base_url, b.base_url], "output_dir": str(two)}, tmp_path, "collect")  # fmt: skip
        # Rank 0's slice came from its shard; only rank 1's failed requests were asked again.
        assert a.total_requests == 0 and b.total_requests == 6
    assert _tables(one) == _tables(two)


@pytest.mark.slow
def test_local_model_on_two_ranks_equals_one_process(tmp_path, tiny_model):
    """The transformers backend: each rank loads its own copy of the model and generates its slice."""
    from lema_hub.evaluate import EvalConfig, evaluate

    # batch_size 1: no padding, so a row's numbers do not depend on which rows share its batch.
    cfg = dict(
        models=[tiny_model], backend="transformers", problems="sample", problems_limit=6, max_new_tokens=12,
        batch_size=1, prompt_style="plain", update_model_card=False,
    )  # fmt: skip
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one, two = tmp_path / "one" / "eval", tmp_path / "two" / "eval"
    evaluate(EvalConfig(**cfg, output_dir=str(one)))
    _launch("evaluate.py", {**cfg, "output_dir": str(two)}, tmp_path, "evaluate")
    assert _tables(one) == _tables(two)
    _assert_two_ranks(_ranks(two, "evaluate"), two / ".cache", total=6)


@pytest.mark.slow
def test_an_error_on_the_ranks_fails_the_run_without_hanging(tmp_path):
    """A backend that cannot start raises on every rank: the main process names each and exits non-zero."""
    out = tmp_path / "lema-mistakes"
    cfg = dict(
        problems="sample", problems_limit=4, backend="transformers", model=str(tmp_path / "no-such-model"),
        prompt_style="plain", num_samples=1, max_tokens=8, progress=False, output_dir=str(out),
    )  # fmt: skip
    message = _launch("collect.py", cfg, tmp_path, "collect", ok=False).stderr
    assert "generation failed on 2 rank(s)" in message and "rank 0: " in message and "rank 1: " in message
    assert not (out / "data").exists()  # nothing written
