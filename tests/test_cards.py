"""Dataset, model and Space cards: every number comes from the folder's own data; nothing leaks."""

from __future__ import annotations

import json
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard, SpaceCard, parse_eval_result_entries

from lema_hub import PAPER_CITATION, formats
from lema_hub.artifacts import find_leaks, load_rows
from lema_hub.build import BuildConfig, build
from lema_hub.cards.dataset import write_dataset_card
from lema_hub.cards.model import write_eval_results, write_model_card, write_space_card
from lema_hub.collect import CollectConfig, collect
from lema_hub.correct import CorrectConfig, correct
from lema_hub.corrector.reference import reference_correction
from lema_hub.evaluate import EvalConfig, evaluate
from lema_hub.evolve import EvolveConfig, evolve
from lema_hub.formats import last_boxed
from lema_hub.problems import load_sample
from lema_hub.schema import CORRECTOR_TOKENS, GENERATOR_TOKENS, REFERENCE_CORRECTOR
from tests.fake_openai_server import FakeOpenAIServer
from tests.hub_emulator import TOKEN


def _assert_clean(folder: Path, tmp_path: Path) -> None:
    """No token and no local path (`tmp_path`) in any file of the artifact (binary files included)."""
    assert find_leaks(folder) == []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data, path
            assert str(tmp_path).encode() not in data, path


def _images(card_text: str, folder: Path) -> list[str]:
    refs = re.findall(r"!\[[^\]]*\]\((images/[^)]+\.png)\)", card_text)
    assert refs, "the card shows no plot"
    for ref in refs:
        assert (folder / ref).read_bytes().startswith(b"\x89PNG")
    return refs


# ------------------------------------------------------------------- folders written by the stages
# Every dataset card below renders a folder that a stage wrote (collect, correct, build, evolve,
# evaluate) against a loopback OpenAI-compatible server; expected numbers come from its parquet.
PRICE = {"input": 2.5, "output": 10.0}  # $ per million tokens
GSM8K_FILE = str(resources.files("lema_hub").joinpath("data", "sample_train.jsonl"))  # GSM8K's format
_GSM8K = load_sample("train")[:4]
_TEST = load_sample("test")
_MATH = [  # MATH's original format; answers are plain numbers so one responder can answer them all
    {
        "problem": f"What is ${a} + {b}$?",
        "solution": f"Adding the two numbers gives ${a} + {b} = {a + b}$, so the sum is $\\boxed{{{a + b}}}$.",
        "level": f"Level {lvl}",
        "type": "Prealgebra",
    }
    for a, b, lvl in [(2, 3, 1), (11, 4, 2), (20, 7, 3)]
]
_ASDIV = [  # ASDiv's format (CC BY-NC 4.0 data: its licence must reach the card)
    {"id": f"t-{a}", "body": f"Ana has {a} red pens and {b} blue pens.", "question": "How many pens does she have?",
     "answer": f"{a + b} (pens)", "formula": f"{a}+{b}={a + b}", "grade": 1}
    for a, b in [(4, 5), (12, 3)]
]  # fmt: skip
_SPOILED = {_GSM8K[-1].question, _MATH[-1]["problem"]}  # "spoiling-corrector" gets these wrong


def _last_question(text: str) -> str:
    return text.rsplit("Question: ", 1)[-1]


def _find(text: str, questions: list[str]) -> int | None:
    return next((i for i, q in enumerate(questions) if q in text), None)


def _correction(text: str, model: str) -> str:
    block = _last_question(text)
    if model == "broken-corrector":
        return "I am not sure what is wrong here."
    spoil = model == "spoiling-corrector" and any(q in block for q in _SPOILED)
    i = _find(block, [p.question for p in _GSM8K])
    if i is not None:
        steps = [s for _, s in formats.parse_rendered_steps(block.split("Original Solution:", 1)[1])]
        fix = reference_correction(_GSM8K[i].to_dict(), steps)
        corrected = list(fix.corrected_steps)
        if spoil:
            corrected[-1] = formats.cot_target("", "123456")
        return formats.correction_target(fix.incorrect_step, fix.explanation, corrected)
    m = _MATH[_find(block, [r["problem"] for r in _MATH])]
    answer = "123456" if spoil else last_boxed(m["solution"])
    return formats.correction_target(1, "The two numbers were added wrongly.", [f"The answer is {answer}."])


def _lema_responder(payload: dict) -> str:
    """A loopback LLM for every stage.

    Collection: sample k (seed k) of a problem is right for even k, wrong for odd k. Correction:
    reference-quality corrections (none parseable from "broken-corrector"; a wrong corrected answer
    for the _SPOILED problems from "spoiling-corrector"). Evolution: one new "boxes" question per
    seed, answered consistently. Evaluation: the bundled test problems, right for even positions.
    """
    text = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
    if "Original Solution:" in text:
        return _correction(text, payload["model"])
    if "Seed Problem:" in text:
        i = _find(text.rsplit("Seed Problem:", 1)[1], [p.question for p in _GSM8K])
        return f"New Problem: Priya packs {i + 3} boxes with 6 pens in each box. How many pens does she pack?"
    last = _last_question(text)
    if "boxes with 6 pens" in last:
        n = int(re.search(r"\d+", last).group(0))
        return f"She packs {n} * 6 = {n * 6} pens. The answer is {n * 6}."
    right = (payload.get("seed") or 0) % 2 == 0
    if (i := _find(last, [p.question for p in _GSM8K])) is not None:
        p = _GSM8K[i]
        steps = formats.gold_steps(p)
        if right:
            return " ".join(steps)
        return " ".join([f"{steps[0]} Plus 1000.", f"The answer is {float(p.gold_answer) + 1000:g}."])
    if (i := _find(last, [r["problem"] for r in _MATH])) is not None:
        answer = int(last_boxed(_MATH[i]["solution"])) + (0 if right else 1)
        return f"Adding them gives {answer}. The answer is {answer}."
    if (i := _find(last, [r["body"] for r in _ASDIV])) is not None:
        answer = int(_ASDIV[i]["answer"].split()[0]) + (0 if right else 1)
        return f"Adding them gives {answer}. The answer is {answer}."
    i = _find(last, [p.question for p in _TEST])
    return f"Let me compute. The answer is {_TEST[i].gold_answer if i % 2 == 0 else -1}."


@pytest.fixture(scope="module")
def lema_server():
    with FakeOpenAIServer(responder=_lema_responder) as srv:
        yield srv


def _collect(server, out: Path, problems: str, path: str) -> Path:
    collect(
        CollectConfig(
            problems=problems, problems_path=path, problems_limit=4, output_dir=str(out), backend="openai",
            model="fake-model", base_urls=[server.base_url], prompt_style="chat", num_samples=2,
            temperature=0.7, max_tokens=128, progress=False,
        )
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def collected(lema_server, tmp_path_factory) -> Path:
    """A mistakes folder written by `collect` (4 GSM8K-format problems, 2 samples each)."""
    return _collect(lema_server, tmp_path_factory.mktemp("collect") / "lema-mistakes", "gsm8k", GSM8K_FILE)


@pytest.fixture(scope="module")
def math_mistakes(lema_server, tmp_path_factory) -> Path:
    """A mistakes folder written by `collect` on 3 MATH-format problems (with levels)."""
    root = tmp_path_factory.mktemp("collect-math")
    path = root / "math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _MATH))
    return _collect(lema_server, root / "lema-mistakes", "math", str(path))


@pytest.fixture(scope="module")
def reference_corrections(collected, tmp_path_factory) -> Path:
    """A corrections folder written by `correct` with the rule-based reference corrector."""
    out = tmp_path_factory.mktemp("correct-ref") / "lema-corrections"
    correct(
        CorrectConfig(mistakes=str(collected), output_dir=str(out), hub_repo_id="someone/lema-corrections")
    )
    return out


def _correct(server, mistakes: Path, out: Path, model: str, **kw) -> dict:
    return correct(
        CorrectConfig(
            mistakes=str(mistakes), output_dir=str(out), backend="openai", model=model,
            base_urls=[server.base_url], prompt_style="chat", progress=False, **kw,
        )
    )  # fmt: skip


def _rows(folder: Path, config: str) -> list[dict]:
    return load_rows(str(folder), config, missing_ok=True)


def test_mistakes_card(collected):
    samples, wrong = _rows(collected, "gsm8k-samples"), _rows(collected, "gsm8k")
    verdicts = Counter(r["verdict"] for r in samples)
    assert len(samples) == 8 and verdicts["correct"] and verdicts["wrong"] == len(wrong) > 0
    card = DatasetCard.load(collected / "README.md")
    text = card.text
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["source_datasets"] == ["openai/gsm8k"]
    assert data["size_categories"] == ["n<1K"] and "text-generation" in data["task_categories"]
    assert data["pretty_name"] and sorted(c["config_name"] for c in data["configs"]) == [
        "gsm8k",
        "gsm8k-samples",
    ]
    assert f"| `gsm8k` | train | {len(wrong)} |" in text
    assert f"| `gsm8k-samples` | train | {len(samples)} |" in text
    n, c = len(samples), verdicts["correct"]
    assert (
        f"| `fake-model` | {n} | {c} | {verdicts['wrong']} | {verdicts['ungradeable']} | {100 * c / n:.1f}% |"
        in text
    )
    kept = {r["verdict"] for r in wrong}
    for verdict, count in verdicts.items():  # the verdict breakdown, and what the main config keeps
        head, keep = f"| `{verdict}` | {count} | {100 * count / n:.1f}% |", "yes" if verdict in kept else "no"
        assert [line.endswith(f"| {keep} |") for line in text.splitlines() if line.startswith(head)] == [True]
    assert kept == {"wrong"}
    # Math rows in math terms (the CSQA wording is for CSQA folders only: tests/test_csqa_pipeline.py).
    assert "sampled from language models on math word problems, with" in text and "math" in card.data.tags
    assert "For multiple-choice questions" not in text and "`candidates`" not in text
    assert 'load_dataset("your-username/lema-mistakes", "gsm8k", split="train")' in text
    assert "Replace `your-username`" in text
    assert any(r["question"] in text for r in wrong)  # one record rendered
    assert PAPER_CITATION in text
    prompt_tokens = sum(r[GENERATOR_TOKENS.prompt] for r in samples)
    assert prompt_tokens > 0 and f"| {prompt_tokens:,} |" in text
    assert "unknown" in text  # a served model without a price
    _images(text, collected)
    _assert_clean(collected, collected.parent)


def test_mistakes_card_carries_its_sources_licence(lema_server, tmp_path):
    path = tmp_path / "asdiv.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _ASDIV))
    folder = _collect(lema_server, tmp_path / "lema-mistakes", "asdiv", str(path))
    assert {r["source"] for r in _rows(folder, "gsm8k-samples")} == {"asdiv"}  # a numeric task
    card = DatasetCard.load(folder / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and card.data.source_datasets == ["EleutherAI/asdiv"]
    assert "ASDiv is CC BY-NC 4.0" in card.text
    _assert_clean(folder, tmp_path)


def test_corrections_card_numbers_and_reference_corrector(reference_corrections):
    folder = reference_corrections
    accepted, rejected = _rows(folder, "gsm8k"), _rows(folder, "gsm8k-rejected")
    assert accepted and {r[CORRECTOR_TOKENS.model] for r in accepted + rejected} == {REFERENCE_CORRECTOR}
    text = (folder / "README.md").read_text()
    rate = 100 * len(accepted) / (len(accepted) + len(rejected))
    assert (
        f"**Accepted:** {len(accepted)}; **rejected:** {len(rejected)}; **acceptance rate:** {rate:.1f}%"
        in text
    )
    assert "rule-based reference corrector" in text
    assert (
        "for each wrong reasoning path, the first incorrect step, an explanation and a corrected solution"
        in text
    )
    assert "`incorrect_step` (1-based), `explanation`, `corrected_steps`," in text
    assert "CommonsenseQA rows" not in text and "inexact_choice" not in text
    assert 'load_dataset("someone/lema-corrections", "gsm8k", split="train")' in text
    assert f"`{accepted[0]['corrector_prompt']}`" in text
    assert "Position of the first incorrect step" not in text  # the caption, not the plot title
    refs = _images(text, folder)
    assert "images/incorrect_step_position.png" in refs
    # With a price table the cost of an LLM is estimated; the rule-based corrector costs nothing.
    write_dataset_card(folder, "corrections", prices={"gpt-4o-fake": PRICE})
    text = (folder / "README.md").read_text()
    assert "$0 (rule-based, no model)" in text
    _assert_clean(folder, folder.parent)


def test_corrections_card_shows_the_llm_corrector_tokens_and_cost(lema_server, collected, tmp_path):
    folder = tmp_path / "lema-corrections"
    summary = _correct(lema_server, collected, folder, "gpt-4o-fake", price_table={"gpt-4o-fake": PRICE})
    rows = _rows(folder, "gsm8k") + _rows(folder, "gsm8k-rejected")
    assert summary["accepted"] == len(rows) > 0  # the server's corrections reach gold
    prompt = sum(r[CORRECTOR_TOKENS.prompt] for r in rows)
    completion = sum(r[CORRECTOR_TOKENS.completion] for r in rows)
    tokens = summary["tokens"]
    assert (prompt, completion) == (tokens["prompt_tokens"], tokens["completion_tokens"])
    assert prompt > 500 * len(rows) and completion > 0  # the few-shot prompt went in
    cost = (prompt * PRICE["input"] + completion * PRICE["output"]) / 1e6
    text = (folder / "README.md").read_text()
    assert (
        f"| `gpt-4o-fake` | {len(rows)} | {prompt:,} | {completion:,} | complete | "
        f"${cost:,.2f} (at $2.5/$10.0 per M in/out tokens) |"
    ) in text
    assert "Token usage: unknown" not in text
    assert "The main configs (`gsm8k`) hold the **accepted** corrections" in text
    _assert_clean(folder, tmp_path)


def test_corrections_card_when_nothing_was_accepted(lema_server, collected, tmp_path):
    folder = tmp_path / "lema-corrections"
    summary = _correct(lema_server, collected, folder, "broken-corrector")
    assert summary["accepted"] == 0 and summary["reject_reasons"] == {"parse_error": summary["n"]}
    text = (folder / "README.md").read_text()
    assert "(``)" not in text and "hold the **accepted** corrections" not in text
    assert "**No correction was accepted**" in text and "(`gsm8k-rejected`)" in text
    assert f"| `gsm8k` | `broken-corrector` | 0 | {summary['n']} | 0.0% |" in text
    assert f"| `broken-corrector` | {summary['n']} |" in text  # tokens are still counted
    _assert_clean(folder, tmp_path)


def test_card_follows_the_data_and_keeps_configs(lema_server, collected, math_mistakes, tmp_path):
    folder = tmp_path / "lema-corrections"
    _correct(lema_server, collected, folder, "spoiling-corrector")
    first = DatasetCard.load(folder / "README.md")
    assert sorted(first.data.source_datasets) == ["openai/gsm8k"]
    _correct(lema_server, math_mistakes, folder, "spoiling-corrector")  # a second task, same folder
    card = DatasetCard.load(folder / "README.md")
    configs = ["gsm8k", "gsm8k-rejected", "math", "math-rejected"]
    assert [c["config_name"] for c in card.data.configs] == configs
    rows = {c: _rows(folder, c) for c in configs}
    assert all(rows.values())  # each task has accepted and rejected corrections
    assert sorted(card.data.source_datasets) == ["EleutherAI/hendrycks_math", "openai/gsm8k"]
    assert f"| `math` | train | {len(rows['math'])} |" in card.text
    n_acc = len(rows["gsm8k"]) + len(rows["math"])
    n_rej = len(rows["gsm8k-rejected"]) + len(rows["math-rejected"])
    assert f"**acceptance rate:** {100 * n_acc / (n_acc + n_rej):.1f}%" in card.text
    reasons = Counter(r["reject_reason"] for c in configs[1::2] for r in rows[c])
    for reason, n in reasons.items():
        assert f"| {reason} | {n} | {100 * n / n_rej:.1f}% |" in card.text
    assert {r["level"] for r in rows["math"] + rows["math-rejected"]} >= {3}
    assert "images/acceptance_by_level.png" in card.text


def _build(server, corrections: Path, out: Path, kind: str) -> Path:
    views = {"mixture": ["lema", "cot"], "cot": ["cot"]}[kind]
    build(
        BuildConfig(
            problems="gsm8k", problems_path=GSM8K_FILE, problems_limit=4, output_dir=str(out), views=views,
            corrections=str(corrections) if kind == "mixture" else None,
            prompt_style="chat" if kind == "mixture" else "plain",
        )
    )  # fmt: skip
    if kind == "cot":  # no stage writes a `cot` card; the kind renders a build folder of CoT rows
        write_dataset_card(out, "cot")
    return out


def _evolve(server, corrections: Path, out: Path) -> Path:
    evolve(
        EvolveConfig(
            strategy="correction_centric", corrections=str(corrections), problems="gsm8k",
            problems_path=GSM8K_FILE, problems_limit=4, num_seeds=4, seed=1, backend="openai",
            model="fake-model", base_urls=[server.base_url], prompt_style="chat", output_dir=str(out),
            progress=False,
        )
    )  # fmt: skip
    return out


def _evaluate(server, out: Path) -> Path:
    evaluate(
        EvalConfig(
            models=["fake-model"], backend="openai", base_urls=[server.base_url], problems="sample",
            problems_limit=4, output_dir=str(out), max_retries=1,
        )
    )  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["cot", "mixture", "evolved", "eval_details"])
def test_other_dataset_cards_render(lema_server, reference_corrections, tmp_path, kind):
    folder = tmp_path / kind
    if kind in ("cot", "mixture"):
        _build(lema_server, reference_corrections, folder, kind)
    elif kind == "evolved":
        _evolve(lema_server, reference_corrections, folder)
    else:
        _evaluate(lema_server, folder)
    card = DatasetCard.load(folder / "README.md")
    assert card.data.pretty_name and card.data.configs and PAPER_CITATION in card.text
    _images(card.text, folder)
    configs = [c["config_name"] for c in card.data.configs]
    if kind in ("cot", "mixture"):
        for config in configs:
            rows = _rows(folder, config)
            kinds = Counter(r["kind"] for r in rows)
            style = "conversational (messages)" if kind == "mixture" else "plain text"
            row = f"| `{config}` | {len(rows)} | {kinds['cot']} | {kinds['correction']} | {style} |"
            assert rows and row in card.text
    if kind == "mixture":
        assert sorted(configs) == ["gsm8k-cot", "gsm8k-lema"] and "[assistant]" in card.text
        assert (
            "Correction rows use the paper's second instruction: the question and the wrong path in, "
            "`Incorrect Step: Step k.` / `Explanation: ...` / `Correct Solution: {...}` out." in card.text
        )
        assert Counter(r["kind"] for r in _rows(folder, "gsm8k-lema"))["correction"] > 0
    if kind == "evolved":
        rows = _rows(folder, configs[0])
        assert rows and all(r["source"] == "evolved" for r in rows)
    if kind == "eval_details":
        for config in configs:
            rows = load_rows(str(folder), config, split="test")
            acc = 100 * sum(r["verdict"] == "correct" for r in rows) / len(rows)
            assert 0 < acc < 100 and f"| `{config}` | {len(rows)} | {acc:.1f}% |" in card.text
        assert 'split="test"' in card.text
        assert "the extracted answer and the verdict from math-verify." in card.text
    assert "math" in card.data.tags and "multiple-choice" not in card.data.tags
    assert "For multiple-choice questions" not in card.text and "mapped_answer" not in card.text
    _assert_clean(folder, tmp_path)


def test_unknown_kind_and_empty_folder_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        write_dataset_card(tmp_path, "nope")
    with pytest.raises(ValueError, match="no data"):
        write_dataset_card(tmp_path, "cot")


def test_model_card_and_eval_results(tmp_path):
    folder = tmp_path / "lema-smollm2-135m-gsm8k"
    info = {
        "model_name": "lema-smollm2-135m-gsm8k",
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "base_model_name": "embedded:smollm2-135m-instruct",
        "datasets": ["someone/lema-mixture", "lema-mixture-local"],
        "task": "gsm8k",
        "view": "lema",
        "prompt_style": "chat",
        "adapter": True,
        "peft": {
            "r": 64,
            "lora_alpha": 16,
            "lora_dropout": 0.05,
            "target_modules": "all-linear",
            "quantization": "4bit-nf4",
        },
        "training": {"learning_rate": 0.0002, "lr_scheduler_type": "constant", "global_batch_size": 96},
        "metrics": {"train_loss": 1.23, "runtime_s": None},
        "recipe": f"lema-hub sft --output_dir {tmp_path}/out --hub_token=<redacted>",
    }
    write_model_card(folder, info)
    write_eval_results(
        folder,
        [
            {
                "dataset_id": "openai/gsm8k",
                "task_id": "gsm8k",
                "value": 41.5,
                "ci_low": 38.9,
                "ci_high": 44.2,
                "n": 1319,
                "date": "2025-06-01",
            }
        ],
        "| detail | 41.5 |\n|---|---|",
    )
    write_eval_results(folder, [{"dataset_id": "HuggingFaceH4/MATH-500", "task_id": "math500", "value": 9.0}])
    write_model_card(folder, info)  # re-rendering keeps the results
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.license == "apache-2.0" and card.data.library_name == "peft"
    assert card.data.datasets == ["someone/lema-mixture", "openai/gsm8k"]
    assert {"lema", "peft"} <= set(card.data.tags)
    assert "**QLoRA:** r=64, alpha=16, dropout=0.05" in card.text and "4bit-nf4" in card.text
    assert "AutoPeftModelForCausalLM" in card.text and "apply_chat_template" in card.text
    assert "| `openai/gsm8k` | gsm8k | 41.5 | 2025-06-01 | 95% CI [38.9, 44.2]; n=1319 |" in card.text
    assert "| `HuggingFaceH4/MATH-500` | math500 | 9.0 |" in card.text and "| detail | 41.5 |" in card.text
    entries = parse_eval_result_entries(yaml.safe_load((folder / ".eval_results" / "gsm8k.yaml").read_text()))
    assert entries[0].dataset_id == "openai/gsm8k" and entries[0].value == 41.5
    assert sorted(p.name for p in (folder / ".eval_results").iterdir()) == ["gsm8k.yaml", "math500.yaml"]
    _assert_clean(folder, tmp_path)


def test_space_card(tmp_path):
    gradio = pytest.importorskip("gradio")
    folder = tmp_path / "space"
    write_space_card(
        folder, {"models": ["someone/lema-smollm2-135m-gsm8k"], "datasets": ["someone/lema-corrections"]}
    )
    card = SpaceCard.load(folder / "README.md")
    assert card.data.sdk == "gradio" and card.data.sdk_version == gradio.__version__
    assert card.data.app_file == "app.py" and card.data.models == ["someone/lema-smollm2-135m-gsm8k"]
    assert card.data.datasets == ["someone/lema-corrections"]
    _assert_clean(folder, tmp_path)
