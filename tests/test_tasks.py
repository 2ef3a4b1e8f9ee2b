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

from lema_hub.evaluate import EvalConfig, apply_answer_rounding, evaluate
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


# ------------------------------------------------------------- training lengths (source/target cut)


def test_prompt_and_completion_are_cut_separately(tiny_model):
    import datasets

    from lema_hub.models import load_tokenizer
    from lema_hub.sft import truncate_prompt_completion

    tok = load_tokenizer(tiny_model)
    bos = len(tok("", add_special_tokens=True)["input_ids"])
    long_q = "Question: " + " ".join(f"apple{i}" for i in range(60))
    long_a = "Step: " + " ".join(f"pear{i}" for i in range(60)) + " The answer is 5."
    rows = [
        {"prompt": long_q, "completion": "The answer is 5."},  # only the prompt is long
        {"prompt": "Short?", "completion": long_a},  # only the completion is long
        {
            "prompt": [{"role": "user", "content": long_q}],
            "completion": [{"role": "assistant", "content": long_a}],
        },
    ]

    def ntok(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    plain = truncate_prompt_completion(datasets.Dataset.from_list(rows[:2]), tok, 20, 12).to_list()
    assert ntok(plain[0]["prompt"]) == 20 - bos and long_q.startswith(plain[0]["prompt"])  # the start is kept
    assert plain[0]["completion"] == "The answer is 5."  # short parts are untouched
    assert plain[1]["prompt"] == "Short?"
    assert ntok(plain[1]["completion"]) == 11 and long_a.startswith(plain[1]["completion"])  # + EOS = 12
    chat = truncate_prompt_completion(datasets.Dataset.from_list(rows[2:]), tok, 20, 12).to_list()[0]
    assert chat["prompt"][0]["role"] == "user" and ntok(chat["prompt"][0]["content"]) == 20 - bos
    assert ntok(chat["completion"][0]["content"]) == 11
    unchanged = truncate_prompt_completion(datasets.Dataset.from_list(rows[:2]), tok, None, None)
    assert unchanged.to_list() == rows[:2]


def test_sft_trainer_sees_the_separately_cut_rows(tmp_path, tiny_model):
    """Through `build_trainer`: every tokenized row keeps <= 24 prompt and <= 10 completion tokens."""
    from lema_hub.sft import build_trainer
    from tests.test_sft import _parse, make_mixture, tiny_config

    mixture = make_mixture(tmp_path / "mixture", style="plain")
    config = tiny_config(
        tmp_path / "c.yaml",
        mixture,
        tmp_path / "out",
        prompt_style="plain",
        max_prompt_length=24,
        max_completion_length=10,
    )
    trainer, _ = build_trainer(*_parse(config))
    tok = trainer.processing_class
    for row in trainer.train_dataset:
        trained = [label != -100 for label in row["labels"]]
        n_completion = sum(trained)
        assert n_completion <= 10 and row["input_ids"][-1] == tok.eos_token_id  # EOS kept
        assert len(row["input_ids"]) - n_completion <= 24
    # The rows were longer than the budgets: they were really cut, not just short.
    assert any(len(r["input_ids"]) == 34 for r in trainer.train_dataset)


def test_bad_truncation_lengths_fail_clearly():
    from lema_hub.sft import SFTScriptArguments

    with pytest.raises(ValueError, match="max_prompt_length must be >= 2 tokens"):
        SFTScriptArguments(dataset_name="x", max_prompt_length=0)


# ------------------------------------------------------------------------------------------- CSQA

CSQA_HUB_ROWS = [
    {
        "id": "075e483d21c29a511267ef62bedc0461",
        "question": "The sanctions against the school were a punishing blow, and they seemed to what the efforts the school had made to change?",
        "question_concept": "punishing",
        "choices": {
            "label": ["A", "B", "C", "D", "E"],
            "text": ["ignore", "enforce", "authoritarian", "yell at", "avoid"],
        },
        "answerKey": "A",
    }
]


def test_csqa_prompt_and_hub_rows():
    from lema_hub.csqa import csqa_prompt, hub_items, parse_csqa_prompt

    (item,) = hub_items(CSQA_HUB_ROWS, "validation")
    assert item.answer == "ignore" and item.candidates[3] == "yell at"
    prompt = csqa_prompt(item.question, item.candidates)
    assert prompt == (
        "Please answer the following commonsense question. Please first explain each candidate answer, then "
        "select only one answer that is most relevant to the question and provide reasons.\n"
        f"Question: {item.question}\n"
        "Candidate Answers: ignore, enforce, authoritarian, yell at, avoid.\n"
        "Answer: Let's think step by step.\n"
    )
    assert parse_csqa_prompt(prompt) == (item.question, item.candidates)
    with pytest.raises(ValueError, match="answerKey"):
        hub_items([{**CSQA_HUB_ROWS[0], "answerKey": "F"}], "validation")


def test_csqa_grading_maps_to_the_nearest_candidate_and_counts_it():
    """The paper's rule (`choice_mapping: paper`) through the grader every stage uses, and the
    mapping counts evaluate reports."""
    from lema_hub.csqa import edit_distance
    from lema_hub.evaluate import mapping_counts
    from lema_hub.grading import grade_choice

    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3
    cands = ["bank", "library", "department store", "mall", "new york"]

    def grade(text: str, gold: str):
        return grade_choice(text, gold, cands, "paper")

    exact = grade('Banks keep money safe. The answer is "Bank".', "bank")
    assert exact.verdict == "correct" and not exact.mapping_needed
    typo = grade("The answer is departmen store.", "department store")
    assert typo.mapped_answer == "department store" and typo.mapping_needed and typo.verdict == "correct"
    other = grade("The answer is a shopping mall.", "bank")
    assert other.mapped_answer == "mall" and other.verdict == "wrong"
    none = grade("I cannot decide.", "bank")
    assert none.predicted_answer is None and none.verdict == "no_answer"
    counts = mapping_counts([v.to_dict() for v in (exact, typo, other, none)], "paper")
    assert (counts["answered"], counts["mapping_needed"]) == (3, 2)
    assert counts["mapping_rate"] == pytest.approx(2 / 3)
    assert counts["by_kind"]["exact"] == 1 and counts["by_kind"]["edit_distance"] == 2


@pytest.mark.shared_data
def test_csqa_paper_file_prompts_rebuild_byte_for_byte(shared_data):
    """All 1,221 prompts of the paper's CSQA dev file rebuild from (question, candidates); the gold
    answers as completions grade 100 % with no mapping needed."""
    from lema_hub.csqa import csqa_prompt, paper_items
    from lema_hub.grading import grade_choice

    path = shared_data / "lema" / "test_data" / "csqa_dev.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = paper_items(rows)
    assert len(items) == 1221
    assert sum(csqa_prompt(it.question, it.candidates) == r["prompt"] for it, r in zip(items, rows)) == 1221
    verdicts = [
        grade_choice(f"The answer is {it.answer}.", it.answer, it.candidates, "paper") for it in items
    ]
    assert all(v.verdict == "correct" and not v.mapping_needed for v in verdicts)
