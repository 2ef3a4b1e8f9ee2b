"""Mistake collection end to end: real HTTP server, real subprocesses, the tiny local model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lema_hub.collect import CollectConfig, collect, generator_configs
from lema_hub.problems import load_sample
from tests.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]
SAMPLE_FIELDS = {
    "problem_id", "source", "split", "question", "gold_solution", "gold_answer", "level", "subject", "candidates", "generator",
    "sample_index", "sampling", "completion", "steps", "predicted_answer", "verdict", "format_ok", "finish_reason",
    "prompt_tokens", "completion_tokens", "pass_rate",
}  # fmt: skip


def graded_responder():
    """Sample 0 right; samples 1 and 2 the same wrong path (case/space differ); sample 3 another wrong one."""
    golds = {p.question: p.gold_answer for p in load_sample("train")}

    def respond(payload: dict) -> str:
        text = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
        question = text.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
        gold = golds[question]
        k = payload.get("seed", 0) % 4
        wrong = int(float(gold.replace(",", ""))) + (1 if k in (1, 2) else 2)
        if k == 0:
            return f"We work it out from the question. The answer is {gold}."
        if k == 1:
            return f"First we add the numbers. Then we are done. The answer is {wrong}."
        if k == 2:
            return f"first we add the  numbers.  Then we are done. The answer is {wrong}."
        return f"We multiply instead of adding. The answer is {wrong}."

    return respond


def _endpoint_config(tmp: Path, url: str, name: str, **kw) -> dict:
    cfg = dict(
        problems="sample", problems_split="train", problems_limit=6, output_dir=str(tmp / name),
        backend="openai", model="fake-model", base_urls=[url], prompt_style="chat", num_samples=4,
        temperature=0.8, max_tokens=64, seed=0, concurrency=4, request_timeout=0.5, max_retries=12,
        retry_base_delay=0.01, retry_max_delay=0.05, progress=False, write_card=False,
    )  # fmt: skip
    cfg.update(kw)
    return cfg


def _rows(folder: str, config: str) -> list[dict]:
    from datasets import load_dataset

    return load_dataset(folder, config, split="train").to_list()


def test_collect_against_a_faulty_endpoint(tmp_path):
    with FakeOpenAIServer(responder=graded_responder(), fault_rate=0.3, seed=7, hang_s=1.5) as srv:
        summary = collect(CollectConfig(**_endpoint_config(tmp_path, srv.base_url, "m")))
        assert len(srv.success_counts) == 24 and set(srv.success_counts.values()) == {1}
        assert sum(srv.fault_counts.values()) > 0
    assert summary["output_dir"] == str(tmp_path / "m")
    assert (summary["samples"], summary["correct"], summary["wrong"], summary["mistakes"]) == (24, 6, 18, 12)
    assert summary["duplicates_removed"] == 6 and summary["failed_requests"] == 0
    samples = _rows(summary["output_dir"], "sample-samples")
    mistakes = _rows(summary["output_dir"], "sample")
    assert set(samples[0]) == SAMPLE_FIELDS
    assert [(r["problem_id"], r["sample_index"]) for r in samples[:4]] == [
        (samples[0]["problem_id"], i) for i in range(4)
    ]
    assert all(r["pass_rate"] == 0.25 and r["generator"] == "fake-model" for r in samples)
    assert all(
        r["sampling"] == {"temperature": 0.8, "top_p": 1.0, "max_tokens": 64, "seed": 0} for r in samples
    )
    assert all(r["verdict"] == "wrong" for r in mistakes)
    assert {r["sample_index"] for r in mistakes} == {1, 3}  # sample 2 duplicates sample 1
    assert all(r["steps"] and r["predicted_answer"] for r in mistakes)
    record = json.loads((tmp_path / "m" / "run_summary.json").read_text())
    assert record["collect"]["mistakes"] == 12


def test_several_generators_and_their_errors(tmp_path):
    with (
        FakeOpenAIServer(responder=graded_responder()) as a,
        FakeOpenAIServer(responder=graded_responder()) as b,
    ):
        cfg = _endpoint_config(tmp_path, a.base_url, "g", problems_limit=2, num_samples=2, generators=[
            {"name": "gen-a", "model": "model-a"},
            {"name": "gen-b", "model": "model-b", "base_urls": [b.base_url], "num_samples": 1},
        ])  # fmt: skip
        summary = collect(CollectConfig(**cfg))
        assert a.total_requests == 4 and b.total_requests == 2
        # Each generator asks for its own model.
        assert {p["model"] for p in a.payloads} == {"model-a"}
        assert {p["model"] for p in b.payloads} == {"model-b"}
    samples = _rows(summary["output_dir"], "sample-samples")
    assert [r["generator"] for r in samples] == ["gen-a"] * 4 + ["gen-b"] * 2
    bad = CollectConfig(**_endpoint_config(tmp_path, "http://x", "bad", generators=[{"modle": "typo"}]))
    with pytest.raises(ValueError, match="unknown key"):
        generator_configs(bad)


def _run_recipe(config: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "recipes" / "collect.py"), "--config", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sigkill_mid_run_then_resume_gives_the_same_dataset(tmp_path):
    with FakeOpenAIServer(responder=graded_responder(), latency_s=0.05, fault_rate=0.1, seed=1) as srv:
        # Reference: one uninterrupted run.
        ref = collect(CollectConfig(**_endpoint_config(tmp_path, srv.base_url, "ref", problems_limit=10)))
        srv.reset_counts()

        cfg = _endpoint_config(tmp_path, srv.base_url, "killed", problems_limit=10, concurrency=2)
        config = tmp_path / "collect.yaml"
        config.write_text(yaml.safe_dump(cfg))
        proc = _run_recipe(config)
        deadline = time.time() + 120
        while sum(srv.success_counts.values()) < 12 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cache_file = tmp_path / "killed" / ".cache" / "requests" / "fake-model.jsonl"
        finished = {
            json.loads(line)["key"] for line in cache_file.read_text().splitlines() if line.endswith("}")
        }
        assert 10 <= len(finished) < 40
        assert not (tmp_path / "killed" / "run_summary.json").exists()

        proc = _run_recipe(config)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out

    # Nothing that had finished before the kill was asked again; at most the requests in flight
    # at the kill (answered by the server, never recorded by the dead client) were repeated.
    repeated = {k for k, c in srv.success_counts.items() if c > 1}
    assert not repeated & finished
    assert len(repeated) <= cfg["concurrency"]
    assert len(srv.success_counts) == 40
    for config_name in ("sample", "sample-samples"):
        assert _rows(str(tmp_path / "killed"), config_name) == _rows(ref["output_dir"], config_name)


def test_shards_merge_into_the_unsharded_dataset(tmp_path):
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        full = collect(CollectConfig(**_endpoint_config(tmp_path, srv.base_url, "full", problems_limit=5)))
        base = _endpoint_config(tmp_path, srv.base_url, "sharded", problems_limit=5)
        parts = [collect(CollectConfig(**base, shard=f"{i}/3")) for i in range(3)]
        assert [Path(p["output_dir"]).name for p in parts] == [
            f"sharded-shard-{i:05d}-of-00003" for i in range(3)
        ]
        assert sum(p["problems"] for p in parts) == 5
        merged = collect(CollectConfig(**base, merge_shards=True))
    assert merged["output_dir"] == str(tmp_path / "sharded") and merged["merged_shards"] == 3
    for config_name in ("sample", "sample-samples"):
        assert _rows(merged["output_dir"], config_name) == _rows(full["output_dir"], config_name)
    # More shards than problems: the empty shards still finish, and merge.
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        few = _endpoint_config(tmp_path, srv.base_url, "few", problems_limit=2, num_samples=1)
        parts = [collect(CollectConfig(**few, shard=f"{i}/3")) for i in range(3)]
        assert [p["samples"] for p in parts] == [1, 1, 0]
        assert collect(CollectConfig(**few, merge_shards=True))["samples"] == 2
    with pytest.raises(FileNotFoundError, match="not finished"):
        import shutil

        shutil.rmtree(tmp_path / "sharded-shard-00001-of-00003")
        (tmp_path / "sharded-shard-00001-of-00003").mkdir()
        collect(CollectConfig(**base, merge_shards=True))


def test_collect_with_the_local_tiny_model(tiny_model, tmp_path):
    from lema_hub.cli import run_stage

    summary = run_stage("collect", [
        "--config", str(REPO / "recipes/smollm2-135m/collect/config_sample.yaml"), "--model", tiny_model,
        "--problems_limit", "2", "--num_samples", "2", "--max_tokens", "8", "--output_dir", str(tmp_path / "t"),
        "--progress", "false",
    ])  # fmt: skip
    assert summary["samples"] == 4 and summary["failed_requests"] == 0
    rows = _rows(summary["output_dir"], "sample-samples")
    assert {r["generator"] for r in rows} == {tiny_model}
    assert all(r["completion_tokens"] <= 8 and r["prompt_tokens"] > 0 for r in rows)
    assert (tmp_path / "t" / "README.md").is_file()


def unfinished_responder():
    """Per sample k: 0 right, 1 wrong, 2 no answer, 3 cut at max_tokens, 4 right without the phrase."""
    golds = {p.question: p.gold_answer for p in load_sample("train")}

    def respond(payload: dict) -> str:
        text = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
        gold = golds[text.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]]
        k = payload.get("seed", 0) % 5
        wrong = int(float(gold.replace(",", ""))) + 1
        return [
            f"We work it out. The answer is {gold}.",
            f"We add instead. The answer is {wrong}.",
            "Let us think about this problem carefully and decide later.",
            "First we add 3 and 4 to get 7, and then " + "we keep going " * 40,
            f"We work it out.\n\nTherefore, the result is {gold}.",
        ][k]

    return respond


def test_unfinished_paths_are_set_aside_not_mistakes(tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    from lema_hub.correct import CorrectConfig, correct

    # Folder names of their own: load_dataset caches local folders by name (issue 14.1).
    kw = dict(problems_limit=4, num_samples=5, write_card=True)
    with FakeOpenAIServer(responder=unfinished_responder()) as srv:
        summary = collect(
            CollectConfig(**_endpoint_config(tmp_path, srv.base_url, "unfinished-default", **kw))
        )
        opted = collect(
            CollectConfig(
                **_endpoint_config(tmp_path, srv.base_url, "unfinished-kept", include_unfinished=True, **kw)
            )
        )
        strict = collect(
            CollectConfig(
                **_endpoint_config(tmp_path, srv.base_url, "unfinished-strict", extraction="strict", **kw)
            )
        )
    n = 4
    counts = {v: summary[v] for v in ("correct", "wrong", "no_answer", "truncated", "ungradeable")}
    assert counts == {"correct": 2 * n, "wrong": n, "no_answer": n, "truncated": n, "ungradeable": 0}
    assert summary["mistakes"] == n and summary["set_aside"] == {"no_answer": n, "truncated": n}
    assert summary["format_ok"] == 2 * n  # samples 0 and 1 state "The answer is"
    samples = load_dataset(summary["output_dir"], "sample-samples", split="train").to_list()
    by_k = {k: [r for r in samples if r["sample_index"] == k] for k in range(5)}
    assert [{r["verdict"] for r in by_k[k]} for k in range(5)] == [
        {"correct"}, {"wrong"}, {"no_answer"}, {"truncated"}, {"correct"}
    ]  # fmt: skip
    assert {r["finish_reason"] for r in by_k[3]} == {"length"}
    assert [{r["format_ok"] for r in by_k[k]} for k in range(5)] == [
        {True},
        {True},
        {False},
        {False},
        {False},
    ]
    assert {r["verdict"] for r in _rows(summary["output_dir"], "sample")} == {"wrong"}
    # The corrector gets what the mistakes config holds, nothing else.
    corrections = correct(CorrectConfig(mistakes=summary["output_dir"], output_dir=str(tmp_path / "c")))
    assert corrections["n"] == n
    # The card shows the breakdown and what was set aside.
    card = DatasetCard.load(tmp_path / "unfinished-default" / "README.md").text
    assert f"| `truncated` | {n} |" in card and f"| `no_answer` | {n} |" in card
    assert f"Set aside (in `-samples` only, never sent to a corrector): {n} no_answer, {n} truncated." in card
    # include_unfinished opts in; strict extraction reads only the paper's phrase.
    assert opted["mistakes"] == 3 * n and opted["set_aside"] == {}
    assert {r["verdict"] for r in _rows(opted["output_dir"], "sample")} == {"wrong", "no_answer", "truncated"}
    assert (strict["correct"], strict["no_answer"], strict["mistakes"]) == (n, 2 * n, n)
    with pytest.raises(ValueError, match="extraction"):
        CollectConfig(**_endpoint_config(tmp_path, srv.base_url, "x", extraction="loose"))


def test_quickstart_summary_says_what_was_set_aside():
    from lema_hub.quickstart import format_summary

    col = {"problems": 32, "samples": 64, "correct": 2, "wrong": 14, "mistakes": 14,
           "set_aside": {"truncated": 36, "no_answer": 12}, "prompt_tokens": 0, "completion_tokens": 0}  # fmt: skip
    summary = {
        "model": "m",
        "problems": "sample",
        "stages": {"collect": col},
        "seconds": {},
        "wall_seconds": 1,
        "folders": {},
        "demo_command": "x",
    }
    text = format_summary(summary)
    line = next(x for x in text.splitlines() if x.startswith("collect"))
    assert (
        "14 mistakes kept (set aside: 36 truncated (cut at max_tokens), 12 no_answer (no final answer))"
        in line
    )
