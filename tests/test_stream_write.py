"""Rows streamed to parquet in batches: the writer, and collect / correct / build writing through it."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import load_dataset

from lema_hub import artifacts, build, collect, correct
from lema_hub.artifacts import (
    DatasetConfigWriter,
    discover_configs,
    load_artifact,
    load_rows,
    save_dataset_config,
    save_dataset_config_stream,
    stream_rows,
)
from lema_hub.cards.dataset import write_dataset_card
from lema_hub.schema import conform, sample_features
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_collect import graded_responder


def _sample_rows(n: int) -> list[dict]:
    rows = [
        {
            "problem_id": f"p{i // 3}",
            "question": f"What is {i} + {i}?",
            "gold_answer": str(2 * i),
            "sample_index": i % 3,
            "sampling": {"temperature": 0.8, "top_p": 1.0, "max_tokens": 64, "seed": i},
            "completion": f"We add {i} and {i}. The answer is {2 * i + i % 2}.",
            "steps": [f"We add {i} and {i}.", f"The answer is {2 * i + i % 2}."],
            "verdict": "wrong" if i % 2 else "correct",
            "format_ok": True,
            "prompt_tokens": 10 + i,
            "pass_rate": 0.5,
        }
        for i in range(n)
    ]
    return conform(rows, sample_features())


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_the_streaming_writer_writes_what_save_dataset_config_writes(tmp_path):
    rows, feats = _sample_rows(40), sample_features()
    save_dataset_config(tmp_path / "old" / "d", "x", {"train": rows}, features=feats)
    assert save_dataset_config_stream(tmp_path / "one" / "d", "x", [rows], feats) == 40
    # One batch: the same parquet bytes, so the same content-hashed name and the same YAML.
    assert _folder_bytes(tmp_path / "one" / "d") == _folder_bytes(tmp_path / "old" / "d")

    with DatasetConfigWriter(tmp_path / "many", "x", feats) as writer:
        for lo in range(0, 40, 7):
            writer.write(rows[lo : lo + 7])
    assert writer.batches_written == [7, 7, 7, 7, 7, 5]
    many = load_dataset(str(tmp_path / "many"), "x", split="train")
    old = load_dataset(str(tmp_path / "old" / "d"), "x", split="train")
    assert many.features == old.features == feats
    assert many.to_list() == old.to_list()
    assert load_artifact(str(tmp_path / "many"), "x").to_list() == old.to_list()
    [name] = [Path(f).name for f in discover_configs(tmp_path / "many")["x"]["train"]]
    assert (
        name.startswith("train-00000-of-00001-")
        and name != Path(discover_configs(tmp_path / "old" / "d")["x"]["train"][0]).name
    )  # several row groups: other bytes, another content hash


def test_a_stream_starts_a_new_shard_once_a_file_is_full(tmp_path):
    rows, feats = _sample_rows(30), sample_features()
    with DatasetConfigWriter(tmp_path / "f", "x", feats, max_shard_bytes=1) as writer:
        for lo in range(0, 30, 10):
            writer.write(rows[lo : lo + 10])
    files = discover_configs(tmp_path / "f")["x"]["train"]
    assert [Path(f).name[:20] for f in files] == [f"train-0000{i}-of-00003" for i in range(3)]
    assert load_dataset(str(tmp_path / "f"), "x", split="train").to_list() == rows


def test_a_failure_mid_stream_leaves_the_old_config_byte_identical(tmp_path):
    folder, feats = tmp_path / "f", sample_features()
    rows = _sample_rows(12)
    save_dataset_config(folder, "x", {"train": rows[:5]}, features=feats)
    save_dataset_config(folder, "x-samples", {"train": rows}, features=feats)
    before = _folder_bytes(folder)

    def batches():
        yield rows[:6]
        yield rows[6:]
        raise RuntimeError("grading crashed")

    with pytest.raises(RuntimeError, match="grading crashed"):
        save_dataset_config_stream(folder, "x", batches(), feats)
    assert _folder_bytes(folder) == before
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_two_open_writers_do_not_clean_up_each_other(tmp_path):
    """Opening a writer cleans this process's leftovers: never the staging folder of one still open."""
    feats, rows = sample_features(), _sample_rows(6)
    with DatasetConfigWriter(tmp_path, "a", feats) as first:
        first.write(rows[:3])
        with DatasetConfigWriter(tmp_path, "b", feats) as second:
            second.write(rows[3:])
        first.write(rows[3:])
    assert load_dataset(str(tmp_path), "a", split="train").to_list() == rows
    assert load_dataset(str(tmp_path), "b", split="train").to_list() == rows[3:]


def test_streamed_rows_read_the_rows_load_rows_reads_a_row_group_at_a_time(tmp_path):
    rows, feats = _sample_rows(23), sample_features()
    with DatasetConfigWriter(tmp_path, "x", feats) as writer:  # one row group per write
        for lo in range(0, 23, 5):
            writer.write(rows[lo : lo + 5])
    streamed = stream_rows(str(tmp_path), "x")
    assert len(streamed) == 23 and list(streamed) == load_rows(str(tmp_path), "x") == rows
    assert list(streamed) == rows  # a second pass reads them again
    assert [len(t) for t in streamed.batches(3)] == [3, 2] * 4 + [3]  # never across a row group
    window = streamed.slice(4, 19)
    assert list(window) == rows[4:19] and list(window.slice(2, 6)) == rows[6:10]
    assert list(streamed.head(7)) == rows[:7] and len(streamed.slice(20, 40)) == 3
    first = next(iter(feats))
    narrow = stream_rows(str(tmp_path), "x", skip_columns=(first,))
    assert first not in narrow.schema.names and list(narrow) == [
        {k: v for k, v in r.items() if k != first} for r in rows
    ]
    assert len(stream_rows(str(tmp_path), "absent", missing_ok=True)) == 0
    with pytest.raises(ValueError, match="no config 'absent'"):
        stream_rows(str(tmp_path), "absent")
    assert list(stream_rows(str(tmp_path), "default")) == rows


def _writes_by_config(monkeypatch) -> dict[str, list[list[dict]]]:
    """Every batch a `DatasetConfigWriter` receives, by config (the real writer still writes it)."""
    seen: dict[str, list[list[dict]]] = {}
    real = DatasetConfigWriter.write

    def spy(self, rows, split="train"):
        seen.setdefault(self.config_name, []).append(list(rows))
        return real(self, rows, split)

    monkeypatch.setattr(DatasetConfigWriter, "write", spy)
    return seen


def _collect(tmp_path: Path, url: str, name: str):
    gens = [{"name": "gen-a"}, {"name": "gen-b"}]  # the same paths: gen-b's mistakes are all duplicates
    return collect.collect(
        collect.CollectConfig(
            problems="sample", problems_split="train", problems_limit=6, output_dir=str(tmp_path / name),
            backend="openai", model="fake-model", base_urls=[url], prompt_style="chat", num_samples=4,
            generators=gens, seed=0, concurrency=4, progress=False, write_card=False,
        )
    )  # fmt: skip


def test_collect_grades_and_writes_a_few_problems_at_a_time(tmp_path, monkeypatch):
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        whole = _collect(tmp_path, srv.base_url, "whole")  # all 48 rows in one batch
        monkeypatch.setattr(collect, "_BATCH_ROWS", 5)
        writes = _writes_by_config(monkeypatch)
        batched = _collect(tmp_path, srv.base_url, "batched")
    samples = writes["sample-samples"]
    # 2 generators x 6 problems x 4 paths, in batches of whole problems (5 rounded up to 2 problems).
    assert [len(b) for b in samples] == [8] * 6
    for batch in samples:
        assert len({(r["generator"], r["problem_id"]) for r in batch}) == 2
    assert sum(len(b) for b in writes["sample"]) == 12
    # Per-problem pass rates and the de-duplication across batches (and generators) are unchanged.
    for key in (
        "samples",
        "correct",
        "wrong",
        "mistakes",
        "duplicates_removed",
        "format_ok",
        "prompt_tokens",
    ):
        assert batched[key] == whole[key], key
    assert (batched["mistakes"], batched["duplicates_removed"]) == (
        12,
        24,
    )  # 36 wrong, 2 distinct per problem
    for config in ("sample", "sample-samples"):
        assert load_artifact(str(tmp_path / "batched"), config).to_list() == (
            load_artifact(str(tmp_path / "whole"), config).to_list()
        )


def test_correct_parses_grades_and_writes_a_batch_at_a_time(tmp_path, monkeypatch):
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        _collect(tmp_path, srv.base_url, "m")

    def run(name: str) -> dict:
        return correct.correct(
            correct.CorrectConfig(
                mistakes=str(tmp_path / "m"), output_dir=str(tmp_path / name), progress=False
            )
        )

    whole = run("whole")
    monkeypatch.setattr(correct, "_BATCH_ROWS", 5)
    writes = _writes_by_config(monkeypatch)
    batched = run("batched")
    sizes = [len(b) for b in writes["sample"]] + [len(b) for b in writes.get("sample-rejected", [])]
    assert max(sizes) <= 5 and sum(sizes) == whole["n"] == 12
    summary_keys = ("n", "accepted", "rejected", "mistakes", "reject_reasons", "by_generator",
                    "by_step_position", "by_incorrect_step", "reference_agreement", "corrector_prompt")  # fmt: skip
    for key in summary_keys:
        assert batched[key] == whole[key], key
    for config in discover_configs(tmp_path / "whole"):
        a = load_artifact(str(tmp_path / "whole"), config)
        b = load_artifact(str(tmp_path / "batched"), config)
        assert a.features == b.features and a.to_list() == b.to_list()


def test_build_writes_each_view_in_batches_in_the_shuffled_order(tmp_path, monkeypatch):
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        _collect(tmp_path, srv.base_url, "m")
    correct.correct(correct.CorrectConfig(mistakes=str(tmp_path / "m"), output_dir=str(tmp_path / "c")))
    monkeypatch.setattr(build, "_BATCH_ROWS", 4)
    writes = _writes_by_config(monkeypatch)
    cfg = build.BuildConfig(
        corrections=str(tmp_path / "c"),
        problems="sample",
        output_dir=str(tmp_path / "mix"),
        views=["lema", "cot"],
    )
    summary = build.build(cfg)
    assert all(len(b) <= 4 for batches in writes.values() for b in batches)
    # The rows and their order are those of shuffling the whole view, as before.
    cot = build.gold_cot_rows(build.load_problems(cfg), "plain")
    corrections = [r for r in artifacts.load_rows(str(tmp_path / "c"), "sample") if r["accepted"]]
    expected = build.view_rows("lema", cot, corrections, "plain")
    build.random.Random(cfg.seed).shuffle(expected)
    written = load_artifact(str(tmp_path / "mix"), "sample-lema").to_list()
    assert written == conform(expected, build.training_row_features("plain"))
    assert summary["views"]["lema"]["total"] == len(expected) > 4


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("style, label", [("plain", "plain text"), ("chat", "conversational (messages)")])
def test_the_mixture_card_reads_no_text_column(tmp_path, monkeypatch, style, label):
    """The card tells plain from conversational rows by the column's type, not by reading prompts."""
    out = tmp_path / "mix"
    build.build(build.BuildConfig(problems="sample", views=["cot"], prompt_style=style, output_dir=str(out)))
    read: list[str] = []
    real = artifacts._ParquetColumns.column
    monkeypatch.setattr(
        artifacts._ParquetColumns, "column", lambda self, name: read.append(name) or real(self, name)
    )
    write_dataset_card(out, "mixture")
    assert "kind" in read and not {"prompt", "completion", "question"} & set(read), read
    assert label in (out / "README.md").read_text()
