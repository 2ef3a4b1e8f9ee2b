"""`lema-hub bench-corrector`: metrics on hand-checkable data, through a real loopback server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lema_hub.artifacts import load_rows, save_dataset_config
from lema_hub.bench_corrector import (
    NO_ERROR_INSTRUCTION,
    BenchCorrectorConfig,
    bench_corrector,
    read_prediction,
)
from lema_hub.correct import CorrectConfig, correct
from lema_hub.corrector.claims import claims_in, first_false_step
from lema_hub.corrector.quality import processbench_metrics
from lema_hub.corrector.reference import reference_step
from tests.fake_openai_server import FakeOpenAIServer

REPO = Path(__file__).resolve().parents[1]

# Solutions written for these tests; `label` is ProcessBench's 0-based first wrong paragraph.
GSM8K = [
    {  # a wrong product in step 3
        "id": "g-a",
        "generator": "test",
        "problem": "Tom has 3 boxes of apples and buys 2 more. Each box holds 4 apples. How many apples?",
        "steps": [
            "Tom starts with 3 boxes.",
            "He buys 2 more, so he has 3 + 2 = 5 boxes.",
            "Each box holds 4 apples, so 5 * 4 = 24 apples.",
            "The answer is 24.",
        ],
        "final_answer_correct": False,
        "label": 2,
    },
    {  # every step correct
        "id": "g-b",
        "generator": "test",
        "problem": "A shirt costs $12 and pants cost $20. What do two outfits cost?",
        "steps": [
            "One outfit costs $12 + $20 = $32.",
            "Two outfits cost 2 x 32 = 64 dollars.",
            "The answer is 64.",
        ],
        "final_answer_correct": True,
        "label": -1,
    },
    {  # a reasoning error, no arithmetic error
        "id": "g-c",
        "generator": "test",
        "problem": "Ann reads 10 pages a day for a week. How many pages?",
        "steps": ["A week has 7 days.", "She reads on 5 of them, 10 * 5 = 50.", "The answer is 50."],
        "final_answer_correct": False,
        "label": 1,
    },
    {
        "id": "g-d",
        "generator": "test",
        "problem": "Bo has 8 pens and gives away half. How many are left?",
        "steps": ["Half of 8 is 8 / 4 = 2.", "The answer is 2."],
        "final_answer_correct": False,
        "label": 0,
    },
]
MATH = [
    {
        "id": "m-e",
        "generator": "test",
        "problem": "Compute $\\frac{1}{2} \\cdot 8$.",
        "steps": ["We have \\(\\frac{1}{2} \\times 8 = 4\\).", "So the answer is \\(\\boxed{4}\\)."],
        "final_answer_correct": True,
        "label": -1,
    },
    {
        "id": "m-f",
        "generator": "test",
        "problem": "Let $x + 1 = 8$. Compute $7x + 6$.",
        "steps": [
            "From \\(x + 1 = 8\\) we get \\(x = 7\\).",
            "We need \\(7x + 6\\).",
            "Substitute \\(x = 7\\).",
            "Then \\(7 \\times 7 = 54\\), so \\(7x + 6 = 60\\).",
            "The answer is \\(\\boxed{60}\\).",
        ],
        "final_answer_correct": False,
        "label": 3,
    },
]
ITEMS = {it["problem"]: it for it in GSM8K + MATH}


def _has(d: dict, want: dict) -> bool:
    return d.items() >= want.items()


def _data(tmp_path: Path) -> Path:
    folder = tmp_path / "labelled"
    folder.mkdir(exist_ok=True)
    (folder / "gsm8k.json").write_text(json.dumps(GSM8K))
    (folder / "math.json").write_text(json.dumps(MATH))
    return folder


def _item_of(payload: dict) -> dict:
    text = payload.get("prompt") or " ".join(m["content"] for m in payload["messages"])
    question = text.replace("\r\n", "\n").rsplit("Question:", 1)[1].split("\n", 1)[0].strip()
    return ITEMS[question]


def _answer(k: int) -> str:
    return (
        f" Step {k}.\nExplanation: This step is wrong.\nCorrect Solution:\n{{\nStep {k}: The answer is 1.\n}}"
    )


def oracle(payload: dict) -> str:
    """Answers the labelled step (1-based), or "None" for a correct solution."""
    label = _item_of(payload)["label"]
    return " None." if label == -1 else _answer(label + 1)


def _cfg(tmp_path: Path, url: str, name: str, **kw) -> BenchCorrectorConfig:
    base = dict(
        data=str(_data(tmp_path)),
        output_dir=str(tmp_path / name),
        backend="openai",
        model="fake-model",
        base_urls=[url],
        prompt_style="chat",
        progress=False,
        max_retries=0,
    )
    return BenchCorrectorConfig(**(base | kw))


def test_oracle_scores_100_percent_on_both_protocols(tmp_path):
    with FakeOpenAIServer(responder=oracle) as srv:
        s = bench_corrector(_cfg(tmp_path, srv.base_url, "oracle"))
        # lema: 4 erroneous items; processbench: all 6.
        assert srv.total_requests == 4 + 6
        pb_prompts = [p for p in srv.payloads if NO_ERROR_INSTRUCTION in p["messages"][0]["content"]]
        assert len(pb_prompts) == 6
    for split in ("gsm8k", "math"):
        assert s["lema"][split]["exact"] == 1.0 and s["lema"][split]["within_one"] == 1.0
        assert _has(s["processbench"][split], {"error_acc": 1.0, "correct_acc": 1.0, "f1": 1.0})
    assert s["lema"]["all"]["delta_distribution"] == {"0": 4}
    assert s["processbench"]["average_f1"] == 1.0
    # Steps were rendered 1-based, as the corrector's demonstrations are.
    assert "Step 1: Tom starts with 3 boxes." in pb_prompts[0]["messages"][0]["content"] or any(
        "Step 1: Tom starts with 3 boxes." in p["messages"][0]["content"] for p in pb_prompts
    )
    rows = load_rows(s["output_dir"], "processbench", split="gsm8k")
    assert {r["id"]: r["prediction"] for r in rows} == {
        "g-a": "step",
        "g-b": "no_error",
        "g-c": "step",
        "g-d": "step",
    }
    assert all(
        r["raw_output"] and r["corrector_prompt"].startswith("lema-hub/corrector_gsm8k+no-error@")
        for r in rows
    )
    card = (Path(s["output_dir"]) / "README.md").read_text()
    assert "| `gsm8k` | 4 | 100.0 | 100.0 | 0.0 | 100.0 | 100.0 | 100.0 |" in card
    assert (Path(s["output_dir"]) / "images" / "accuracy_by_position.png").is_file()
    assert "fake-model" in card and "prompt tokens" in card


def test_always_step_one_gives_the_hand_computed_scores(tmp_path):
    with FakeOpenAIServer(responder=lambda p: _answer(1)) as srv:
        s = bench_corrector(_cfg(tmp_path, srv.base_url, "step1"))
    # Labelled steps (1-based): gsm8k 3, none, 2, 1; math none, 4.
    lema = s["lema"]
    assert lema["gsm8k"]["exact"] == round(1 / 3, 4)  # only g-d
    assert lema["gsm8k"]["within_one"] == round(2 / 3, 4)  # g-c (-1) and g-d (0)
    assert lema["math"]["exact"] == 0.0 and lema["math"]["within_one"] == 0.0
    assert _has(lema["all"], {"n": 4, "exact": 0.25, "within_one": 0.5, "parse_failure_rate": 0.0})
    assert lema["all"]["delta_distribution"] == {"-3": 1, "-2": 1, "-1": 1, "0": 1}
    pb = s["processbench"]
    assert _has(pb["gsm8k"], {"error_acc": round(1 / 3, 4), "correct_acc": 0.0, "f1": 0.0})
    assert _has(pb["math"], {"error_acc": 0.0, "correct_acc": 0.0, "f1": 0.0})
    assert s["accuracy_by_position"]["lema"] == {
        "1": {"n": 1, "acc": 1.0},
        "2": {"n": 1, "acc": 0.0},
        "3": {"n": 1, "acc": 0.0},
        "4": {"n": 1, "acc": 0.0},
    }


def test_processbench_f1_is_the_harmonic_mean_and_failures_count_as_wrong():
    def row(label, prediction, step=None):
        return {"labelled_step": label, "prediction": prediction, "predicted_step": step,
                "correct": (prediction == "no_error") if label is None else (step == label),
                "parse_reason": None if prediction in ("step", "no_error") else "parse_error"}  # fmt: skip

    rows = [row(2, "step", 2), row(3, "step", 1), row(None, "no_error"), row(None, "no_error"),
            row(None, "no_error"), row(None, "parse_failure")]  # fmt: skip
    m = processbench_metrics(rows)
    assert (m["error_acc"], m["correct_acc"]) == (0.5, 0.75)
    assert m["f1"] == 0.6  # 2 * 0.5 * 0.75 / 1.25
    assert m["parse_failure_rate"] == round(1 / 6, 4) and m["parse_failures"] == {"parse_error": 1}


MALFORMED = {
    "g-a": "I think the solution is fine overall.",  # no step index
    "g-c": " Step 9.\nExplanation: out of range.",  # not a step of a 3-step solution
    "g-d": "",  # empty
}


def test_malformed_answers_are_parse_failures_with_reasons(tmp_path):
    def responder(payload):
        it = _item_of(payload)
        return MALFORMED.get(it["id"], oracle(payload))

    with FakeOpenAIServer(responder=responder) as srv:
        s = bench_corrector(_cfg(tmp_path, srv.base_url, "malformed", protocols=["lema"]))
    lema = s["lema"]
    assert lema["gsm8k"]["parse_failure_rate"] == 1.0 and lema["gsm8k"]["exact"] == 0.0
    assert lema["gsm8k"]["parse_failures"] == {"parse_error": 2, "step_out_of_range": 1}
    assert lema["math"]["exact"] == 1.0 and lema["all"]["parse_failure_rate"] == 0.75
    rows = {r["id"]: r for r in load_rows(s["output_dir"], "lema", split="gsm8k")}
    assert rows["g-c"]["parse_detail"] == "step 9 of a 3-step solution"
    assert rows["g-a"]["raw_output"] == MALFORMED["g-a"]
    # A failed request is a failure too, and in the processbench protocol it is wrong on a correct item.
    with FakeOpenAIServer(fault_rate=1.0, faults=("500",)) as srv:
        s = bench_corrector(_cfg(tmp_path, srv.base_url, "failed", protocols=["processbench"]))
    assert _has(
        s["processbench"]["gsm8k"],
        {
            "correct_acc": 0.0,
            "error_acc": 0.0,
            "parse_failure_rate": 1.0,
        },
    )
    assert s["processbench"]["gsm8k"]["parse_failures"] == {"generation_failed": 4}


def test_read_prediction_accepts_no_error_answers():
    for raw in (
        " None.",
        "**None**",
        "Incorrect Step: None",
        " No incorrect step.",
        " -1",
        "All steps are correct.",
    ):
        assert read_prediction(raw, 3, "gsm8k")["prediction"] == "no_error", raw
    assert _has(read_prediction(" Step 2.", 3, "gsm8k"), {"prediction": "step", "predicted_step": 2})
    assert read_prediction(" Nonetheless step 2.", 3, "gsm8k")["prediction"] != "no_error"


def _run_recipe(config: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, str(REPO / "recipes" / "bench_corrector.py"), "--config", str(config)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_sigkill_mid_run_resumes_without_re_asking(tmp_path):
    many = [
        {**GSM8K[i % 4], "id": f"g-{i}", "problem": f"{GSM8K[i % 4]['problem']} (variant {i})"}
        for i in range(30)
    ]
    ITEMS.update({it["problem"]: it for it in many})
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "gsm8k.json").write_text(json.dumps(many))
    expected = sum(it["label"] != -1 for it in many) + len(many)  # lema + processbench requests
    with FakeOpenAIServer(responder=oracle, latency_s=0.05) as srv:
        cfg = dict(data=str(folder), output_dir=str(tmp_path / "killed"), backend="openai", model="fake-model",
                   base_urls=[srv.base_url], prompt_style="chat", concurrency=2, progress=False)  # fmt: skip
        config = tmp_path / "bench.yaml"
        config.write_text(yaml.safe_dump(cfg))
        proc = _run_recipe(config)
        deadline = time.time() + 120
        while sum(srv.success_counts.values()) < 10 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cache = next((tmp_path / "killed" / ".cache").glob("bench-*.jsonl"))
        finished = {json.loads(ln)["key"] for ln in cache.read_text().splitlines() if ln.endswith("}")}
        assert 8 <= len(finished) < expected
        assert not (tmp_path / "killed" / "run_summary.json").exists()
        proc = _run_recipe(config)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    repeated = {k for k, c in srv.success_counts.items() if c > 1}
    assert not repeated & finished  # nothing recorded before the kill was asked again
    assert len(repeated) <= 2 and len(srv.success_counts) == expected
    summary = json.loads((tmp_path / "killed" / "run_summary.json").read_text())["bench-corrector"]
    assert summary["lema"]["gsm8k"]["exact"] == 1.0 and summary["processbench"]["gsm8k"]["f1"] == 1.0


# ----------------------------------------------------------------------------- arithmetic baseline
def test_arithmetic_claims_on_written_solutions():
    assert first_false_step(GSM8K[0]["steps"])[0] == 3  # 5 * 4 = 24
    assert first_false_step(GSM8K[1]["steps"]) is None  # $12 + $20 = $32, 2 x 32 = 64
    assert first_false_step(MATH[0]["steps"]) is None  # \frac{1}{2} \times 8 = 4
    k, claim = first_false_step(MATH[1]["steps"])
    assert k == 4 and (claim.lhs, claim.rhs, claim.value) == ("7 * 7", "54", 49.0)
    # Algebra, functions and rounded results are not flagged.
    for ok in ["x + 2 = 5", "2x + 3 = 7", "n^2 - 1 = 8", "\\log_2 (8) = 3", "10 / 3 = 3.33",
               "7 * 3 = 1 (mod 5)", "19 / 4 = 4 remainder 3", "3 + 4 = 7 + 1 = 8", "(2, 3) + 1 = 4",
               "25 / 1/3 = 75 decorations", "600 x 30 = 18 000 watts", "17/3 = 5 and 2/3 loads",
               "6:00+48=6:48 PM", "$1 / 2 = 50 cents", "60 students x 2/3 = 40", "16,0000/10=16000 cars", "14, 400 / 80 = 180",
               "12 x 1 and 1/4 = 15"]:  # fmt: skip
        assert all(c.holds for c in claims_in(ok)), ok
    assert [c.holds for c in claims_in("3 + 4 = 7 and 6 * 7 = 41, 50 * 20% = 10")] == [True, False, True]


def test_reference_backend_is_the_arithmetic_baseline(tmp_path):
    s = bench_corrector(
        BenchCorrectorConfig(data=str(_data(tmp_path)), output_dir=str(tmp_path / "ref"), progress=False)
    )
    rows = {r["id"]: r for r in load_rows(s["output_dir"], "processbench", split="gsm8k")}
    rows |= {r["id"]: r for r in load_rows(s["output_dir"], "processbench", split="math")}
    assert {k: r["predicted_step"] for k, r in rows.items()} == {
        "g-a": 3, "g-b": None, "g-c": None, "g-d": None, "m-e": None, "m-f": 4,
    }  # fmt: skip
    assert "5 * 4 = 24 is false" in rows["g-a"]["raw_output"]
    assert _has(s["processbench"]["gsm8k"], {"error_acc": round(1 / 3, 4), "correct_acc": 1.0, "f1": 0.5})
    assert s["lema"]["math"]["exact"] == 1.0
    card = (Path(s["output_dir"]) / "README.md").read_text()
    assert "$0 (rule-based, no model)" in card
    # The same rule is the reference locator's fallback where the gold has no annotations.
    assert (
        reference_step({"source": "math", "question": "q", "gold_solution": "$\\boxed{1}$"}, MATH[1]["steps"])
        == 4
    )


def test_bad_input_names_the_problem(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "gsm8k.json").write_text(json.dumps([{"problem": "q", "steps": ["a"], "label": 3}]))
    with pytest.raises(ValueError, match=r"label 3 is not a step of its 1 steps"):
        bench_corrector(BenchCorrectorConfig(data=str(bad), output_dir=str(tmp_path / "o")))
    (bad / "gsm8k.json").write_text(json.dumps([{"question": "q", "steps": ["a"], "label": -1}]))
    with pytest.raises(ValueError, match=r"no column 'problem'"):
        bench_corrector(BenchCorrectorConfig(data=str(bad), output_dir=str(tmp_path / "o")))
    # A column map reads any step-labelled set (here: 1-based labels, 0 for "no error").
    (bad / "gsm8k.json").write_text(json.dumps([{"question": "q", "paths": ["1 + 1 = 3", "ok"], "first": 1},
                                                 {"question": "r", "paths": ["fine"], "first": 0}]))  # fmt: skip
    s = bench_corrector(BenchCorrectorConfig(
        data=str(bad), output_dir=str(tmp_path / "o"), question_column="question", steps_column="paths",
        label_column="first", label_base=1, no_error_label=0, progress=False))  # fmt: skip
    assert _has(s["processbench"]["gsm8k"], {"error_acc": 1.0, "correct_acc": 1.0})
    with pytest.raises(ValueError, match="protocols"):
        BenchCorrectorConfig(protocols=["paper"])
    # Never over another stage's artifact.
    with pytest.raises(ValueError, match="holds a `correct` artifact"):
        (tmp_path / "c").mkdir()
        (tmp_path / "c" / "run_summary.json").write_text('{"correct": {}}')
        bench_corrector(BenchCorrectorConfig(data=str(_data(tmp_path)), output_dir=str(tmp_path / "c")))


# ------------------------------------------------------------------------------ correct() hooks
def _mistakes(tmp_path: Path) -> Path:
    base = {
        "source": "gsm8k", "generator": "g", "sample_index": 0, "gold_solution": "7 boxes of 6.\n#### 42",
        "gold_answer": "42", "question": "A box holds 6 eggs. How many eggs are in 7 boxes?",
        "steps": ["7 * 6 = 41 eggs.", "The answer is 41."], "predicted_answer": "41", "verdict": "wrong",
    }  # fmt: skip
    rows = [
        {**base, "problem_id": "honest"},
        {**base, "problem_id": "lucky", "question": base["question"].replace("7 boxes", "7 full boxes")},
    ]
    folder = tmp_path / "mistakes"
    save_dataset_config(folder, "gsm8k", {"train": rows})
    return folder


def test_correct_rejects_false_claims_and_shows_corrector_quality(tmp_path):
    folder = _mistakes(tmp_path)
    with FakeOpenAIServer(responder=oracle) as srv:
        bench = bench_corrector(_cfg(tmp_path, srv.base_url, "bench"))

    def responder(payload):
        text = " ".join(m["content"] for m in payload["messages"]).rsplit("Question:", 1)[1]
        lucky = "7 full boxes" in text
        step = "7 * 6 = 40 eggs, plus the 2 in the lid makes 42." if lucky else "7 * 6 = 42 eggs."
        return f" Step 1.\nExplanation: 7 * 6 is 42.\nCorrect Solution:\n{{\nStep 1: {step}\nStep 2: The answer is 42.\n}}"

    common = dict(
        mistakes=str(folder), backend="openai", model="fake-model", prompt_style="chat", progress=False
    )
    with FakeOpenAIServer(responder=responder) as srv:
        plain = correct(CorrectConfig(**common, base_urls=[srv.base_url], output_dir=str(tmp_path / "c1")))
        checked = correct(CorrectConfig(**common, base_urls=[srv.base_url], output_dir=str(tmp_path / "c2"),
                                        check_arithmetic=True, corrector_benchmark=bench["output_dir"]))  # fmt: skip
    assert plain["accepted"] == 2
    assert checked["accepted"] == 1 and checked["reject_reasons"] == {"false_claim": 1}
    rejected = load_rows(str(tmp_path / "c2"), "gsm8k-rejected")
    assert rejected[0]["reject_detail"].startswith("corrected step 1: 7 * 6 = 40 is false")
    card = (tmp_path / "c2" / "README.md").read_text()
    assert "## Corrector quality" in card and "average F1 100.0" in card
    assert "| `gsm8k` | 100.0 | 100.0 | 0.0 | 100.0 | 100.0 | 100.0 |" in card
    assert "rejected as `false_claim` (1 of them)" in card
    assert "Corrector quality" not in (tmp_path / "c1" / "README.md").read_text()
    with pytest.raises(ValueError, match="not a `lema-hub bench-corrector` output"):
        correct(CorrectConfig(**common, base_urls=["http://127.0.0.1:9"], output_dir=str(tmp_path / "c3"),
                              corrector_benchmark=str(tmp_path / "c1")))  # fmt: skip


def test_reference_corrector_locates_by_arithmetic_without_annotations(tmp_path):
    folder = _mistakes(tmp_path)
    s = correct(CorrectConfig(mistakes=str(folder), output_dir=str(tmp_path / "ref"), progress=False))
    assert s["reject_reasons"] == {"no_reference": 2}
    rows = load_rows(str(tmp_path / "ref"), "gsm8k-rejected")
    assert [r["incorrect_step"] for r in rows] == [1, 1] and [r["reference_step"] for r in rows] == [1, 1]
    assert re.search(r"arithmetic check: step 1: 7 \* 6 = 41 is false", rows[0]["reject_detail"])


def test_the_configured_concurrency_is_kept_busy(tmp_path):
    """Counted at the server: `concurrency` requests are in flight at once, never more."""
    import threading

    many = [{**GSM8K[1], "id": f"b-{i}", "problem": f"{GSM8K[1]['problem']} (copy {i})"} for i in range(24)]
    ITEMS.update({it["problem"]: it for it in many})
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "gsm8k.json").write_text(json.dumps(many))
    peak, stop = [0], threading.Event()
    with FakeOpenAIServer(responder=oracle, latency_s=0.3) as srv:

        def sample() -> None:
            while not stop.is_set():
                with srv._lock:  # the server's own counters, read consistently
                    peak[0] = max(peak[0], srv.total_requests - sum(srv.success_counts.values()))
                time.sleep(0.002)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            s = bench_corrector(_cfg(tmp_path, srv.base_url, "busy", data=str(folder), concurrency=6,
                                     protocols=["processbench"]))  # fmt: skip
        finally:
            stop.set()
            t.join()
    assert s["tokens"]["requests"] == 24 and peak[0] == 6


def test_processbench_local_copy_matches_the_upstream_counts(shared_data, tmp_path):
    """The four splits hold ProcessBench's error/correct counts; the baseline rarely flags a correct path."""
    cfg = BenchCorrectorConfig(data=str(shared_data / "processbench"), output_dir=str(tmp_path / "pb"),
                               protocols=["processbench"], progress=False)  # fmt: skip
    s = bench_corrector(cfg)
    pb = s["processbench"]
    counts = {k: (v["n_error"], v["n_correct"]) for k, v in pb.items() if k != "average_f1"}
    assert counts == {
        "gsm8k": (207, 193),
        "math": (594, 406),
        "olympiadbench": (661, 339),
        "omnimath": (759, 241),
    }
    assert all(pb[k]["correct_acc"] >= 0.98 and pb[k]["error_acc"] > 0 for k in counts)


def test_a_correct_recipe_config_runs_as_is(tmp_path):
    """`bench-corrector --config <a correct recipe>` parses: the corrector settings are the same keys."""
    from lema_hub.configs import parse_config

    (cfg,) = parse_config((BenchCorrectorConfig,), [
        "--config", str(REPO / "recipes/gpt-4/correct/config_math.yaml"), "--data", str(_data(tmp_path)),
        "--output_dir", str(tmp_path / "b"),
    ])  # fmt: skip
    assert (cfg.backend, cfg.model, cfg.prompt_style) == ("openai", "gpt-4-0613", "chat")
    assert cfg.protocols == ["lema", "processbench"] and cfg.data == str(_data(tmp_path))


@pytest.mark.slow
def test_the_local_transformers_backend(tmp_path, tiny_model):
    """A real (random-weight) local corrector: every item gets a row, unreadable answers with a reason."""
    cfg = BenchCorrectorConfig(data=str(_data(tmp_path)), output_dir=str(tmp_path / "tiny"), backend="transformers",
                               model=tiny_model, max_tokens=4, data_splits=["math"], progress=False)  # fmt: skip
    s = bench_corrector(cfg)
    assert s["tokens"]["requests"] == 1 + 2 and s["rows"] == 3
    rows = load_rows(s["output_dir"], "processbench", split="math")
    assert all(r["correction_prompt_tokens"] > 500 and r["correction_completion_tokens"] <= 4 for r in rows)
    assert all(r["prediction"] == "step" or r["parse_reason"] for r in rows)


_HUB_CLIENT = """
import json, sys
from lema_hub.cli import main
for argv in json.loads(sys.argv[1]):
    main(argv)
"""


def test_hub_round_trip_data_and_benchmark(tmp_path):
    """ProcessBench's Hub layout (one config, a split per subset) is read from the Hub; the benchmark
    is pushed, and `correct --corrector_benchmark <repo>` reads its numbers back from the Hub."""
    from tests.hub_emulator import USER, HubEmulator

    pb = tmp_path / "pb-hub"
    save_dataset_config(pb, "default", {"gsm8k": GSM8K, "math": MATH})
    mistakes = _mistakes(tmp_path)
    steps = [
        ["push", str(pb), f"{USER}/ProcessBench"],
        ["bench-corrector", "--data", f"{USER}/ProcessBench", "--output_dir", str(tmp_path / "bench"),
         "--push_to_hub", "true", "--hub_repo_id", f"{USER}/bench", "--progress", "false"],
        ["correct", "--mistakes", str(mistakes), "--output_dir", str(tmp_path / "corr"),
         "--corrector_benchmark", f"{USER}/bench", "--progress", "false"],
    ]  # fmt: skip
    with HubEmulator() as hub:
        env = hub.client_env(tmp_path) | {"PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-c", _HUB_CLIENT, json.dumps(steps)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert {"README.md", "run_summary.json"} <= set(hub.files(f"{USER}/bench"))
    summary = json.loads((tmp_path / "bench" / "run_summary.json").read_text())["bench-corrector"]
    assert summary["splits"] == {"gsm8k": 4, "math": 2}
    assert summary["processbench"]["gsm8k"]["f1"] == 0.5  # the arithmetic baseline, as offline
    card = (tmp_path / "corr" / "README.md").read_text()
    assert f"`{USER}/bench`" in card and "| `gsm8k` | 33.3 | 33.3 | 0.0 | 33.3 | 100.0 | 50.0 |" in card
