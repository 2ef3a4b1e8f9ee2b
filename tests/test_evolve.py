"""Correction-centric evolution through a loopback OpenAI-compatible endpoint."""

from __future__ import annotations

import re

import pytest

from lema_hub import formats
from lema_hub.artifacts import load_rows, save_dataset_config
from lema_hub.evolve import EvolveConfig, evolution_prompt, evolve, majority, parse_new_question
from lema_hub.problems import ProblemArgs, load_problems, load_sample
from tests.fake_openai_server import FakeOpenAIServer

SAMPLE = load_sample("train")
SEED_INDEX = {p.question: i for i, p in enumerate(SAMPLE)}


def _text(payload: dict) -> str:
    return payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]


def responder(payload: dict) -> str:
    """Seed i mod 4: 0 -> a good new question (3 equal answers), 1 -> a question whose 3 answers all
    differ, 2 -> the seed itself, 3 -> nothing."""
    text = _text(payload)
    if "Seed Problem:" in text:
        seed = text.split("Seed Problem: ", 1)[1].split("\nNew Problem:", 1)[0]
        i = SEED_INDEX[seed]
        if i % 4 == 0:
            return f" Priya packs {i + 3} boxes with 6 pens in each box. How many pens does she pack?\n\nAnswer: ..."
        if i % 4 == 1:
            return f"New Problem: Omar fills {i + 2} jars with marbles. How many marbles are there?"
        if i % 4 == 2:
            return seed
        return "   "
    question = text.split("Question: ", 1)[1].split("\nAnswer:", 1)[0]
    n = int(re.search(r"\d+", question).group(0))
    if "boxes" in question:
        return f"She packs {n} * 6 = {n * 6} pens. The answer is {n * 6}."
    return f"There are {n} * {payload.get('seed', 0)} marbles. The answer is {n * 1000 + (payload.get('seed') or 0)}."


def _corrections_folder(tmp_path):
    rows = [{**p.to_dict(), "accepted": True, "corrector": "reference"} for p in SAMPLE[:8]]
    save_dataset_config(tmp_path / "corr-evo", "sample", {"train": rows})
    return str(tmp_path / "corr-evo")


@pytest.mark.parametrize("strategy", ["correction_centric", "general"])
def test_evolve_majority_vote_and_drop_reasons(tmp_path, strategy):
    out = tmp_path / f"lema-evolved-{strategy}"
    with FakeOpenAIServer(responder=responder) as srv:
        summary = evolve(
            EvolveConfig(
                strategy=strategy,
                corrections=_corrections_folder(tmp_path),
                problems="sample",
                problems_limit=8,
                num_seeds=24,
                seed=1,
                backend="openai",
                model="fake-model",
                base_urls=[srv.base_url],
                prompt_style="chat",
                output_dir=str(out),
                progress=False,
            )
        )
    dropped = summary["dropped"]
    assert summary["seeds"] == 24 == summary["kept"] + sum(dropped.values())
    assert set(dropped) <= {"same_as_seed", "empty_question", "duplicate", "no_majority"}
    assert dropped["no_majority"] >= 1 and dropped["same_as_seed"] >= 1 and dropped["empty_question"] >= 1
    rows = load_rows(str(out), "sample")
    assert len(rows) == summary["kept"] >= 1
    for r in rows:
        n = int(re.search(r"\d+", r["question"]).group(0))
        assert "boxes" in r["question"] and r["gold_answer"] == str(n * 6) and r["votes"] == 3
        assert r["source"] == "evolved" and r["problem_id"].startswith("evolved/")
        assert r["parent_problem_id"].startswith("sample/train/") and r["evolution_strategy"] == strategy
        assert r["gold_solution"].endswith(f"#### {n * 6}")
    # Evolved problems flow back into collection: load_problems reads the folder.
    problems = load_problems(ProblemArgs(problems=str(out), problems_subset="sample"))
    assert [p.question for p in problems] == [r["question"] for r in rows]
    assert [formats.gold_steps(p)[-1] for p in problems] == [
        f"The answer is {r['gold_answer']}." for r in rows
    ]


def test_majority_and_parsing():
    assert majority(["18", "18.0", "$18"]) == ("18", 3)
    assert majority(["18", "18", "7"]) == ("18", 2)
    assert majority(["1", "2", "3"]) == (None, 1)
    assert majority([None, None, "3"]) == (None, 1)
    assert majority([None, None, None]) == (None, 0)
    assert parse_new_question(
        "**New Problem:** A cat eats 3 fish a day. How many in 4 days?\n\nAnswer: 12"
    ) == ("A cat eats 3 fish a day. How many in 4 days?")
    assert parse_new_question("  \n ") is None
    assert "{question}" in evolution_prompt()


def test_evolve_config_errors(tmp_path):
    with pytest.raises(ValueError, match="corrections"):
        EvolveConfig(strategy="correction_centric")
    with pytest.raises(ValueError, match="strategy"):
        EvolveConfig(strategy="random", corrections="x")
    with pytest.raises(ValueError, match="num_answers"):
        EvolveConfig(corrections="x", num_answers=1)
    bad = tmp_path / "p.txt"
    bad.write_text("no placeholder")
    with pytest.raises(ValueError, match="placeholder"):
        evolution_prompt(str(bad))


@pytest.mark.parametrize("strategy", ["correction_centric", "general"])
def test_evolve_refuses_multiple_choice_seeds(tmp_path, strategy):
    """CSQA seeds would be grown with the math evolution prompt and voted on as numbers: refused up front."""
    from lema_hub.errors import InvalidInputError

    csqa = load_problems(ProblemArgs(problems="csqa_sample", problems_split="train"))
    if strategy == "correction_centric":
        rows = [{**p.to_dict(), "accepted": True, "corrector": "x"} for p in csqa[:3]]
        save_dataset_config(tmp_path / "corr-csqa", "csqa_sample", {"train": rows})
        cfg = EvolveConfig(corrections=str(tmp_path / "corr-csqa"), output_dir=str(tmp_path / "out"))
    else:
        cfg = EvolveConfig(
            strategy="general",
            problems="csqa_sample",
            problems_split="train",
            output_dir=str(tmp_path / "out"),
        )
    with pytest.raises(InvalidInputError, match="multiple-choice"):
        evolve(cfg)
    assert not (tmp_path / "out").exists()
