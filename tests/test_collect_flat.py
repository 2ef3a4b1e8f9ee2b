"""collect's memory stays flat in the problems: they are read a line at a time, twice (requests,
then rows in step with the results), never held all at once with their prompts."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from lema_hub import collect as collect_stage
from lema_hub.collect import CollectConfig, collect

REPO = Path(__file__).resolve().parents[1]

_SERVER = r"""
import sys
from tests.fake_openai_server import FakeOpenAIServer

with FakeOpenAIServer() as srv:  # every path: "... The answer is 72."
    print(srv.base_url, flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


def _bulky_gsm8k(path: Path, n: int) -> None:
    """`n` GSM8K train lines, each question a few KB."""
    with path.open("w") as fh:
        for i in range(n):
            question = f"Problem {i}: how many clips? " + "Natalia sold clips to friends. " * 100
            answer = f"She sold 48 / 2 = <<48/2=24>>24 in May.\nIn all 48 + 24 = <<48+24=72>>72.\n#### {72 + i % 2}"
            fh.write(json.dumps({"question": question, "answer": answer}) + "\n")


def _peak_of_run(cfg: CollectConfig) -> tuple[int, dict]:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        summary = collect(cfg)
        return tracemalloc.get_traced_memory()[1] - base, summary
    finally:
        tracemalloc.stop()


def test_collect_peak_is_flat_in_the_problems(tmp_path, monkeypatch):
    monkeypatch.setattr(collect_stage, "_BATCH_ROWS", 64)  # batches far smaller than the run, as at scale
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        peaks, summaries = [], []
        for run, n in enumerate((200, 200, 800)):  # the first run warms up imports and caches
            train = tmp_path / f"train-{run}.jsonl"
            _bulky_gsm8k(train, n)
            cfg = CollectConfig(
                problems="gsm8k", problems_path=str(train), model="fake-generator", backend="openai",
                base_urls=[url], prompt_style="chat", concurrency=4, num_samples=2, temperature=0.7,
                output_dir=str(tmp_path / f"out-{run}"), progress=False,
            )  # fmt: skip
            peak, summary = _peak_of_run(cfg)
            peaks.append(peak)
            summaries.append(summary)
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    assert summaries[2]["problems"] == 800 and summaries[2]["samples"] == 1600
    assert summaries[2]["mistakes"] == 400  # the odd problems' gold is 73: their paths are wrong
    small, large = peaks[1:]
    # The 800 problems are 2.5 MB of text (their prompts as much again): held, they were the slope.
    assert large < 1.3 * small + 300_000, (small, large)


def test_a_problem_source_that_changes_during_the_run_is_refused(tmp_path, monkeypatch):
    """The problems are read more than once: a file edited meanwhile (a line inserted at the top)
    would pair paths with the wrong problems; the run stops with one line instead."""
    from lema_hub.errors import InvalidInputError
    from lema_hub.problems import iter_problems
    from tests.fake_openai_server import FakeOpenAIServer

    train = tmp_path / "train.jsonl"
    _bulky_gsm8k(train, 6)
    reads = []

    def edited_after_the_first_read(args):
        reads.append(1)
        if len(reads) == 2:  # someone inserts a line while the requests are drawn
            lines = train.read_text().splitlines()
            train.write_text("\n".join([lines[-1], *lines[:-1]]) + "\n")
        return iter_problems(args)

    monkeypatch.setattr(collect_stage, "iter_problems", edited_after_the_first_read)
    with FakeOpenAIServer() as srv:
        cfg = CollectConfig(
            problems="gsm8k", problems_path=str(train), model="m", backend="openai", base_urls=[srv.base_url],
            prompt_style="chat", num_samples=2, output_dir=str(tmp_path / "out"), progress=False,
        )  # fmt: skip
        with pytest.raises(InvalidInputError, match=r"changed while this run read them \(problem 0"):
            collect(cfg)
        assert srv.total_requests == 0  # refused before the first request was sent
    assert not (tmp_path / "out" / "README.md").exists()


def test_a_bad_problem_row_fails_before_any_request_is_sent(tmp_path):
    from lema_hub.errors import InvalidInputError
    from tests.fake_openai_server import FakeOpenAIServer

    train = tmp_path / "train.jsonl"
    _bulky_gsm8k(train, 40)
    lines = train.read_text().splitlines()
    lines[30] = json.dumps({"question": "No gold here?", "answer": "no final line"})
    train.write_text("\n".join(lines) + "\n")
    with FakeOpenAIServer() as srv:
        cfg = CollectConfig(
            problems="gsm8k", problems_path=str(train), model="m", backend="openai", base_urls=[srv.base_url],
            prompt_style="chat", num_samples=2, output_dir=str(tmp_path / "out"), progress=False,
        )  # fmt: skip
        with pytest.raises(InvalidInputError, match="row 30: answer has no"):
            collect(cfg)
        assert srv.total_requests == 0
