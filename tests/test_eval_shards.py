"""`lema-hub evaluate --shard i/n` then `--merge_shards true` (Slurm arrays): the merged folder, its
metrics and the model card are what one unsharded run writes; shards never push and the merge refuses
a missing, failed or foreign shard set (exit 2, one line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lema_hub.artifacts import discover_configs
from lema_hub.errors import InvalidInputError
from lema_hub.evaluate import EvalConfig, evaluate
from lema_hub.problems import load_sample
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_distributed import _card, _tables
from tests.test_evaluate import _card_value, _own_tiny_model
from tests.test_shards import _lema_hub, _one_line_exit_2

QUESTIONS = [p.question for p in load_sample("test")]
GOLD = {p.question: p.gold_answer for p in load_sample("test")}
CONFIGS = {"lema-tiny-sample", "baseline-sample"}


def _responder(payload: dict) -> str:
    """Right, wrong or unreadable by (question, sample seed, model): every verdict, per-problem pass@1."""
    text = payload["messages"][-1]["content"]
    question = text.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
    i = QUESTIONS.index(question) + (payload.get("seed") or 0) + (payload["model"] == "baseline")
    return [f"The answer is {GOLD[question]}.", "The answer is -1.", "I am not sure."][i % 3]


def _cfg(url: str, model_folder: Path, out: Path, **kw) -> EvalConfig:
    return EvalConfig(
        models=[str(model_folder), "baseline"], backend="openai", base_urls=[url], prompt_style="chat",
        problems="sample", num_samples=2, temperature=0.7, max_new_tokens=64, output_dir=str(out),
        max_retries=0, **kw,
    )  # fmt: skip


def _results(out: Path) -> dict:
    """results.json without what differs between two runs of the same evaluation (clock, duration)."""
    results = json.loads((out / "results.json").read_text())
    return {k: {f: v for f, v in e.items() if f not in ("date", "wall_time_s")} for k, e in results.items()}


def _eval_entry(model_folder: Path) -> dict:
    return {k: v for k, v in _card_value(model_folder, "sample").items() if k != "date"}


def test_evaluate_shards_merge_into_the_unsharded_run(tmp_path, tiny_model):
    one, two = tmp_path / "one" / "eval", tmp_path / "two" / "eval"
    model_one = _own_tiny_model(tmp_path / "one", "lema-tiny")
    model_two = _own_tiny_model(tmp_path / "two", "lema-tiny")
    with FakeOpenAIServer(responder=_responder) as srv:
        single = evaluate(_cfg(srv.base_url, model_one, one))
        asked = srv.total_requests
        srv.reset_counts()
        parts = [evaluate(_cfg(srv.base_url, model_two, two, shard=f"{i}/3")) for i in range(3)]
        # Each request asked once, by one shard: as many as one process asked.
        assert srv.total_requests == asked == 2 * 2 * len(QUESTIONS) and max(srv.request_counts.values()) == 1
        assert not two.exists()  # only the merge writes the real folder
        assert not (model_two / "lema_hub_eval_results.yaml").exists()  # nor the model card
        srv.reset_counts()
        merged = evaluate(_cfg(srv.base_url, model_two, two, merge_shards=True))
        assert srv.total_requests == 0  # merging asks nothing
    for i, part in enumerate(parts):
        shard = tmp_path / "two" / f"eval-shard-{i:05d}-of-00003"
        assert part["output_dir"] == str(shard) and part["model_cards"] == []
        assert set(discover_configs(shard)) == CONFIGS  # every n-th problem, under the real config name
        assert part["results"]["baseline-sample"]["num_problems"] == 4
    # One details config per model, rows in the unsharded order (same content-named parquet files).
    assert set(discover_configs(two)) == CONFIGS
    assert _tables(one) == _tables(two) and len(_tables(two)) == 2
    assert _card(one) == _card(two)
    # Metrics recomputed over all rows (not averaged per shard), the same as the unsharded run's.
    assert _results(one) == _results(two)
    for name in CONFIGS:
        metrics = {k: v for k, v in merged["results"][name].items() if k not in ("date", "wall_time_s")}
        assert metrics == {
            k: v for k, v in single["results"][name].items() if k not in ("date", "wall_time_s")
        }
        assert merged["results"][name]["shard"] is None and merged["results"][name]["num_problems"] == 12
    assert 0 < single["results"]["lema-tiny-sample"]["accuracy"] < 1
    assert single["results"]["lema-tiny-sample"]["ci_method"] == "bootstrap"  # pass@1 from 2 samples
    shard_mean = sum(p["results"]["lema-tiny-sample"]["ci_low"] for p in parts) / 3
    assert merged["results"]["lema-tiny-sample"]["ci_low"] != pytest.approx(shard_mean)
    assert (one / "comparison.md").read_text() == (two / "comparison.md").read_text()
    # The model card gets the unsharded run's entry, from the merge.
    assert merged["model_cards"] == [str(model_two)]
    assert _eval_entry(model_one) == _eval_entry(model_two)
    # The request records add up to the unsharded run's.
    record = json.loads((two / "run_summary.json").read_text())["evaluate"]
    expected = json.loads((one / "run_summary.json").read_text())["evaluate"]["requests"]
    assert record["requests"] == expected and record["merged_shards"] == 3
    assert record["requests"]["baseline-sample"]["total"] == 2 * len(QUESTIONS)


def _predictions(tmp_path: Path) -> Path:
    preds = tmp_path / "preds.jsonl"
    rows = [
        {"problem_id": p.problem_id, "completion": f"The answer is {p.gold_answer}."}
        for p in load_sample("test")
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return preds


def test_missing_shards_and_bad_merges_are_one_line_exit_2(tmp_path):
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--models",
        "m",
        "--problems",
        "sample",
        "--predictions_path",
        str(_predictions(tmp_path)),
    ]
    args += ["--output_dir", str(out)]
    both = _one_line_exit_2(_lema_hub([*args, "--shard", "0/3", "--merge_shards", "true"], tmp_path))
    assert "without --shard" in both
    shard = _lema_hub([*args, "--shard", "1/3"], tmp_path)
    assert shard.returncode == 0, shard.stderr[-2000:]
    line = _one_line_exit_2(_lema_hub([*args, "--merge_shards", "true"], tmp_path))
    assert line.startswith("lema-hub evaluate: ") and "not finished" in line
    assert "eval-shard-00000-of-00003" in line and "eval-shard-00002-of-00003" in line
    assert "eval-shard-00001-of-00003" not in line and not out.exists()


def test_a_merge_refuses_shards_of_another_command(tmp_path):
    out = tmp_path / "eval"
    base = dict(
        models=["m"], problems="sample", predictions_path=str(_predictions(tmp_path)), output_dir=str(out)
    )
    for i in range(2):
        evaluate(EvalConfig(**base, problems_limit=6, shard=f"{i}/2"))
    with pytest.raises(InvalidInputError, match="hold 6 of the 12 problems of m-sample"):
        evaluate(EvalConfig(**base, merge_shards=True))  # the shards ran on the first 6 problems only
    with pytest.raises(InvalidInputError, match=r"eval-shard-00000-of-00002 holds no other-sample results"):
        evaluate(EvalConfig(**{**base, "model_labels": ["other"]}, problems_limit=6, merge_shards=True))
    evaluate(EvalConfig(**{**base, "models": ["n"], "model_labels": ["m"]}, problems_limit=6, shard="1/2"))
    with pytest.raises(InvalidInputError, match="disagree on `model`"):
        evaluate(EvalConfig(**base, problems_limit=6, merge_shards=True))
    assert not out.exists()
    evaluate(EvalConfig(**base, problems_limit=6, shard="1/2"))
    merged = evaluate(EvalConfig(**base, problems_limit=6, merge_shards=True))
    assert (
        merged["results"]["m-sample"]["num_problems"] == 6 and merged["results"]["m-sample"]["accuracy"] == 1
    )


def test_a_merge_with_another_extraction_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "eval"
    base = dict(
        models=["m"], problems="sample", predictions_path=str(_predictions(tmp_path)), output_dir=str(out)
    )
    for i in range(2):
        evaluate(EvalConfig(**base, shard=f"{i}/2"))
    with pytest.raises(InvalidInputError) as err:
        evaluate(EvalConfig(**base, extraction="flexible", merge_shards=True))
    assert str(err.value) == (
        "evaluate: the shards ran with extraction='strict' (eval-shard-00000-of-00002), this merge with "
        "extraction='flexible'; merge with the shards' command."
    )
    assert not out.exists()
    # Publishing settings are not the data: a merge may change them.
    evaluate(EvalConfig(**base, update_model_card=False, merge_shards=True))
    assert (out / "results.json").is_file()


def test_a_shard_with_failed_requests_is_not_merged_until_rerun(tmp_path):
    out = tmp_path / "eval"
    with (
        FakeOpenAIServer(responder=_responder) as ok,
        FakeOpenAIServer(_responder, 0.5, faults=("500",), seed=3) as bad,
    ):

        def cfg(url: str, **kw) -> EvalConfig:
            return EvalConfig(
                models=["baseline"], backend="openai", base_urls=[url], prompt_style="chat", problems="sample",
                output_dir=str(out), max_retries=0, **kw,
            )  # fmt: skip

        evaluate(cfg(ok.base_url, shard="0/2"))
        partial = evaluate(cfg(bad.base_url, shard="1/2"))  # a first, partial run is written
        failed = partial["results"]["baseline-sample"]["error_count"]
        assert 0 < failed < 6
        with pytest.raises(InvalidInputError, match=rf"eval-shard-00001-of-00002 \({failed}\); rerun"):
            evaluate(cfg(ok.base_url, merge_shards=True))
        assert not out.exists()
        ok.reset_counts()
        evaluate(cfg(ok.base_url, shard="1/2"))  # the rerun asks only what failed
        assert ok.total_requests == failed
        merged = evaluate(cfg(ok.base_url, merge_shards=True))
    assert merged["results"]["baseline-sample"]["error_count"] == 0
    assert merged["results"]["baseline-sample"]["num_problems"] == 12


def test_evaluate_shards_never_push_and_the_merge_pushes_once(tmp_path):
    from tests.hub_emulator import HubEmulator

    out = tmp_path / "eval"
    args = [
        "evaluate",
        "--models",
        "m",
        "--problems",
        "sample",
        "--predictions_path",
        str(_predictions(tmp_path)),
    ]
    args += ["--output_dir", str(out), "--push_to_hub", "true", "--hub_repo_id", "lema-tester/lema-eval"]
    with HubEmulator() as hub:
        env = hub.client_env(tmp_path)
        for i in range(2):
            proc = _lema_hub([*args, "--shard", f"{i}/2"], tmp_path, env)
            assert proc.returncode == 0, proc.stderr[-2000:]
        assert hub.state.repos == {}  # no shard pushed
        proc = _lema_hub([*args, "--merge_shards", "true"], tmp_path, env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert len(hub.commits("lema-tester/lema-eval")) == 2  # the initial commit and the merged folder
        pushed = hub.files("lema-tester/lema-eval")
    assert "README.md" in pushed and "results.json" in pushed
    assert any(p.startswith("data/m-sample/") for p in pushed) and not any("shard" in p for p in pushed)
    assert json.loads(pushed["results.json"])["m-sample"]["num_problems"] == 12


def test_a_checkpoint_sweep_in_shards_merges_into_the_unsharded_sweep(tmp_path):
    run = tmp_path / "run"
    for step in (1, 2):
        (run / f"checkpoint-{step}").mkdir(parents=True)

    def respond(payload: dict) -> str:  # checkpoint-2 knows the answers, checkpoint-1 only some
        question = payload["messages"][-1]["content"].split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
        good = payload["model"].endswith("checkpoint-2") or QUESTIONS.index(question) % 2
        return f"The answer is {GOLD[question] if good else -1}."

    with FakeOpenAIServer(responder=respond) as srv:
        kw = dict(checkpoints=str(run), backend="openai", base_urls=[srv.base_url], prompt_style="chat")
        kw.update(problems="sample")
        single = evaluate(EvalConfig(**kw, output_dir=str(tmp_path / "one")))
        for i in range(2):
            evaluate(EvalConfig(**kw, output_dir=str(tmp_path / "two"), shard=f"{i}/2"))
            shard = tmp_path / f"two-shard-{i:05d}-of-00002"
            assert json.loads((shard / "checkpoint_sweep.json").read_text())["sample"]["num_problems"] == 6
        assert not (tmp_path / "two").exists()
        merged = evaluate(EvalConfig(**kw, output_dir=str(tmp_path / "two"), merge_shards=True))
    assert merged["sweep"] == single["sweep"] and merged["sweep"]["best"]["step"] == 2
    assert merged["sweep"]["points"][0]["accuracy"] == 0.5 and merged["sweep"]["num_problems"] == 12
    sweeps = [json.loads((tmp_path / f / "checkpoint_sweep.json").read_text()) for f in ("one", "two")]
    assert sweeps[0] == sweeps[1]


def test_more_shards_than_problems(tmp_path):
    out = tmp_path / "eval"
    base = dict(
        models=["m"], problems="sample", predictions_path=str(_predictions(tmp_path)), output_dir=str(out)
    )
    parts = [evaluate(EvalConfig(**base, problems_limit=2, shard=f"{i}/3")) for i in range(3)]
    assert [p["results"]["m-sample"]["num_problems"] for p in parts] == [1, 1, 0]  # the empty shard finishes
    assert not (tmp_path / "eval-shard-00002-of-00003" / "data").exists()
    merged = evaluate(EvalConfig(**base, problems_limit=2, merge_shards=True))
    single = evaluate(EvalConfig(**{**base, "output_dir": str(tmp_path / "one")}, problems_limit=2))
    assert _tables(out) == _tables(tmp_path / "one") and _results(out) == _results(tmp_path / "one")
    assert merged["results"]["m-sample"]["num_problems"] == single["results"]["m-sample"]["num_problems"] == 2
