"""Checks on the real data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from lema_hub.formats import corrector_query, cot_prompt, cot_target, gold_steps, gsm8k_rationale
from lema_hub.grading import grade, grade_many
from lema_hub.problems import ProblemArgs, load_problems

pytestmark = pytest.mark.shared_data


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _gsm8k(shared: Path, split: str):
    return load_problems(
        ProblemArgs(
            problems="gsm8k", problems_path=str(shared / "gsm8k" / f"{split}.jsonl"), problems_split=split
        )
    )


def test_reformatted_gsm8k_test_equals_the_papers_file(shared_data):
    paper = _rows(shared_data / "lema" / "test_data" / "gsm8k_test.jsonl")
    probs = _gsm8k(shared_data, "test")
    assert len(paper) == len(probs) == 1319
    completions = sum(
        cot_target(*gsm8k_rationale(p.gold_solution)) == r["completion"] for p, r in zip(probs, paper)
    )
    prompts = sum(cot_prompt(p.question) == r["prompt"] for p, r in zip(probs, paper))
    steps = sum(" ".join(gold_steps(p)) == r["completion"] for p, r in zip(probs, paper))
    assert (completions, prompts, steps) == (1319, 1319, 1319)


def test_papers_gold_completions_grade_correct(shared_data):
    paper = _rows(shared_data / "lema" / "test_data" / "gsm8k_test.jsonl")
    probs = _gsm8k(shared_data, "test")
    verdicts = [grade(r["completion"], p.gold_answer, "gsm8k") for p, r in zip(probs, paper)]
    assert Counter(v.verdict for v in verdicts) == Counter(correct=1319)
    # the gold solution itself works as the gold too
    assert all(grade(r["completion"], p.gold_solution).verdict == "correct" for p, r in zip(probs, paper))


@pytest.mark.parametrize("split, n", [("train", 7473), ("test", 1319)])
def test_reformatted_gsm8k_golds_grade_correct(shared_data, split, n):
    probs = _gsm8k(shared_data, split)
    assert len(probs) == n and len({p.problem_id for p in probs}) == n
    targets = [cot_target(*gsm8k_rationale(p.gold_solution)) for p in probs]
    verdicts = grade_many(targets, [p.gold_answer for p in probs], "gsm8k")
    assert Counter(v.verdict for v in verdicts) == Counter(correct=n)


def test_math500_solutions_grade_correct_against_answers(shared_data):
    probs = load_problems(
        ProblemArgs(
            problems="math500",
            problems_path=str(shared_data / "math" / "math500_test.jsonl"),
            problems_split="test",
        )
    )
    assert len(probs) == 500 and len({p.problem_id for p in probs}) == 500
    verdicts = grade_many([p.gold_solution for p in probs], [p.gold_answer for p in probs], "math", workers=2)
    bad = [(p.problem_id, p.gold_answer, v.reason) for p, v in zip(probs, verdicts) if v.verdict != "correct"]
    assert bad == []


@pytest.mark.slow
def test_every_math_test_solution_grades_correct_against_its_box(shared_data):
    probs = load_problems(
        ProblemArgs(
            problems="math", problems_path=str(shared_data / "math" / "test.jsonl"), problems_split="test"
        )
    )
    assert len(probs) == 5000 and len({p.problem_id for p in probs}) == 5000
    assert all(p.gold_answer for p in probs)
    verdicts = grade_many([p.gold_solution for p in probs], [p.gold_answer for p in probs], "math", workers=2)
    bad = [(p.problem_id, p.gold_answer, v.reason) for p, v in zip(probs, verdicts) if v.verdict != "correct"]
    assert bad == []


@pytest.mark.parametrize("task", ["gsm8k", "math"])
def test_corrector_query_matches_the_papers_demonstrations(shared_data, task):
    text = (shared_data / "lema" / "prompts" / f"prompt_correction_{task}.txt").read_text(encoding="utf-8")
    text = text.replace("\r\n", "\n")
    blocks = text.split("\n\nQuestion: ")[1:]
    assert len(blocks) == 4
    for block in blocks:
        block = "Question: " + block
        question, rest = block[len("Question: ") :].split("\nOriginal Solution:\n{\n", 1)
        solution = rest.split("\n}\nIncorrect Step:", 1)[0]
        steps = [re.sub(r"^Step \d+: ", "", line) for line in solution.split("\n")]
        query = corrector_query(question, steps)
        assert block.startswith(query)
