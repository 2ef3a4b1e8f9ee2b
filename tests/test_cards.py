"""Dataset, model and Space cards: every number comes from the folder's own data; nothing leaks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard, SpaceCard, parse_eval_result_entries

from lema_hub import PAPER_CITATION, formats
from lema_hub.artifacts import find_leaks, load_rows, save_dataset_config, write_run_record
from lema_hub.cards.dataset import write_dataset_card
from lema_hub.cards.model import write_eval_results, write_model_card, write_space_card
from lema_hub.collect import CollectConfig, collect
from lema_hub.correct import CorrectConfig, correct
from lema_hub.corrector.reference import reference_correction
from lema_hub.problems import load_sample
from lema_hub.schema import CORRECTOR_TOKENS
from tests.fake_openai_server import FakeOpenAIServer
from tests.hub_emulator import TOKEN
from tests.test_hub import build_corrections, build_mistakes, correction_rows, problem, sample_rows


def _assert_clean(folder: Path, tmp_path: Path) -> None:
    """No token and no local absolute path in any file of the artifact (binary files included)."""
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


def test_mistakes_card(tmp_path):
    folder = tmp_path / "lema-mistakes"
    samples = build_mistakes(folder, n_problems=4)
    card = DatasetCard.load(folder / "README.md")
    text = card.text
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["source_datasets"] == ["openai/gsm8k"]
    assert data["size_categories"] == ["n<1K"] and "text-generation" in data["task_categories"]
    assert data["pretty_name"] and [c["config_name"] for c in data["configs"]] == ["gsm8k-samples", "gsm8k"]
    n_wrong = sum(r["verdict"] == "wrong" for r in samples)
    assert (
        f"| `gsm8k` | train | {n_wrong} |" in text and f"| `gsm8k-samples` | train | {len(samples)} |" in text
    )
    assert "| `HuggingFaceTB/SmolLM2-135M-Instruct` | 8 | 4 | 4 | 0 | 50.0% |" in text
    assert 'load_dataset("your-username/lema-mistakes", "gsm8k", split="train")' in text
    assert "Replace `your-username`" in text
    assert samples[0]["question"] in text  # one record rendered
    assert PAPER_CITATION in text
    prompt_tokens = sum(r["prompt_tokens"] for r in samples)
    assert f"| {prompt_tokens:,} |" in text and "unknown" in text  # a Hub model without a price
    _images(text, folder)
    _assert_clean(folder, tmp_path)


def test_corrections_card_numbers_and_reference_corrector(tmp_path):
    mistakes = tmp_path / "lema-mistakes"
    folder = tmp_path / "lema-corrections"
    samples = build_mistakes(mistakes, n_problems=4)
    accepted, rejected = build_corrections(folder, samples, repo_id="someone/lema-corrections")
    text = (folder / "README.md").read_text()
    assert f"**Accepted:** {len(accepted)}; **rejected:** {len(rejected)}; **acceptance rate:** 75.0%" in text
    assert "| corrected answer 9 != gold | 1 | 100.0% |" in text
    assert "rule-based reference corrector" in text
    assert 'load_dataset("someone/lema-corrections", "gsm8k", split="train")' in text
    assert "`lema-gsm8k@sha256:3f2a9c1b7d4e`" in text
    assert "Position of the first incorrect step" not in text  # the caption, not the plot title
    refs = _images(text, folder)
    assert "images/incorrect_step_position.png" in refs
    # With a price table the cost is estimated; the rule-based corrector costs nothing.
    write_dataset_card(folder, "corrections", prices={"gpt-4o-2024-08-06": {"input": 2.5, "output": 10.0}})
    text = (folder / "README.md").read_text()
    assert "$0.01 (at $2.5/$10.0 per M in/out tokens)" in text
    assert "$0 (rule-based, no model)" in text
    _assert_clean(folder, tmp_path)


def test_card_follows_the_data_and_keeps_configs(tmp_path):
    folder = tmp_path / "lema-corrections"
    build_corrections(folder, build_mistakes(tmp_path / "m", 4))
    more = sample_rows(3, 2)
    for r in more:
        r.update(source="math", problem_id=r["problem_id"].replace("gsm8k", "math"), level=2)
    acc, rej = correction_rows([r for r in more if r["verdict"] == "wrong"])
    save_dataset_config(folder, "math", {"train": acc})
    save_dataset_config(folder, "math-rejected", {"train": rej})
    write_dataset_card(folder, "corrections")
    card = DatasetCard.load(folder / "README.md")
    assert [c["config_name"] for c in card.data.configs] == [
        "gsm8k",
        "gsm8k-rejected",
        "math",
        "math-rejected",
    ]
    assert sorted(card.data.source_datasets) == ["EleutherAI/hendrycks_math", "openai/gsm8k"]
    assert "| `math` | train | 2 |" in card.text and "**acceptance rate:** 71.4%" in card.text  # 5 of 7
    assert "images/acceptance_by_level.png" in card.text


def _training_rows(kind_counts: dict[str, int], chat: bool) -> list[dict]:
    rows = []
    for kind, n in kind_counts.items():
        for i in range(n):
            p = problem(i)
            prompt = f"Please solve the following math problem.\nQuestion: {p['question']}\nAnswer: Let's think step by step.\n"
            completion = f"Step one. The answer is {p['gold_answer']}."
            rows.append(
                {
                    "kind": kind,
                    "problem_id": p["problem_id"],
                    "source": "sample",
                    "prompt": [{"role": "user", "content": prompt}] if chat else prompt,
                    "completion": [{"role": "assistant", "content": completion}] if chat else completion,
                }
            )
    return rows


@pytest.mark.parametrize("kind", ["cot", "mixture", "evolved", "eval_details"])
def test_other_dataset_cards_render(tmp_path, kind):
    folder = tmp_path / kind
    if kind == "mixture":
        save_dataset_config(
            folder, "sample-lema", {"train": _training_rows({"cot": 3, "correction": 2}, True)}
        )
        save_dataset_config(folder, "sample-cot", {"train": _training_rows({"cot": 3}, True)})
    elif kind == "cot":
        save_dataset_config(folder, "sample", {"train": _training_rows({"cot": 4}, False)})
    elif kind == "evolved":
        save_dataset_config(
            folder,
            "gsm8k",
            {"train": [dict(problem(i), problem_id=f"evolved/{i:08x}", source="evolved") for i in range(3)]},
        )
    else:
        rows = [
            dict(
                problem(i), model="tiny", completion="The answer is 1.", predicted_answer="1", correct=i == 0
            )
            for i in range(4)
        ]
        save_dataset_config(folder, "tiny-sample", {"test": rows})
    write_run_record(folder, {"output_dir": str(folder)}, {"rows": 1}, kind)
    write_dataset_card(folder, kind)
    card = DatasetCard.load(folder / "README.md")
    assert card.data.pretty_name and card.data.configs and PAPER_CITATION in card.text
    _images(card.text, folder)
    if kind == "mixture":
        assert "| `sample-lema` | 5 | 3 | 2 | conversational (messages) |" in card.text
        assert "[assistant]" in card.text
    if kind == "eval_details":
        assert "| `tiny-sample` | 4 | 25.0% |" in card.text and 'split="test"' in card.text
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


# ------------------------------------------------------------- corrections cards from stage-written folders
PRICE = {"input": 2.5, "output": 10.0}  # $ per million tokens
_SAMPLE = {p.question: p for p in load_sample("train")}


def _lema_responder(payload: dict) -> str:
    """A loopback LLM: a wrong CoT path for each problem; LeMa-format corrections from the corrector.

    The corrector named "broken-corrector" answers no correction at all (every row is rejected).
    """
    text = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
    if "Original Solution:" not in text:  # a CoT prompt: a wrong first step, a wrong answer
        p = _SAMPLE[text.split("Question: ", 1)[1].rsplit("\nAnswer:", 1)[0]]
        steps = formats.gold_steps(p)
        return " ".join([f"{steps[0]} Plus 1000.", f"The answer is {float(p.gold_answer) + 1000:g}."])
    if payload["model"] == "broken-corrector":
        return "I am not sure what is wrong here."
    block = text.rsplit("\n\nQuestion: ", 1)[1]
    p = _SAMPLE[block.split("\nOriginal Solution:", 1)[0]]
    steps = [s for _, s in formats.parse_rendered_steps(block.split("Original Solution:", 1)[1])]
    fix = reference_correction(p.to_dict(), steps)
    return formats.correction_target(fix.incorrect_step, fix.explanation, fix.corrected_steps)


@pytest.fixture(scope="module")
def lema_server():
    with FakeOpenAIServer(responder=_lema_responder) as srv:
        yield srv


@pytest.fixture(scope="module")
def collected(lema_server, tmp_path_factory) -> Path:
    """A mistakes folder written by `lema-hub collect` against the loopback server."""
    out = tmp_path_factory.mktemp("collect") / "lema-mistakes"
    collect(
        CollectConfig(
            problems="sample", problems_limit=4, output_dir=str(out), backend="openai", model="fake-model",
            base_urls=[lema_server.base_url], prompt_style="chat", num_samples=1, temperature=0.0,
            max_tokens=128, progress=False,
        )
    )  # fmt: skip
    assert load_rows(str(out), "sample")
    return out


def _correct(server, mistakes: Path, out: Path, model: str, **kw) -> dict:
    return correct(
        CorrectConfig(
            mistakes=str(mistakes), output_dir=str(out), backend="openai", model=model,
            base_urls=[server.base_url], prompt_style="chat", progress=False, **kw,
        )
    )  # fmt: skip


def test_corrections_card_shows_the_llm_corrector_tokens_and_cost(lema_server, collected, tmp_path):
    folder = tmp_path / "lema-corrections"
    summary = _correct(lema_server, collected, folder, "gpt-4o-fake", price_table={"gpt-4o-fake": PRICE})
    rows = load_rows(str(folder), "sample") + load_rows(str(folder), "sample-rejected", missing_ok=True)
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
    assert "The main configs (`sample`) hold the **accepted** corrections" in text
    _assert_clean(folder, tmp_path)


def test_corrections_card_when_nothing_was_accepted(lema_server, collected, tmp_path):
    folder = tmp_path / "lema-corrections"
    summary = _correct(lema_server, collected, folder, "broken-corrector")
    assert summary["accepted"] == 0 and summary["reject_reasons"] == {"parse_error": summary["n"]}
    text = (folder / "README.md").read_text()
    assert "(``)" not in text and "hold the **accepted** corrections" not in text
    assert "**No correction was accepted**" in text and "(`sample-rejected`)" in text
    assert f"| `sample` | `broken-corrector` | 0 | {summary['n']} | 0.0% |" in text
    assert f"| `broken-corrector` | {summary['n']} |" in text  # tokens are still counted
    _assert_clean(folder, tmp_path)
