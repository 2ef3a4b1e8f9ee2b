"""Evaluation-only tasks (SVAMP, ASDiv): loaders, the paper's rounding option, and evaluation end to end.

Small rows written here cover the code; the real files in ../shared/data check the paper's counts.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from lema_hub.evaluation import EvalConfig, apply_answer_rounding, evaluate
from lema_hub.problems import ProblemArgs, ProblemSourceError, load_problems, load_report, task_of

SVAMP_ROWS = [
    {
        "ID": "chal-1",
        "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
        "Question": "How much do you have to pay to buy each pack?",
        "Equation": "( 76.0 - 25.0 )",
        "Answer": 51.0,
        "Type": "Subtraction",
    },
    {
        "ID": "chal-2",
        "Body": "A pizza is cut into 3 equal slices. Tom eats 1 slice.",
        "Question": " What fraction of the pizza is left? ",
        "Equation": "( 2.0 / 3.0 )",
        "Answer": 0.6666666666666666,
        "Type": "Common-Divison",
    },
]
ASDIV_ROWS = [
    {"id": "nluds-0001", "body": "Seven red apples and two green apples are in the basket.",
     "question": "How many apples are in the basket? ", "solution_type": "Addition",
     "answer": "9 (apples)", "formula": "7+2=9", "grade": 1},
    {"id": "nluds-0002", "body": "A pen costs 1.35 dollars.", "question": "How much do 2 pens cost?",
     "solution_type": "Multiplication", "answer": "2.7 (dollars)", "formula": "1.35*2=2.7", "grade": 3},
    {"id": "nluds-0003", "body": "Ann is 5. Bob is 7.", "question": "Who is older?",
     "solution_type": "Comparison", "answer": "Bob", "formula": "", "grade": 2},
    {"id": "nluds-0004", "body": "Red: 3, blue: 4.", "question": "What is the ratio?",
     "solution_type": "Ratio", "answer": "3:4", "formula": "3:4", "grade": 4},
    {"id": "nluds-0005", "body": "The sum is 48 and one is 3 times the other.", "question": "Find both.",
     "solution_type": "Set-Equation", "answer": "36 (years old); 12 (years old)", "formula": "", "grade": 6},
]  # fmt: skip


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ------------------------------------------------------------------------------------------ loaders


def test_svamp_loader_joins_body_and_question(tmp_path):
    path = _jsonl(tmp_path / "svamp.jsonl", SVAMP_ROWS)
    probs = load_problems(ProblemArgs(problems="svamp", problems_path=path, problems_split="test"))
    assert [p.problem_id for p in probs] == ["svamp/chal-1", "svamp/chal-2"]
    # One space, no punctuation added where the Body ends mid-sentence; the Question is stripped.
    assert probs[0].question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert probs[1].question.endswith("Tom eats 1 slice. What fraction of the pizza is left?")
    assert [p.gold_answer for p in probs] == ["51", "0.6666666666666666"]  # 51.0 -> "51"
    assert probs[1].subject == "Common-Division"  # the original file's typo is fixed
    assert probs[0].gold_solution == "( 76.0 - 25.0 )"
    assert all(task_of(p) == "gsm8k" for p in probs)
    # The Hub id names the same loader (with a local copy: same ids).
    hub_named = load_problems(
        ProblemArgs(problems="ChilleD/SVAMP", problems_path=path, problems_split="test")
    )
    assert [p.to_dict() for p in hub_named] == [p.to_dict() for p in probs]


def test_svamp_loader_names_a_bad_row(tmp_path):
    rows = [dict(SVAMP_ROWS[0]), {**SVAMP_ROWS[1], "Answer": "many"}]
    path = _jsonl(tmp_path / "svamp.jsonl", rows)
    with pytest.raises(ProblemSourceError, match=r"svamp/test row 1: Answer 'many' is not a number"):
        load_problems(ProblemArgs(problems="svamp", problems_path=path, problems_split="test"))
    path = _jsonl(tmp_path / "bad.jsonl", [{"Body": "x", "Answer": 1}])
    with pytest.raises(ProblemSourceError, match=r"missing field\(s\) \['Question'\]"):
        load_problems(ProblemArgs(problems="svamp", problems_path=path, problems_split="test"))


def test_asdiv_loader_keeps_numeric_answers_and_counts_the_rest(tmp_path, caplog):
    path = _jsonl(tmp_path / "asdiv.jsonl", ASDIV_ROWS)
    with caplog.at_level(logging.WARNING, logger="lema_hub.problems"):
        probs = load_problems(ProblemArgs(problems="asdiv", problems_path=path, problems_split="test"))
    assert [p.problem_id for p in probs] == ["asdiv/nluds-0001", "asdiv/nluds-0002"]
    assert [p.gold_answer for p in probs] == ["9", "2.7"]  # "9 (apples)" -> "9"
    assert probs[0].question == (
        "Seven red apples and two green apples are in the basket. How many apples are in the basket?"
    )
    assert (probs[1].level, probs[1].subject) == (3, "Multiplication")
    report = load_report("asdiv")
    assert (report["rows"], report["kept"], report["dropped_non_numeric"]) == (5, 2, 3)
    assert "dropped 3 of 5 rows" in caplog.text


# ------------------------------------------------------------------------------------------ grading


def _row(pred: str | None, gold: str, verdict: str = "wrong", source: str = "svamp") -> dict:
    return {"source": source, "gold_answer": gold, "predicted_answer": pred, "verdict": verdict}


def test_answer_rounding_is_the_papers_two_decimals():
    rows = [
        _row("0.67", "0.6666666666666666"),  # equal at 2 decimals
        _row("0.66", "0.6666666666666666"),  # 0.66 != 0.67
        _row("3.333", "3.33"),
        _row("7", "7", verdict="correct"),
        _row(None, "5"),
        _row("\\frac{1}{2}", "0.5", source="math"),  # MATH rows are left to math-verify
    ]
    assert apply_answer_rounding(rows, 2) == 2
    assert [r["verdict"] for r in rows] == ["correct", "wrong", "correct", "correct", "wrong", "wrong"]
    assert rows[0]["grade_reason"] == "equal after rounding to 2 decimals"


def _owned_model(tmp_path: Path, name: str) -> Path:
    from lema_hub.models import resolve_model

    folder = tmp_path / name
    shutil.copytree(resolve_model("tiny:smollm2"), folder)
    return folder


def test_svamp_evaluation_records_rounding_in_results_and_card(tmp_path, tiny_model):
    data = _jsonl(tmp_path / "svamp.jsonl", SVAMP_ROWS)
    preds = _jsonl(
        tmp_path / "preds.jsonl",
        [
            {"problem_id": "svamp/chal-1", "completion": "76 - 25 = 51. The answer is 51."},
            {"problem_id": "svamp/chal-2", "completion": "2 of 3 slices. The answer is 0.67."},
        ],
    )
    folder = _owned_model(tmp_path, "lema-tiny")
    common = dict(models=[str(folder)], problems="svamp", problems_path=data, predictions_path=preds)
    exact = evaluate(EvalConfig(**common, output_dir=str(tmp_path / "exact"), update_model_card=False))
    res = exact["results"]["lema-tiny-svamp"]
    assert res["accuracy"] == 0.5 and res["protocol"]["answer_rounding"] is None
    assert res["benchmark"] == "svamp" and res["benchmark_dataset"] == "ChilleD/SVAMP"

    rounded = evaluate(EvalConfig(**common, answer_rounding=2, output_dir=str(tmp_path / "rounded")))
    res = rounded["results"]["lema-tiny-svamp"]
    assert res["accuracy"] == 1.0 and res["protocol"]["answer_rounding"] == 2
    saved = json.loads((tmp_path / "rounded" / "results.json").read_text())["lema-tiny-svamp"]
    assert saved["protocol"]["answer_rounding"] == 2
    card = yaml.safe_load((folder / ".eval_results" / "svamp.yaml").read_text())
    entry = card[0] if isinstance(card, list) else card.get("results", [card])[0]
    assert "rounding to 2 decimals" in json.dumps(entry)
    assert "rounding to 2 decimals" in (folder / "README.md").read_text()


def test_bad_answer_rounding_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="answer_rounding must be"):
        evaluate(EvalConfig(output_dir=str(tmp_path), answer_rounding=-1))


# ------------------------------------------------------------------------------------ real files


@pytest.mark.shared_data
def test_real_svamp_file_has_the_papers_1000(shared_data):
    probs = load_problems(
        ProblemArgs(
            problems="svamp", problems_split="test", problems_path=str(shared_data / "svamp/test.jsonl")
        )
    )
    assert len(probs) == 1000 and len({p.problem_id for p in probs}) == 1000
    assert {p.subject for p in probs} == {"Subtraction", "Addition", "Common-Division", "Multiplication"}
    assert all("  " not in p.question and p.question == p.question.strip() for p in probs)


@pytest.mark.shared_data
def test_real_asdiv_file_gold_answers_grade_100_percent(shared_data, tmp_path):
    """The raw ASDiv answers (`9 (apples)`) as completions: all 2,084 kept problems correct, 221 dropped."""
    path = shared_data / "asdiv" / "test.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    preds = _jsonl(
        tmp_path / "preds.jsonl",
        [{"problem_id": f"asdiv/{r['id']}", "completion": f"The answer is {r['answer']}."} for r in raw],
    )
    summary = evaluate(
        EvalConfig(
            models=["gold"],
            problems="asdiv",
            problems_path=str(path),
            predictions_path=preds,
            answer_rounding=2,
            output_dir=str(tmp_path / "eval"),
        )
    )
    res = summary["results"]["gold-asdiv"]
    assert res["num_problems"] == 2084 and res["accuracy"] == 1.0
    assert res["source_filter"]["dropped_non_numeric"] == 221 and res["source_filter"]["rows"] == 2305
    assert res["benchmark_dataset"] == "EleutherAI/asdiv"
