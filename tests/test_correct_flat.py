"""`correct` with memory flat in the number of mistakes: features inferred a batch at a time, the
summary added up a batch at a time, and the Python heap peak of real runs (reference corrector, an
LLM corrector over HTTP) against their number of mistakes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from lema_hub import correct as correct_stage
from lema_hub.artifacts import load_rows, save_dataset_config, stream_rows
from lema_hub.correct import CorrectConfig, correct
from lema_hub.formats import correction_target
from lema_hub.problems import load_sample, task_of
from tests.test_correct import _perturbed_paths

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------- features
def _whole_table_features(rows: list[dict]):
    """What `Dataset.from_list(rows)` infers, column by column over every row at once (the spec)."""
    from datasets import Features

    columns = list(rows[0]) if rows else []
    return Features.from_arrow_schema(
        pa.schema([pa.field(k, pa.array([r.get(k) for r in rows]).type) for k in columns])
    )


def _awkward_rows(n: int, seed: int) -> list[dict]:
    """Columns that are null, empty or typed in runs: whole batches see only one of them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        late = i >= n - 3  # typed only in the last rows
        rows.append(
            {
                "always_null": None,
                "late_int": i if late else None,
                "late_float_after_ints": (1.5 if i == n - 1 else 2) if late else None,
                "empty_then_ints": [i, i + 1] if late else [],
                "nested_lists": [[]] if not late else [[None], [float(i)]],
                "late_struct_field": {"a": None, "b": "x"} if not late else {"a": [i], "b": None},
                "struct_fields_appear": {"first": i} if i < n // 2 else {"second": str(i), "first": None},
                "list_of_structs": [] if not late else [{"k": None}, {"k": i, "extra": [True]}],
                "sparse_str": str(i) if rng.random() < 0.05 else None,
                "text": "words " * rng.randrange(3),
            }
        )
    return rows


@pytest.mark.parametrize("size", [1, 2, 7, 64])
def test_features_a_batch_at_a_time_are_the_whole_tables(size):
    rows = _awkward_rows(40, seed=size)
    table = pa.Table.from_pylist(rows)
    batches = (table.slice(lo, size) for lo in range(0, len(rows), size))
    got = correct_stage.stream_features(batches, table.column_names)
    want = _whole_table_features(rows)
    assert got == want
    assert str(got["always_null"].dtype) == "null" and got["late_float_after_ints"].dtype == "float64"
    assert list(got) == list(want)  # the column order too


def test_features_of_a_folder_streamed_in_row_groups_and_of_no_rows(tmp_path):
    rows = _awkward_rows(30, seed=0)
    save_dataset_config(tmp_path, "x", {"train": rows})
    stream = stream_rows(str(tmp_path), "x")
    assert correct_stage.stream_features(stream.batches(4), stream.schema.names) == _whole_table_features(
        rows
    )
    # An empty slice (a shard with no mistakes) has every column null, as a table of no rows does.
    empty = stream.slice(5, 5)
    got = correct_stage.stream_features(empty.batches(4), empty.schema.names)
    assert {str(f.dtype) for f in got.values()} == {"null"} and list(got) == list(rows[0])
    # A column some batches lack (a merge's shard) is null there.
    tables = [pa.Table.from_pylist([{"a": None}]), pa.Table.from_pylist([{"a": 1, "b": "x"}])]
    got = correct_stage.stream_features(iter(tables), ["a", "b"])
    assert (got["a"].dtype, got["b"].dtype) == ("int64", "string")


# -------------------------------------------------------------------------------------- summary
def _summary_of_all_rows(rows: list[dict]) -> dict:
    """The summary by its definition, over the whole list at once (the spec `summarize` keeps)."""

    def rate(rs):
        acc = sum(r["accepted"] for r in rs)
        return {"n": len(rs), "accepted": acc, "acceptance_rate": round(acc / len(rs), 4) if rs else None}

    def by(key):
        groups = defaultdict(list)
        for r in rows:
            if key(r) is not None:
                groups[str(key(r))].append(r)
        return {k: rate(v) for k, v in sorted(groups.items())}

    def bucket(r):
        k = r.get("incorrect_step")
        if task_of(r) == "csqa":
            return None
        if k is None:
            return "unparsed"
        n = r["n_steps"] if "n_steps" in r else len(r.get("steps") or [])
        return "final" if k == n else ("first" if k == 1 else "middle")

    both = [r for r in rows if r.get("reference_step") is not None and r.get("incorrect_step") is not None]
    agree = sum(r["reference_step"] == r["incorrect_step"] for r in both)
    return {
        **rate(rows),
        "rejected": sum(not r["accepted"] for r in rows),
        "mistakes": len({(r.get("problem_id"), r.get("generator"), r.get("sample_index")) for r in rows}),
        "reject_reasons": dict(Counter(r["reject_reason"] for r in rows if not r["accepted"]).most_common()),
        "by_generator": by(lambda r: r.get("generator")),
        "by_level": by(lambda r: r.get("level")),
        "by_subject": by(lambda r: r.get("subject")),
        "by_step_position": by(bucket),
        "by_incorrect_step": by(lambda r: r.get("incorrect_step")),
        "reference_agreement": {
            "n": len(both),
            "agree": agree,
            "rate": round(agree / len(both), 4) if both else None,
            "applies": sum(r.get("reference_step") is not None for r in rows),
        },
    }


def _graded_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    reasons = ["wrong_answer", "no_answer", "unparsed", "false_claim"]
    rows = []
    for _ in range(n):
        accepted = rng.random() < 0.6
        steps = ["s"] * rng.randrange(0, 5)
        row = {
            "problem_id": f"p{rng.randrange(n // 3)}",  # repeats: fewer mistakes than rows
            "generator": rng.choice(["gen-a", "gen-b", None]),
            "sample_index": rng.randrange(2),
            "accepted": accepted,
            # Ties in the reasons' counts keep their first-seen order.
            "reject_reason": None if accepted else reasons[rng.randrange(len(reasons))],
            "level": rng.choice([1, 2, None]),
            "subject": rng.choice(["Algebra", None]),
            "incorrect_step": rng.choice([None, 1, 2, len(steps) or None]),
            "reference_step": rng.choice([None, 1, 2]),
            "source": rng.choice(["gsm8k", "math", "csqa"]),
            "steps": steps,
        }
        if rng.random() < 0.3:
            row["n_steps"] = rng.randrange(5)  # read before the steps when present
        rows.append(row)
    return rows


@pytest.mark.parametrize("seed", range(4))
def test_summary_added_up_in_batches_is_the_summary_of_all_rows(seed):
    rows = _graded_rows(300, seed)
    want = _summary_of_all_rows(rows)
    assert correct_stage.summarize(rows) == want
    assert list(correct_stage.summarize(rows)) == list(want)  # key order: run_summary.json's bytes
    rng = random.Random(seed)
    acc, lo = correct_stage.CorrectionSummary(), 0
    while lo < len(rows):
        hi = lo + rng.randrange(0, 40)
        acc.add(rows[lo:hi])
        lo = hi
    assert acc.result() == want and _json(acc.result()) == _json(want)
    assert correct_stage.summarize([]) == _summary_of_all_rows([])


def _json(summary: dict) -> str:
    return json.dumps(summary)


def test_distinct_mistakes_cost_bytes_not_objects_per_row():
    """Counting distinct mistakes holds a few bytes per mistake, not a tuple of Python objects."""
    n = 20_000

    def rows():
        for i in range(n):
            yield {"problem_id": f"problem-{i}", "generator": "g", "sample_index": i % 4, "accepted": True}

    acc = correct_stage.CorrectionSummary()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        acc.add(rows())
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert acc.result()["mistakes"] == n
    assert held < 24 * n, held  # a set of (str, str, int) tuples: ~150 bytes a row


# ------------------------------------------------------------------------ the stage's heap peak
def _bulky_mistakes(folder: Path, n: int) -> None:
    """`n` math mistakes the reference rules correct, each with a few KB of text."""
    cases = _perturbed_paths()
    rows = []
    for i in range(n):
        problem, wrong, _k = cases[i % len(cases)]
        rows.append(
            {
                **problem.to_dict(),
                "problem_id": f"{problem.problem_id}/{i}",
                "generator": "perturb",
                "sample_index": 0,
                "completion": f"path {i}: " + " ".join(wrong) + " and more words" * 300,
                "steps": wrong,
                "predicted_answer": "0",
                "verdict": "wrong",
            }
        )
    save_dataset_config(folder, "sample", {"train": rows})


def _peak_of_run(cfg: CorrectConfig) -> int:
    """Bytes the Python heap peaked above its level at the start of the run."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        correct(cfg)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _peaks(tmp_path: Path, monkeypatch, sizes: tuple[int, ...], **kw) -> list[int]:
    # Batches far smaller than the mistakes, as at scale (2,048 of 20,000).
    monkeypatch.setattr(correct_stage, "_BATCH_ROWS", 64)
    peaks = []
    for run, n in enumerate((sizes[0], *sizes)):  # the first run warms up imports and caches
        folder = tmp_path / f"mistakes-{run}"
        _bulky_mistakes(folder, n)
        cfg = CorrectConfig(
            mistakes=str(folder),
            output_dir=str(tmp_path / f"out-{run}"),
            grading_workers=1,
            progress=False,
            **kw,
        )
        peaks.append(_peak_of_run(cfg))
    return peaks[1:]


def test_reference_correct_peak_is_flat_in_the_mistakes(tmp_path, monkeypatch):
    small, large = _peaks(tmp_path, monkeypatch, (250, 1000))
    # Measured: +~2 % (the whole table as Python objects, the rows' summary fields: 4x).
    assert large < 1.3 * small + 200_000, (small, large)


def test_merge_peak_is_flat_in_the_corrections(tmp_path, monkeypatch):
    """Merging shards streams their configs: the peak does not grow with the corrections merged."""
    monkeypatch.setattr(correct_stage, "_BATCH_ROWS", 64)
    peaks = []
    for run, n in enumerate((250, 250, 1000)):  # the first run warms up imports and caches
        folder = tmp_path / f"mistakes-{run}"
        _bulky_mistakes(folder, n)
        cfg = dict(mistakes=str(folder), output_dir=str(tmp_path / f"out-{run}"), grading_workers=1)
        for i in range(2):
            correct(CorrectConfig(**cfg, shard=f"{i}/2"))
        peaks.append(_peak_of_run(CorrectConfig(**cfg, merge_shards=True)))
    small, large = peaks[1:]
    assert large < 1.3 * small + 200_000, (small, large)


_SERVER = r"""
import sys
from lema_hub.formats import correction_target
from tests.fake_openai_server import FakeOpenAIServer

with FakeOpenAIServer(responder=lambda payload: correction_target(1, "Step 1 is off.", ["The answer is 5."])) as srv:
    print(srv.base_url, flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


def test_llm_correct_peak_is_flat_in_the_mistakes(tmp_path, monkeypatch):
    # The server in its own process: the bodies it keeps are not this process's heap.
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        llm = dict(
            backend="openai", model="fake-corrector", base_urls=[url], prompt_style="chat", concurrency=4
        )
        small, large = _peaks(tmp_path, monkeypatch, (250, 1000), **llm)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    # The engine's results (its part) still grow a little with the mistakes; the mistakes do not.
    assert large < 1.3 * small + 200_000, (small, large)


class _ReadOnlyResults(Sequence):
    """The engine's results as a read-only sequence (what a lazy view of its cache is): `len`,
    items and slices only."""

    def __init__(self, items: list) -> None:
        self._items = items

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):
        return tuple(self._items[i]) if isinstance(i, slice) else self._items[i]


def test_each_row_is_its_own_mistakes_from_read_only_results(tmp_path, monkeypatch):
    """The rows are built from a second pass over the mistakes in step with the results (request
    k is mistake k, its attempts consecutive), reading the results only: each row is its own
    mistake's, with that mistake's attempts, however the batches fall."""
    from lema_hub.generation.engine import Engine
    from tests.fake_openai_server import FakeOpenAIServer

    golds = {p.question: p.gold_answer for p in load_sample("train") + load_sample("test")}

    def respond(payload: dict) -> str:
        text = payload["messages"][-1]["content"].rsplit("Question:", 1)[1]
        gold = next(g for q, g in golds.items() if q in text)
        seed = payload.get("seed") or 0
        answer = gold if seed % 2 == 0 else gold + "1"
        return correction_target(1, f"Seed {seed}.", [f"The answer is {answer}."])

    real = Engine.generate
    monkeypatch.setattr(Engine, "generate", lambda self, *a, **k: _ReadOnlyResults(real(self, *a, **k)))
    monkeypatch.setattr(correct_stage, "_BATCH_ROWS", 5)  # batches that cut across a mistake's attempts
    folder = tmp_path / "mistakes"
    _bulky_mistakes(folder, 23)
    with FakeOpenAIServer(responder=respond) as srv:
        summary = correct(
            CorrectConfig(
                mistakes=str(folder), output_dir=str(tmp_path / "out"), backend="openai", model="m",
                base_urls=[srv.base_url], prompt_style="chat", num_attempts=3, temperature=0.7,
                progress=False, grading_workers=1,
            )
        )  # fmt: skip
    rows = load_rows(str(tmp_path / "out"), "sample") + load_rows(str(tmp_path / "out"), "sample-rejected")
    assert summary["n"] == len(rows) == 3 * 23 and summary["mistakes"] == 23
    assert 0 < summary["accepted"] < summary["n"]
    attempts = defaultdict(list)
    for r in rows:
        attempts[r["problem_id"]].append(r["attempt"])
        # Its own question's gold answer (or gold + "1"): never another mistake's.
        assert r["corrected_answer"] in (r["gold_answer"], r["gold_answer"] + "1"), r["problem_id"]
        assert r["completion"].startswith(f"path {r['problem_id'].rsplit('/', 1)[1]}:")
    assert len(attempts) == 23 and all(sorted(a) == [0, 1, 2] for a in attempts.values())
