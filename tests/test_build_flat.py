"""`build` with memory flat in the problems and rows: the same views as building every row in
memory and shuffling the list, while holding a batch of rows (and 8 bytes a row) at a time."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lema_hub import build, csqa
from lema_hub.artifacts import (
    DatasetConfigWriter,
    discover_configs,
    load_artifact,
    load_rows,
    save_dataset_config,
    save_dataset_config_stream,
)
from lema_hub.problems import ProblemArgs, iter_problems, load_problems, task_of
from lema_hub.schema import CHOICE_TASK, conform
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_collect import graded_responder

REPO = Path(__file__).resolve().parents[1]
CSQA_TRAIN = REPO / "lema_hub" / "data" / "csqa_sample_train.jsonl"


# ------------------------------------------------------------------------------ realistic inputs


@pytest.fixture(scope="module")
def math_run(tmp_path_factory) -> Path:
    """Mistakes (two generators: duplicate correct paths) and reference corrections of 20 sample
    problems, from collect and correct through a loopback endpoint."""
    from lema_hub.collect import CollectConfig, collect
    from lema_hub.correct import CorrectConfig, correct

    tmp = tmp_path_factory.mktemp("math")
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        collect(
            CollectConfig(
                problems="sample", problems_split="train", problems_limit=20, output_dir=str(tmp / "m"),
                backend="openai", model="fake-model", base_urls=[srv.base_url], prompt_style="chat",
                num_samples=4, generators=[{"name": "gen-a"}, {"name": "gen-b"}], seed=0, concurrency=4,
                progress=False, write_card=False,
            )
        )  # fmt: skip
    correct(CorrectConfig(mistakes=str(tmp / "m"), output_dir=str(tmp / "c")))
    # A held-out file sharing three training questions: decontamination drops gold, sampled and
    # correction rows.
    questions = [p.question for p in load_problems(ProblemArgs(problems="sample"))[:3]]
    test = tmp / "held_out.jsonl"
    test.write_text("".join(json.dumps({"question": q, "answer": "So.\n#### 1"}) + "\n" for q in questions))
    return tmp


@pytest.fixture(scope="module")
def csqa_run(tmp_path_factory) -> Path:
    """CSQA mistakes and corrections from collect and correct, plus an older corrections folder
    whose accepted rows include ones reaching gold only through the edit-distance mapping."""
    import datasets

    from lema_hub.collect import CollectConfig, collect
    from lema_hub.correct import CorrectConfig, correct
    from lema_hub.schema import correction_features
    from tests.test_csqa_pipeline import _endpoint, responder

    tmp = tmp_path_factory.mktemp("csqa")
    with FakeOpenAIServer(responder=responder) as srv:
        collect(
            CollectConfig(
                problems="csqa", problems_path=str(CSQA_TRAIN), problems_split="train",
                output_dir=str(tmp / "m"), model="fake-model", prompt_style="chat", num_samples=4,
                temperature=0.8, max_tokens=512, seed=0, progress=False, **_endpoint(srv.base_url),
            )
        )  # fmt: skip
        correct(
            CorrectConfig(
                mistakes=str(tmp / "m"), output_dir=str(tmp / "c"), model="fake-model",
                prompt_style="plain", max_tokens=512, progress=False, **_endpoint(srv.base_url),
            )
        )  # fmt: skip
    rows = load_rows(str(tmp / "c"), "csqa") + [
        dict(r, accepted=True, reject_reason=None, reject_detail=None)
        for r in load_rows(str(tmp / "c"), "csqa-rejected")
    ]
    ds = datasets.Dataset.from_list(rows)
    save_dataset_config(tmp / "old", "csqa", {"train": ds.cast(correction_features(ds.features))})
    lines = CSQA_TRAIN.read_text().splitlines()
    (tmp / "held_out.jsonl").write_text("\n".join(lines[:2]) + "\n")  # two training questions
    return tmp


# ------------------------------------------------------------------ the reference: all in memory


def _reference_views(cfg: build.BuildConfig) -> tuple[dict[str, list[dict]], dict]:
    """Every view built the way build did before it streamed: all rows as dicts in lists, each
    list shuffled with `random.Random(seed).shuffle`; and the summary counts."""
    style = cfg.prompt_style
    cot = build.gold_cot_rows(load_problems(cfg), style) if cfg.include_gold else []
    counts: dict = {"gold_cot_rows": len(cot)}
    if cfg.include_correct_samples:
        samples = load_rows(cfg.mistakes, f"{build.main_config(cfg.mistakes)}-samples")
        extra, left_out = build.sample_cot_rows(samples, cot, style)
        cot += extra
        counts.update(sample_cot_rows=len(extra), sample_duplicates_dropped=left_out["duplicates"])
        counts["sample_inexact_dropped"] = left_out["inexact"]
    config = build.main_config(cfg.corrections)
    corrections = [r for r in load_rows(cfg.corrections, config) if r.get("accepted") is True]
    if any(task_of(r) == CHOICE_TASK for r in corrections):
        exact = [
            r
            for r in corrections
            if csqa.states_exactly("\n".join(r["corrected_steps"]), str(r["gold_answer"] or ""))
        ]
        counts["inexact_corrections_dropped"] = len(corrections) - len(exact)
        corrections = exact
    counts["correction_rows"] = len(corrections)
    test_q = build.load_test_questions(cfg.decontaminate, cfg.decontaminate_path, cfg.decontaminate_split)
    cot, dropped_cot = build.decontaminate(cot, test_q, cfg.ngram)
    kept, dropped = build.decontaminate([dict(c, kind="correction") for c in corrections], test_q, cfg.ngram)
    corrections = [{k: v for k, v in c.items() if k != "kind"} for c in kept]
    counts["decontamination"] = {
        "test_set": cfg.decontaminate,
        "test_questions": len(test_q),
        "ngram": cfg.ngram,
        "dropped_cot_rows": dropped_cot["cot"],
        "dropped_correction_rows": dropped["correction"],
    }
    views = {}
    for view in cfg.views:
        rows = build.view_rows(view, cot, corrections, style)
        if cfg.shuffle:
            random.Random(cfg.seed).shuffle(rows)
        views[view] = conform(rows, build.training_row_features(style))
    return views, counts


def _files(folder: Path, config: str) -> list[str]:
    return [Path(f).name for f in discover_configs(folder)[config]["train"]]


def _assert_same_as_reference(cfg: build.BuildConfig, summary: dict, tmp_path: Path) -> None:
    views, counts = _reference_views(cfg)
    out, name = Path(cfg.output_dir), summary["config_prefix"]
    feats = build.training_row_features(cfg.prompt_style)
    size = build._BATCH_ROWS
    for view, rows in views.items():
        assert len(rows) > 2 * size  # several output batches, each from rows all over the view
        config = f"{name}-{view}"
        assert load_artifact(str(out), config).to_list() == rows, view
        # The same batches through the same writer: the same row groups, bytes and content-hashed names.
        batches = (rows[lo : lo + size] for lo in range(0, len(rows), size))
        save_dataset_config_stream(tmp_path / "reference", config, batches, feats)
        assert _files(out, config) == _files(tmp_path / "reference", config), view
        kinds = [r["kind"] for r in rows]
        assert summary["views"][view] == {
            "cot": kinds.count("cot"),
            "correction": kinds.count("correction"),
            "total": len(rows),
        }
    for key, value in counts.items():
        assert summary[key] == value, key
    assert (
        counts["decontamination"]["dropped_cot_rows"] and counts["decontamination"]["dropped_correction_rows"]
    )


@pytest.mark.parametrize("style", ["plain", "chat"])
def test_math_views_are_those_of_shuffling_every_row_in_memory(math_run, tmp_path, monkeypatch, style):
    monkeypatch.setattr(build, "_BATCH_ROWS", 7)
    cfg = build.BuildConfig(
        corrections=str(math_run / "c"), mistakes=str(math_run / "m"), include_correct_samples=True,
        problems="sample", prompt_style=style, output_dir=str(tmp_path / "mix"),
        decontaminate=str(math_run / "held_out.jsonl"),
    )  # fmt: skip
    summary = build.build(cfg)
    assert summary["sample_cot_rows"] and summary["sample_duplicates_dropped"]
    assert list(summary) == [
        "config_prefix", "prompt_style", "gold_cot_rows", "sample_cot_rows", "sample_duplicates_dropped",
        "sample_inexact_dropped", "correction_rows", "decontamination", "views", "output_dir", "wall_s",
    ]  # fmt: skip
    _assert_same_as_reference(cfg, summary, tmp_path)


def test_csqa_views_are_those_of_shuffling_every_row_in_memory(csqa_run, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "_BATCH_ROWS", 3)
    cfg = build.BuildConfig(
        corrections=str(csqa_run / "old"), mistakes=str(csqa_run / "m"), include_correct_samples=True,
        problems="csqa", problems_path=str(CSQA_TRAIN), output_dir=str(tmp_path / "mix"),
        decontaminate="csqa_dev", decontaminate_path=str(csqa_run / "held_out.jsonl"),
        decontaminate_split="validation",
    )  # fmt: skip
    summary = build.build(cfg)
    assert summary["inexact_corrections_dropped"] and summary["sample_inexact_dropped"]
    assert summary["no_gold_rationale"] == 12 and summary["gold_cot_rows"] == 0
    _assert_same_as_reference(cfg, summary, tmp_path)


# ------------------------------------------------------------------------ the order, on its own


@pytest.mark.parametrize("n", [0, 1, 2, 9, 1000])
def test_positions_are_the_order_of_shuffling_the_list(n):
    order = list(range(n))
    random.Random(7).shuffle(order)
    pos = build._positions(n, True, 7)
    assert pos.dtype.itemsize == 8 and len(pos) == n
    assert all(pos[j] == p for p, j in enumerate(order))  # row order[p] is written at p
    assert build._positions(n, False, 7).tolist() == list(range(n))


def test_spilled_rows_hold_what_the_writer_would_store():
    """A value only `datasets` converts (an int id in a string column) is spilled as it would be written."""
    import datasets

    feats = build.training_row_features("plain")
    rows = [
        {"kind": "cot", "problem_id": 3, "question": "q"},
        {"kind": "cot", "problem_id": "p", "source": "s"},
    ]
    batch = build._record_batch(rows, feats, feats.arrow_schema.remove_metadata())
    assert batch.to_pylist() == datasets.Dataset.from_list(conform(rows, feats), features=feats).to_list()
    assert batch.to_pylist()[0]["problem_id"] == "3"


# --------------------------------------------------------------------------- nothing left behind


def _open_spills() -> list[str]:
    """Files this process holds open that are deleted already (the spills are, from the start)."""
    fds = Path("/proc/self/fd")
    names = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.endswith("(deleted)"):
            names.append(target)
    return names


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_failed_build_keeps_the_old_views_and_leaves_no_spill(math_run, tmp_path, monkeypatch):
    monkeypatch.setattr(build, "_BATCH_ROWS", 5)
    spill_dir = tmp_path / "tmp"
    spill_dir.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spill_dir))
    out = tmp_path / "mix"
    cfg = build.BuildConfig(
        corrections=str(math_run / "c"), problems="sample", output_dir=str(out), views=["lema", "cot"]
    )
    build.build(cfg)
    before = {c: load_artifact(str(out), c).to_list() for c in discover_configs(out)}
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    open_before = _open_spills()
    seen: list[tuple[list, list]] = []
    real = DatasetConfigWriter.write

    def failing(self, rows, split="train"):
        seen.append((sorted(p.name for p in spill_dir.iterdir()), _open_spills()))
        if len(seen) == 4:  # in the second view
            raise RuntimeError("disk full")
        return real(self, rows, split)

    monkeypatch.setattr(DatasetConfigWriter, "write", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        build.build(build.BuildConfig(**{**cfg.__dict__, "seed": 1}))
    # While it ran, the spills were open but had no name: in no folder, the output's or the temp dir;
    # they are on the output's disk (in its folder), not in the temp dir (often a RAM-backed /tmp).
    assert all(names == [] for names, _ in seen)
    assert all(len(spills) > len(open_before) for _, spills in seen)
    new = {s for _, spills in seen for s in spills} - set(open_before)
    assert new and all(s.startswith(str(out.resolve()) + "/") for s in new), new
    assert _open_spills() == open_before  # closed on the failure
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == files
    assert {c: load_artifact(str(out), c).to_list() for c in discover_configs(out)} == before


_KILLED_MID_BUILD = r"""
import os, signal, sys
from lema_hub import build
from lema_hub.artifacts import DatasetConfigWriter

build._BATCH_ROWS = 5
real = DatasetConfigWriter.write
calls = []

def write(self, rows, split="train"):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, rows, split)

DatasetConfigWriter.write = write
build.build(build.BuildConfig(corrections=sys.argv[1], problems="sample", output_dir=sys.argv[2], seed=3))
"""


def test_a_killed_build_leaves_no_spill_in_the_temp_dir(math_run, tmp_path):
    out = tmp_path / "mix"
    build.build(build.BuildConfig(corrections=str(math_run / "c"), problems="sample", output_dir=str(out)))
    before = {c: load_artifact(str(out), c).to_list() for c in discover_configs(out)}
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    spill_dir = tmp_path / "tmp"
    spill_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_BUILD, str(math_run / "c"), str(out)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(spill_dir)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert list(spill_dir.iterdir()) == []
    # The spills had no name; what the kill left is the writer's staging folder (the next write removes it).
    left = sorted(p.relative_to(out) for p in out.rglob("*") if ".lema-staging-" not in str(p))
    assert left == files
    assert {c: load_artifact(str(out), c).to_list() for c in discover_configs(out)} == before


# ------------------------------------------------------------------------------- flat memory


_MEASURED_BUILD = r"""
import json, sys, tracemalloc
import pyarrow as pa
from lema_hub import build

build._BATCH_ROWS = 64  # batches far smaller than the rows, as at scale
problems, corrections, test, out = sys.argv[1:5]
cfg = build.BuildConfig(
    problems="gsm8k", problems_path=problems, corrections=corrections, views=["lema", "cot"],
    output_dir=out, decontaminate=test,
)
build.build(build.BuildConfig(**{**cfg.__dict__, "output_dir": out + "-warm"}))  # imports, caches
tracemalloc.start()
build.build(cfg)
print(json.dumps({"python_peak": tracemalloc.get_traced_memory()[1], "pool_max": pa.default_memory_pool().max_memory()}))
"""


def _inputs(folder: Path, n: int) -> list[str]:
    """n GSM8K problems (long questions) in a .jsonl file, n accepted corrections written in row
    groups of 100 (as `correct` writes them), and a held-out file."""
    from tests.test_build import _correction_row

    folder.mkdir()

    def words(i: int) -> str:  # text that does not compress away: the files are MBs, as at scale
        return " ".join(f"w{(i * 7919 + k * 104729) % 1000003}" for k in range(300))

    with (folder / "train.jsonl").open("w") as f:
        for i in range(n):
            question = f"Problem {i}: {words(i)} How many apples are left?"
            f.write(
                json.dumps({"question": question, "answer": f"{i} - 1 = <<{i}-1>>{i - 1}\n#### {i - 1}"})
                + "\n"
            )
    row = _correction_row()
    rows = [
        {**row, "problem_id": f"p{i}", "question": f"Problem {i}: {words(i)}", "completion": "x" * 2000}
        for i in range(n)
    ]
    batches = (rows[lo : lo + 100] for lo in range(0, n, 100))
    from datasets import Dataset

    feats = Dataset.from_list(rows[:1]).features
    save_dataset_config_stream(folder / "corrections", "sample", batches, feats)
    (folder / "test.jsonl").write_text(
        json.dumps({"question": "An unrelated held-out question.", "answer": "#### 1"}) + "\n"
    )
    return [
        str(folder / "train.jsonl"),
        str(folder / "corrections"),
        str(folder / "test.jsonl"),
        str(folder / "mix"),
    ]


def _measure(folder: Path, n: int) -> dict:
    """The peaks of a build of n problems and n corrections, and the bytes of its input files."""
    inputs = _inputs(folder, n)
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED_BUILD, *inputs], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [Path(inputs[0]), *Path(inputs[1]).rglob("*.parquet")]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "bytes": sum(f.stat().st_size for f in files)}


def test_build_peaks_stay_flat_in_the_rows(tmp_path):
    """4x the problems and corrections: the Python heap's and Arrow's peaks grow by a small part
    of what the rows added (before, they held every CoT row as a dict, the problems and the whole
    corrections table: measured +8.6 MB and +11.6 MB for +5.4 MB of input files; now +0.5, +0.4)."""
    small = _measure(tmp_path / "small", 400)
    large = _measure(tmp_path / "large", 1600)
    added = large["bytes"] - small["bytes"]
    assert added > 5_000_000
    for peak in ("python_peak", "pool_max"):
        assert large[peak] - small[peak] < 0.2 * added, (peak, small, large)
        assert large[peak] < 1.5 * small[peak], (peak, small, large)


def test_iter_problems_reads_a_gsm8k_file_a_line_at_a_time(tmp_path):
    import tracemalloc

    words = " ".join(f"w{i}" for i in range(200))
    for n in (300, 1200):
        with (tmp_path / f"{n}.jsonl").open("w") as f:
            for i in range(n):
                f.write(json.dumps({"question": f"Q{i} {words}", "answer": f"So.\n#### {i}"}) + "\n")
    peaks = []
    for n in (300, 1200):
        args = ProblemArgs(problems="gsm8k", problems_path=str(tmp_path / f"{n}.jsonl"))
        tracemalloc.start()
        count = sum(1 for _ in iter_problems(args))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count == n
    assert peaks[1] < 1.3 * peaks[0], peaks


@pytest.mark.parametrize("limit, shard", [(None, None), (7, None), (None, "1/3"), (8, "2/3"), (100, "0/2")])
def test_iter_problems_yields_load_problems(tmp_path, limit, shard):
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"Q{i}?", "answer": f"So.\n#### {i}"}) + "\n\n" for i in range(20))
    )
    args = ProblemArgs(problems="gsm8k", problems_path=str(path), problems_limit=limit, shard=shard)
    assert list(iter_problems(args)) == load_problems(args)


def test_iter_problems_errors_are_load_problems_errors(tmp_path):
    from lema_hub.errors import InvalidInputError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "answer": "So.\n#### 1"}) + "\n{not json\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cases = [
        ProblemArgs(problems="gsm8k", problems_path=str(bad), problems_limit=1),  # past the limit still
        ProblemArgs(problems="gsm8k", problems_path=str(empty)),
        ProblemArgs(problems="gsm8k", problems_path=str(empty), problems_limit=0),
        ProblemArgs(problems="gsm8k", problems_path=str(bad), shard="3/2"),
    ]
    for args in cases:
        with pytest.raises(InvalidInputError) as want:
            load_problems(args)
        with pytest.raises(InvalidInputError) as got:
            list(iter_problems(args))
        assert str(got.value) == str(want.value)


_CARD_IN_A_FRESH_PROCESS = r"""
import json, sys, tracemalloc
from lema_hub.cards.dataset import write_dataset_card

write_dataset_card(sys.argv[1], "mixture")  # imports, fonts, caches
tracemalloc.start()
write_dataset_card(sys.argv[1], "mixture")
print(json.dumps({"python_peak": tracemalloc.get_traced_memory()[1]}))
"""


def _mixture_folder(folder: Path, n: int) -> None:
    """Six views of n short rows each, as build writes them (4,096 rows a batch)."""
    feats = build.training_row_features("plain")
    rows = [
        {"kind": "cot" if i % 2 else "correction", "origin": "gold", "problem_id": f"gsm8k/train/{i}",
         "question": "Q?", "prompt": "P", "completion": "C", "source": "gsm8k"}
        for i in range(n)
    ]  # fmt: skip
    for view in build.VIEWS:
        batches = (rows[lo : lo + 4096] for lo in range(0, n, 4096))
        save_dataset_config_stream(folder, f"gsm8k-{view}", batches, feats)


def test_the_mixture_card_peak_stays_flat_in_the_rows(tmp_path):
    """The card counts kinds and collects the distinct sources without a Python list of every
    row's value of every view (at 15,000 GSM8K problems: 6 views x ~34,000 rows). Measured: 4.7 ->
    17.0 MB for 4x the rows before, 2.06 -> 2.12 MB now."""
    peaks = []
    for n in (10_000, 40_000):
        _mixture_folder(tmp_path / str(n), n)
        proc = subprocess.run(
            [sys.executable, "-c", _CARD_IN_A_FRESH_PROCESS, str(tmp_path / str(n))],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks.append(json.loads(proc.stdout.strip().splitlines()[-1])["python_peak"])
        text = (tmp_path / str(n) / "README.md").read_text()
        assert f"| `gsm8k-lema` | {n} | {n // 2} | {n // 2} | plain text |" in text  # the counts
    assert peaks[1] < 1.3 * peaks[0], peaks
