"""collect's memory stays flat in the problems: they are read a line at a time, twice (requests,
then rows in step with the results), never held all at once with their prompts."""

from __future__ import annotations

import json
import subprocess
import sys
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


_MEASURED = r"""
import json, sys, tracemalloc
from pathlib import Path
from lema_hub import collect as collect_stage
from lema_hub.collect import CollectConfig, collect

collect_stage._BATCH_ROWS = 64  # batches far smaller than the run, as at scale
url, folder = sys.argv[1], Path(sys.argv[2])
out = []
for run, n in enumerate((200, 200, 800)):  # the first run warms up imports and caches
    cfg = CollectConfig(
        problems="gsm8k", problems_path=str(folder / f"train-{n}.jsonl"), model="fake-generator",
        backend="openai", base_urls=[url], prompt_style="chat", concurrency=4, num_samples=2,
        temperature=0.7, output_dir=str(folder / f"out-{run}"), progress=False,
    )
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    summary = collect(cfg)
    out.append({"peak": tracemalloc.get_traced_memory()[1] - base, **{k: summary[k] for k in ("problems", "samples", "mistakes")}})
    tracemalloc.stop()
print(json.dumps(out))
"""


def test_collect_peak_is_flat_in_the_problems(tmp_path):
    # In a fresh process: what earlier tests left (log handlers, caches) is not this run's memory.
    for n in (200, 800):
        _bulky_gsm8k(tmp_path / f"train-{n}.jsonl", n)
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURED, url, str(tmp_path)],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs[2] | {"peak": 0} == {"peak": 0, "problems": 800, "samples": 1600, "mistakes": 400}
    small, large = runs[1]["peak"], runs[2]["peak"]
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
