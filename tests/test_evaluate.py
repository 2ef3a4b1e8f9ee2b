"""Evaluation: statistics, prediction matching, the predictions-file path, a tiny-model run end to end,
an endpoint run with two models side by side, and the paper's gold completions scoring 100 %."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from lema_hub.evaluate import EvalConfig, evaluate, model_short_name, owned_model_folder
from lema_hub.metrics import (
    accuracy_with_interval,
    bootstrap_interval,
    comparison_table,
    pass_at_k,
    summarize_rows,
    wilson_interval,
)
from lema_hub.predictions import match_predictions
from lema_hub.problems import Problem, ProblemArgs, load_problems

TINY_MODEL = "tiny:smollm2"


def _problems(n: int = 3) -> list[Problem]:
    return [
        Problem(
            problem_id=f"t/test/{i}",
            source="gsm8k",
            split="test",
            question=f"What is {i} + {i}?",
            gold_solution=f"{i} + {i} = {2 * i}\n#### {2 * i}",
            gold_answer=str(2 * i),
            level=None,
            subject=None,
        )
        for i in range(n)
    ]


def _sample_test() -> list[Problem]:
    return load_problems(ProblemArgs(problems="sample", problems_split="test"))


def _card_value(model_folder: Path, task: str) -> dict:
    """The single entry of `.eval_results/<task>.yaml` (or, for the bundled sample, which is no Hub
    dataset, of `lema_hub_eval_results.yaml`), flattened to the keys we compare."""
    hub_file = model_folder / ".eval_results" / f"{task}.yaml"
    assert hub_file.is_file() != (task == "sample"), "the sample's results must stay out of .eval_results/"
    data = yaml.safe_load(
        (hub_file if task != "sample" else model_folder / "lema_hub_eval_results.yaml").read_text()
    )
    entries = data if isinstance(data, list) else data.get("results", [data])
    assert len(entries) == 1
    return entries[0]


def _details(out_dir: Path, config: str) -> list[dict]:
    import datasets

    return datasets.load_dataset(str(out_dir), config, split="test").to_list()


# ------------------------------------------------------------------------------------ statistics


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)  # 1 - C(7,2)/C(10,2)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_interval_method_depends_on_scores():
    binary = accuracy_with_interval([1, 0, 1, 1])
    assert binary["ci_method"] == "wilson" and binary["accuracy"] == 0.75
    fractional = accuracy_with_interval([0.5, 0.25, 1.0, 0.0] * 10)
    assert fractional["ci_method"] == "bootstrap"
    assert fractional["ci_low"] < fractional["accuracy"] < fractional["ci_high"]
    assert bootstrap_interval([0.3] * 20) == pytest.approx((0.3, 0.3))


def test_summarize_rows_pass_at_1_from_n_and_breakdowns():
    def row(pid, verdict, answer, level, subject, tokens):
        return {
            "problem_id": pid,
            "verdict": verdict,
            "predicted_answer": answer,
            "level": level,
            "subject": subject,
            "completion_tokens": tokens,
            "finish_reason": "stop",
            "error": None,
        }

    rows = [
        row("a", "correct", "1", 1, "Algebra", 10),
        row("a", "wrong", "2", 1, "Algebra", 20),
        row("b", "correct", "3", 2, "Geometry", 30),
        row("b", "correct", "3", 2, "Geometry", 40),
        row("c", "ungradeable", None, 2, "Algebra", 50),
        row("c", "wrong", "9", 2, "Algebra", 60),
    ]
    m = summarize_rows(rows)
    assert m["accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["ci_method"] == "bootstrap"
    assert m["num_problems"] == 3 and m["num_samples"] == 6 and m["samples_per_problem"] == 2
    assert m["invalid_rate"] == pytest.approx(1 / 6)
    assert m["mean_output_tokens"] == pytest.approx(35)
    assert m["by_level"]["1"]["accuracy"] == 0.5 and m["by_level"]["2"]["accuracy"] == 0.5
    assert m["by_subject"]["Geometry"]["accuracy"] == 1.0 and m["by_subject"]["Algebra"]["n"] == 2


def test_comparison_table_ranks_models():
    proto = {"decoding": "greedy", "prompt_style": "chat", "num_samples": 1, "max_new_tokens": 2048}
    base = {
        "benchmark": "gsm8k",
        "num_problems": 100,
        "protocol": proto,
        "invalid_rate": 0.1,
        "truncated_rate": 0.0,
        "mean_output_tokens": 120.0,
    }
    results = {
        "base-gsm8k": {**base, "model_label": "baseline", "accuracy": 0.3, "ci_low": 0.22, "ci_high": 0.4},
        "lema-gsm8k": {**base, "model_label": "lema", "accuracy": 0.42, "ci_low": 0.33, "ci_high": 0.52},
    }
    table = comparison_table(results)
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| lema | 42.0 | 33.0–52.0 | 10.0 ")
    assert lines[2].startswith("| baseline | 30.0 ")
    assert "### gsm8k (100 problems, greedy)" in table


def test_model_short_names(tmp_path):
    assert model_short_name("meta-llama/Llama-2-7b-hf") == "llama-2-7b-hf"
    assert model_short_name("embedded:smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_short_name(TINY_MODEL) == "tiny-smollm2"
    assert model_short_name(str(tmp_path / "My Model") + "/") == "my-model"


# ------------------------------------------------------------------------------------ predictions


def test_match_predictions_by_id_question_prompt_and_position():
    from lema_hub.formats import cot_prompt

    probs = _problems(3)
    by_id = [
        {"problem_id": "t/test/2", "completion": "c"},
        {"problem_id": "t/test/0", "completion": "a"},
        {"problem_id": "t/test/1", "completion": "b1"},
        {"problem_id": "t/test/1", "completion": "b2"},
        {"problem_id": "other/9", "completion": "ignored"},
    ]
    assert match_predictions(probs, by_id, "completion") == [["a"], ["b1", "b2"], ["c"]]
    by_prompt = [{"prompt": cot_prompt(p.question), "completion": p.problem_id} for p in reversed(probs)]
    assert match_predictions(probs, by_prompt, "completion") == [[p.problem_id] for p in probs]
    by_question = [{"question": "  " + p.question + " ", "completion": p.gold_answer} for p in probs]
    assert match_predictions(probs, by_question, "completion") == [["0"], ["2"], ["4"]]
    assert match_predictions(probs, [{"completion": "x"}] * 3, "completion") == [["x"]] * 3
    chat = [
        {"problem_id": p.problem_id, "completion": [{"role": "assistant", "content": "hi"}]} for p in probs
    ]
    assert match_predictions(probs, chat, "completion") == [["hi"]] * 3


def test_match_predictions_errors_name_the_problem():
    probs = _problems(3)
    with pytest.raises(ValueError, match="2 of 3 problems have no prediction"):
        match_predictions(probs, [{"problem_id": "t/test/0", "completion": "a"}], "completion")
    with pytest.raises(ValueError, match="no column 'output'"):
        match_predictions(probs, [{"problem_id": "t/test/0", "completion": "a"}], "output")
    with pytest.raises(ValueError, match="2 rows for 3 problems"):
        match_predictions(probs, [{"completion": "a"}] * 2, "completion")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_samples": 4}, "temperature > 0"),
        ({"models": ["a", "b"], "model_labels": ["x"]}, "model_labels has 1 names for 2 models"),
        ({"backend": "openai"}, "needs base_urls"),
        ({"backend": "llamacpp"}, "backend must be one of"),
        ({"prompt_style": "fewshot"}, "prompt_style must be one of"),
    ],
)
def test_bad_configs_fail_clearly(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        evaluate(EvalConfig(output_dir=str(tmp_path), **overrides))


def _own_tiny_model(tmp_path: Path, name: str = "lema-tiny-sample") -> Path:
    """A copy of the tiny model as a local folder that lema_hub wrote (so its card may be updated)."""
    from lema_hub.models import resolve_model

    folder = tmp_path / name
    shutil.copytree(resolve_model(TINY_MODEL), folder)
    assert owned_model_folder(str(folder)) == folder
    return folder


def test_predictions_file_grades_and_writes_the_model_card(tmp_path, tiny_model):
    problems = _sample_test()
    assert len(problems) >= 4
    folder = _own_tiny_model(tmp_path)
    preds = tmp_path / "preds.jsonl"
    rows = []
    for i, p in enumerate(problems):
        text = [
            f"So the total is {p.gold_answer}. The answer is {p.gold_answer}.",  # correct
            "The answer is 123456789.",  # wrong
            "I am not sure.",
        ][i % 3]  # no extractable answer
        rows.append({"problem_id": p.problem_id, "completion": text})
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "eval"

    summary = evaluate(
        EvalConfig(models=[str(folder)], problems="sample", predictions_path=str(preds), output_dir=str(out))
    )

    config = "lema-tiny-sample-sample"
    res = summary["results"][config]
    n_correct = len(range(0, len(problems), 3))
    assert res["accuracy"] == pytest.approx(n_correct / len(problems))
    assert res["invalid_rate"] == pytest.approx(len(range(2, len(problems), 3)) / len(problems))
    assert res["protocol"]["backend"] == "predictions-file"
    details = _details(out, config)
    assert [d["verdict"] for d in details[:2]] == ["correct", "wrong"]
    assert details[2]["predicted_answer"] is None and details[2]["verdict"] != "correct"
    # The card's numbers are the details dataset's numbers.
    card = _card_value(folder, "sample")
    accuracy = 100 * sum(d["verdict"] == "correct" for d in details) / len(details)
    assert float(card["value"]) == pytest.approx(round(accuracy, 2))
    assert summary["model_cards"] == [str(folder)]
    readme = (folder / "README.md").read_text()
    assert f"{accuracy:.1f}" in readme
    assert (out / "comparison.md").read_text() == summary["comparison"]


# ------------------------------------------------------------------------------------ end to end


def test_tiny_model_end_to_end_writes_details_and_card(tmp_path, tiny_model):
    folder = _own_tiny_model(tmp_path, "lema-tiny")
    out = tmp_path / "eval"
    cfg = EvalConfig(
        models=[str(folder)],
        problems="sample",
        problems_limit=4,
        max_new_tokens=8,
        batch_size=4,
        output_dir=str(out),
    )
    summary = evaluate(cfg)

    config = "lema-tiny-sample"
    res = summary["results"][config]
    assert res["protocol"]["prompt_style"] == "chat"  # SmolLM2's tokenizer has a chat template
    assert res["protocol"]["decoding"] == "greedy" and res["protocol"]["max_new_tokens"] == 8
    details = _details(out, config)
    assert len(details) == 4
    assert all(d["completion"] is not None and d["completion_tokens"] <= 8 for d in details)
    assert {"prompt", "completion", "predicted_answer", "verdict", "gold_answer", "problem_id"} <= set(
        details[0]
    )
    assert details[0]["prompt"].startswith("Please solve the following math problem.\nQuestion: ")
    card = _card_value(folder, "sample")
    accuracy = 100 * sum(d["verdict"] == "correct" for d in details) / len(details)
    assert float(card["value"]) == pytest.approx(round(accuracy, 2))
    assert res["mean_output_tokens"] == pytest.approx(sum(d["completion_tokens"] for d in details) / 4)
    record = yaml.safe_load((out / "lema_hub_config.yaml").read_text())
    assert record["evaluate"]["temperature"] == 0.0 and record["evaluate"]["problems_limit"] == 4
    saved = json.loads((out / "results.json").read_text())[config]
    assert saved["protocol"]["max_new_tokens"] == 8 and saved["accuracy"] == res["accuracy"]
    assert (out / "README.md").is_file()
    assert (out / "results.json").is_file()

    # A rerun resumes from the generation cache and gives identical details.
    cache = out / ".cache" / "generation" / f"{config}.jsonl"
    assert cache.is_file() and len(cache.read_text().splitlines()) == 4
    evaluate(cfg)
    assert _details(out, config) == details
    assert len(cache.read_text().splitlines()) == 4  # served from the cache: nothing generated again


def test_endpoint_backend_two_models_side_by_side(tmp_path):
    fake = pytest.importorskip("tests.fake_openai_server")
    problems = _sample_test()[:5]
    gold = {p.question: p.gold_answer for p in problems}

    def responder(payload: dict) -> str:
        text = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
        question = text.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
        if payload["model"] == "good":
            return f"Step 1: compute. The answer is {gold[question]}."
        return "Step 1: guess. The answer is -1."

    with fake.FakeOpenAIServer(responder=responder) as srv:
        summary = evaluate(
            EvalConfig(
                models=["good", "bad"],
                model_labels=["lema", "baseline"],
                backend="openai",
                base_urls=[srv.base_url],
                problems="sample",
                problems_limit=5,
                output_dir=str(tmp_path / "eval"),
                max_retries=1,
                extra_body={"top_k": 1},
            )
        )
        assert srv.payloads and all(p["top_k"] == 1 for p in srv.payloads)  # extra_body reaches the server
    assert summary["results"]["lema-sample"]["accuracy"] == 1.0
    assert summary["results"]["baseline-sample"]["accuracy"] == 0.0
    assert summary["results"]["lema-sample"]["protocol"]["prompt_style"] == "chat"
    assert summary["model_cards"] == []  # served models have no local card to write
    table_rows = [r for r in summary["comparison"].splitlines() if r.startswith("| ") and "Model" not in r]
    assert table_rows[0].startswith("| lema | 100.0") and table_rows[1].startswith("| baseline | 0.0")


@pytest.mark.shared_data
def test_paper_gold_completions_score_100_percent(shared_data, tmp_path):
    out = tmp_path / "eval"
    summary = evaluate(
        EvalConfig(
            models=["paper-gold"],
            problems="gsm8k",
            problems_split="test",
            problems_path=str(shared_data / "gsm8k" / "test.jsonl"),
            predictions_path=str(shared_data / "lema" / "test_data" / "gsm8k_test.jsonl"),
            output_dir=str(out),
        )
    )
    res = summary["results"]["paper-gold-gsm8k"]
    assert res["num_problems"] == 1319
    assert res["accuracy"] == 1.0 and res["invalid_rate"] == 0.0
    assert res["ci_high"] == 1.0 and res["ci_low"] > 0.99


def test_lora_adapter_folder_is_evaluated_over_its_base(tmp_path, tiny_model):
    """An adapter folder (as `lema-hub sft` writes it) is merged over its base by the transformers backend;
    the prompt style it was trained with (lema_hub_model.json) wins over the tokenizer's chat template."""
    from peft import LoraConfig, get_peft_model

    from lema_hub.models import load_model

    folder = tmp_path / "lema-tiny-lora"
    peft_model = get_peft_model(
        # init_lora_weights=False: a non-zero update, so the merged model differs from its base
        load_model(TINY_MODEL),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], init_lora_weights=False),
    )
    peft_model.peft_config["default"].base_model_name_or_path = TINY_MODEL
    peft_model.save_pretrained(folder)
    (folder / "lema_hub_model.json").write_text(
        json.dumps({"name": "lema-tiny-lora", "base_model": None, "prompt_style": "plain"})
    )
    out = tmp_path / "eval"
    summary = evaluate(
        EvalConfig(
            models=[str(folder)], problems="sample", problems_limit=2, max_new_tokens=4, output_dir=str(out)
        )
    )
    res = summary["results"]["lema-tiny-lora-sample"]
    assert res["protocol"]["prompt_style"] == "plain"
    assert res["protocol"]["stop"] == ["\nQuestion:", "\n\nPlease solve the following math problem."]
    assert res["num_samples"] == 2 and res["error_count"] == 0
    assert _card_value(folder, "sample")["dataset"]["id"] == "lema-hub/bundled-sample"  # local file only
    # What was evaluated is base + adapter, merged: q_proj moved, the rest is the base's.
    merged, base = load_model(str(folder)).model.layers[0], load_model(TINY_MODEL).model.layers[0]
    assert not torch.equal(merged.self_attn.q_proj.weight, base.self_attn.q_proj.weight)
    assert torch.equal(merged.self_attn.k_proj.weight, base.self_attn.k_proj.weight)


# ------------------------------------------------------------------------------ prompt templates


def test_named_and_file_prompt_templates(tmp_path):
    from lema_hub.formats import cot_prompt, load_prompt_template

    lema = load_prompt_template("lema")
    assert lema.name == "lema-cot" and lema.render("What is  2 + 2?") == cot_prompt("What is 2 + 2?")
    alpaca = load_prompt_template("alpaca")
    assert alpaca.render("What is 2 + 2?") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nWhat is 2 + 2?\n\n### Response: Let's think step by step.\n"
    )
    assert alpaca.stops() == ["\n### Instruction:", "\n\nBelow is an instruction"]
    path = tmp_path / "mine.txt"
    path.write_text("Q: {question}\nSolve it; answer as \\boxed{}.\nA:")
    mine = load_prompt_template(str(path))
    assert mine.name == "file:mine.txt" and len(mine.sha256) == 64
    assert mine.render("1+1?") == "Q: 1+1?\nSolve it; answer as \\boxed{}.\nA:"  # other braces kept
    assert mine.stops() == ["\nQ:"]
    (tmp_path / "bad.txt").write_text("no placeholder")
    with pytest.raises(ValueError, match=r"bad.txt: it has no \{question\} placeholder"):
        load_prompt_template(str(tmp_path / "bad.txt"))
    with pytest.raises(ValueError, match="neither a named template"):
        load_prompt_template("wizard")
    with pytest.raises(ValueError, match="prompt_templates has 3 entries for 2 models"):
        evaluate(EvalConfig(models=["a", "b"], prompt_templates=["lema"] * 3, output_dir=str(tmp_path)))


def test_prompt_template_per_model_reaches_the_model_and_the_record(tmp_path):
    """Two served models, one with the Alpaca template (as the paper evaluates WizardMath), one with LeMa's."""
    fake = pytest.importorskip("tests.fake_openai_server")
    problems = _sample_test()[:3]
    gold = {p.question: p.gold_answer for p in problems}
    seen: dict[str, list[dict]] = {"wizard": [], "lema": []}

    def responder(payload: dict) -> str:
        seen[payload["model"]].append(payload)
        text = payload["prompt"]
        if text.startswith("Below is an instruction"):
            question = text.split("### Instruction:\n", 1)[1].split("\n\n### Response:", 1)[0]
        else:
            question = text.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
        return f"The answer is {gold[question]}."

    out = tmp_path / "eval"
    with fake.FakeOpenAIServer(responder=responder) as srv:
        summary = evaluate(
            EvalConfig(
                models=["wizard", "lema"],
                prompt_templates=["alpaca", "lema"],
                backend="openai",
                prompt_style="plain",
                base_urls=[srv.base_url],
                problems="sample",
                problems_limit=3,
                output_dir=str(out),
                max_retries=1,
            )
        )
    assert all(p["prompt"].startswith("Below is an instruction") for p in seen["wizard"])
    assert all(p["prompt"].startswith("Please solve the following math problem.") for p in seen["lema"])
    assert seen["wizard"][0]["stop"] == ["\n### Instruction:", "\n\nBelow is an instruction"]
    wiz, lem = summary["results"]["wizard-sample"], summary["results"]["lema-sample"]
    assert wiz["accuracy"] == 1.0 and lem["accuracy"] == 1.0  # each question was found in its template
    assert wiz["protocol"]["prompt"] == "alpaca" and lem["protocol"]["prompt"] == "lema-cot"
    assert wiz["protocol"]["prompt_template"].endswith("### Response: Let's think step by step.\n")
    assert _details(out, "wizard-sample")[0]["prompt"].startswith("Below is an instruction")
    assert "| alpaca, plain |" in summary["comparison"]


def test_prompt_template_is_written_on_the_model_card(tmp_path, tiny_model):
    folder = _own_tiny_model(tmp_path, "wizard-tiny")
    problems = _sample_test()[:2]
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        "".join(
            json.dumps({"problem_id": p.problem_id, "completion": "The answer is 1."}) + "\n"
            for p in problems
        )
    )
    evaluate(
        EvalConfig(
            models=[str(folder)],
            problems="sample",
            problems_limit=2,
            predictions_path=str(preds),
            prompt_templates=["alpaca"],
            output_dir=str(tmp_path / "eval"),
        )
    )
    assert "alpaca template" in json.dumps(_card_value(folder, "sample"))
    assert "alpaca template" in (folder / "README.md").read_text()


def test_prompt_template_file_is_recorded_by_name_only(tmp_path):
    problems = _sample_test()[:2]
    template = tmp_path / "private" / "my_prompt.txt"
    template.parent.mkdir()
    template.write_text("Q: {question}\nA:")
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        "".join(json.dumps({"problem_id": p.problem_id, "completion": "x"}) + "\n" for p in problems)
    )
    out = tmp_path / "eval"
    summary = evaluate(
        EvalConfig(
            models=["m"],
            problems="sample",
            problems_limit=2,
            predictions_path=str(preds),
            prompt_templates=[str(template)],
            output_dir=str(out),
        )
    )
    assert summary["results"]["m-sample"]["protocol"]["prompt"] == "file:my_prompt.txt"
    assert _details(out, "m-sample")[0]["prompt"].startswith("Q: ")
    record = (out / "lema_hub_config.yaml").read_text()
    assert "my_prompt.txt" in record and str(template.parent) not in record
