"""Problem sources -> Problem rows, on small files built here (and the bundled sample)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lema_hub.problems import (
    Problem,
    ProblemArgs,
    ProblemSourceError,
    load_problems,
    load_sample,
    parse_shard,
    task_of,
)

GSM8K_ROWS = [
    {"question": "Ann has 3 pens and buys 2.  How many?", "answer": "3+2=<<3+2=5>>5\n#### 5"},
    {
        "question": "A box holds 1,000 nails; 250 are used.",
        "answer": "1000-250=<<1000-250=750>>750\n#### 750",
    },
    {"question": "Tom earns $1,200 a week for 2 weeks.", "answer": "1200*2=<<1200*2=2400>>2,400\n#### 2,400"},
]
MATH_ROWS = [
    {
        "problem": "Compute $\\frac{1}{2}+\\frac{1}{4}$.",
        "level": "Level 2",
        "type": "Prealgebra",
        "solution": "We get $\\frac{2}{4}+\\frac{1}{4}=\\boxed{\\frac{3}{4}}$.",
    },
    {
        "problem": "Find the set.",
        "level": "Level ?",
        "type": "Algebra",
        "solution": "It is $\\boxed{\\{1, \\{2\\}\\}}$.",
    },
]
MATH500_ROWS = [
    {
        "problem": "What is $2+2$?",
        "solution": "$2+2=\\boxed{4}$",
        "answer": "4",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/1.json",
    }
]


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_gsm8k_local_file(tmp_path):
    path = _jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS)
    probs = load_problems(ProblemArgs(problems="gsm8k", problems_path=path, problems_split="test"))
    assert [p.problem_id for p in probs] == ["gsm8k/test/0", "gsm8k/test/1", "gsm8k/test/2"]
    assert [p.gold_answer for p in probs] == ["5", "750", "2400"]  # thousands commas removed
    assert probs[0].source == "gsm8k" and probs[0].split == "test" and probs[0].level is None
    assert probs[0].gold_solution == GSM8K_ROWS[0]["answer"]  # the original text is kept
    assert task_of(probs[0]) == "gsm8k"


def test_math_local_file_ids_key_on_content(tmp_path):
    path = _jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    probs = load_problems(ProblemArgs(problems="math", problems_path=path, problems_split="test"))
    assert probs[0].gold_answer == "\\frac{3}{4}"
    assert probs[1].gold_answer == "\\{1, \\{2\\}\\}"  # nested and escaped braces
    assert (probs[0].level, probs[0].subject) == (2, "Prealgebra")
    assert probs[1].level is None
    assert all(p.problem_id.startswith("math/test/") for p in probs)
    # the Hub's subject configs order MATH differently: ids must not depend on the order
    rev = load_problems(
        ProblemArgs(
            problems="math",
            problems_path=_jsonl(tmp_path / "rev.jsonl", MATH_ROWS[::-1]),
            problems_split="test",
        )
    )
    assert {p.problem_id for p in rev} == {p.problem_id for p in probs}
    assert task_of(probs[0]) == "math"


def test_math500_local_file(tmp_path):
    path = _jsonl(tmp_path / "m500.jsonl", MATH500_ROWS)
    (p,) = load_problems(ProblemArgs(problems="math500", problems_path=path, problems_split="test"))
    assert p.problem_id == "math500/test/prealgebra/1"
    assert (p.gold_answer, p.level, p.subject, p.source) == ("4", 1, "Prealgebra", "math500")


def test_any_dataset_with_a_column_map(tmp_path):
    rows = [{"q": "What is 6*7?", "steps": "6*7=42", "final": 42}, {"q": "1+1?", "steps": "2", "final": 2}]
    # jsonl, json (list and {"data": [...]}) and parquet give the same problems
    paths = [_jsonl(tmp_path / "my_set.jsonl", rows)]
    (tmp_path / "my_set.json").write_text(json.dumps(rows))
    paths.append(str(tmp_path / "my_set.json"))
    (tmp_path / "wrapped").mkdir()
    (tmp_path / "wrapped" / "my_set.json").write_text(json.dumps({"data": rows}))
    paths.append(str(tmp_path / "wrapped" / "my_set.json"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "my_set.parquet")
    paths.append(str(tmp_path / "my_set.parquet"))
    loaded = []
    for path in paths:
        args = ProblemArgs(problems=path, question_column="q", solution_column="steps", answer_column="final")
        loaded.append(load_problems(args))
    for probs in loaded:
        assert [p.to_dict() for p in probs] == [p.to_dict() for p in loaded[0]]
    p = loaded[0][0]
    assert (p.problem_id, p.source, p.question, p.gold_solution, p.gold_answer) == (
        "my_set/train/0",
        "my_set",
        "What is 6*7?",
        "6*7=42",
        "42",
    )
    assert task_of(p) == "gsm8k"  # unknown source, numeric gold


def test_column_auto_detection_and_answer_from_solution(tmp_path):
    rows = [{"problem": "Q1", "solution": "so \\boxed{x+1}"}, {"problem": "Q2", "solution": "ok\n#### 1,500"}]
    probs = load_problems(ProblemArgs(problems=_jsonl(tmp_path / "auto.jsonl", rows)))
    assert [p.gold_answer for p in probs] == ["x+1", "1500"]
    assert task_of(probs[0]) == "math"


@pytest.mark.parametrize(
    "rows, args, match",
    [
        ([{"question": "q", "answer": "no hashes"}], {"problems": "gsm8k"}, "####"),
        ([{"question": "q"}], {"problems": "gsm8k"}, "missing field"),
        ([{"problem": "q", "solution": "no box"}], {"problems": "math"}, "boxed"),
        ([{"text": "q"}], {}, "no question column"),
        ([{"question": "q", "solution": "s"}], {"question_column": "nope"}, "column 'nope' not found"),
        ([{"question": "q", "solution": "no answer"}], {}, "no gold answer"),
    ],
)
def test_bad_sources_name_the_problem(tmp_path, rows, args, match):
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    a = {"problems": path, **args}
    if a["problems"] in ("gsm8k", "math"):
        a["problems_path"] = path
    with pytest.raises(ProblemSourceError, match=match):
        load_problems(ProblemArgs(**a))


def test_bad_files(tmp_path):
    with pytest.raises(ProblemSourceError, match="does not exist"):
        load_problems(ProblemArgs(problems="gsm8k", problems_path=str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"question": "q", "answer": "1\\n#### 1"}\n{oops\n')
    with pytest.raises(ProblemSourceError, match="line 2"):
        load_problems(ProblemArgs(problems="gsm8k", problems_path=str(bad)))
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n")
    with pytest.raises(ProblemSourceError, match="unsupported"):
        load_problems(ProblemArgs(problems=str(csv)))


def test_hub_source_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ProblemSourceError, match="problems_path"):
        load_problems(ProblemArgs(problems="math500", problems_split="test"))


def test_limit_and_shards(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"{i}\n#### {i}"} for i in range(10)]
    path = _jsonl(tmp_path / "g.jsonl", rows)
    full = load_problems(ProblemArgs(problems="gsm8k", problems_path=path, problems_limit=7))
    assert len(full) == 7
    shards = [
        load_problems(ProblemArgs(problems="gsm8k", problems_path=path, problems_limit=7, shard=f"{i}/3"))
        for i in range(3)
    ]
    ids = [p.problem_id for s in shards for p in s]
    assert sorted(ids) == sorted(p.problem_id for p in full) and len(ids) == len(set(ids))
    again = load_problems(ProblemArgs(problems="gsm8k", problems_path=path, problems_limit=7, shard="1/3"))
    assert again == shards[1]
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="problems_limit"):
        load_problems(ProblemArgs(problems="gsm8k", problems_path=path, problems_limit=-1))


def test_problem_dict_round_trip_ignores_extra_keys():
    p = Problem("gsm8k/train/1", "gsm8k", "train", "q", "s\n#### 1", "1", None, None)
    d = p.to_dict() | {"completion": "x", "verdict": "wrong"}
    assert Problem.from_dict(d) == p
    with pytest.raises(ValueError, match="missing"):
        Problem.from_dict({"question": "q"})


def test_task_of_sources():
    assert [task_of(s) for s in ("gsm8k", "sample", "math", "math500", "my-gsm8k-variant")] == [
        "gsm8k",
        "gsm8k",
        "math",
        "math",
        "gsm8k",
    ]
    assert task_of({"source": "custom", "gold_answer": "\\frac{1}{2}"}) == "math"
    assert task_of({"source": "custom", "gold_answer": "1,200"}) == "gsm8k"


def test_bundled_sample():
    train, test = load_sample("train"), load_sample("test")
    assert len(train) + len(test) >= 40 and train and test
    assert {p.source for p in train + test} == {"sample"}
    assert train[0].problem_id == "sample/train/0" and test[0].problem_id == "sample/test/0"
    assert not {p.question for p in train} & {p.question for p in test}  # held out
    assert load_problems(ProblemArgs()) == train  # the default source
    assert load_problems(ProblemArgs(problems_split="test")) == test
    with pytest.raises(ProblemSourceError, match="split"):
        load_sample("validation")


def test_rows_that_are_already_problems_keep_their_ids(tmp_path):
    from lema_hub import artifacts
    from lema_hub.problems import ProblemArgs, load_problems

    row = {
        "problem_id": "evolved/abc123",
        "source": "evolved",
        "split": "train",
        "question": "What is 2+3?",
        "gold_solution": "2+3=<<2+3=5>>5\n#### 5",
        "gold_answer": "5",
        "level": None,
        "subject": None,
    }
    artifacts.save_dataset_config(tmp_path / "evolved", "sample", {"train": [row]})
    (p,) = load_problems(ProblemArgs(problems=str(tmp_path / "evolved"), problems_subset="sample"))
    assert (p.problem_id, p.source, p.gold_answer) == ("evolved/abc123", "evolved", "5")
