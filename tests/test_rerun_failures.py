"""A re-run whose requests fail never replaces a finished artifact, and says how many failed and why.

Every generation stage (collect, correct, evolve, evaluate) writes a finished folder against a live
server on 127.0.0.1, then runs again with a cache miss (a changed sampling setting) against an
endpoint that is down (a port with nothing listening) or refuses the key (HTTP 401): every file of
the folder must stay byte-for-byte as it was, and the run must fail with the count and the cause.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from lema_hub.run_guard import RequestOutcome, RequestsFailed, cause_of, is_permanent
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_collect import graded_responder

REPO = Path(__file__).resolve().parents[1]
KEY = "test-secret-key-0123456789"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of the artifact (the request cache aside: it only ever grows)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(folder).parts
    }


def dead_url() -> str:
    """An endpoint with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class _Refuse(BaseHTTPRequestHandler):
    """Answers every request 401, echoing the bearer key in the body (as some servers do)."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"error": {"message": f"Invalid API key: {self.headers.get('Authorization')}", "code": 401}}
        ).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        pass


class RefusingServer:
    def __enter__(self) -> RefusingServer:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


ENDPOINT = dict(
    backend="openai", model="fake-model", prompt_style="chat", concurrency=4, request_timeout=5,
    max_retries=1, retry_base_delay=0.01, retry_max_delay=0.02, progress=False,
)  # fmt: skip


def endpoint(config_type: type, **kw) -> dict:
    """ENDPOINT and `kw`, less what `config_type` has no field for."""
    names = {f.name for f in dataclasses.fields(config_type)}
    return {k: v for k, v in {**ENDPOINT, **kw}.items() if k in names}


# ------------------------------------------------------------------------------------------ collect
def _collect_config(tmp_path: Path, url: str, **kw) -> Path:
    cfg = dict(
        problems="sample", problems_split="train", problems_limit=3, output_dir=str(tmp_path / "mistakes"),
        base_urls=[url], num_samples=4, temperature=0.8, max_tokens=64, seed=0, **ENDPOINT,
    )  # fmt: skip
    cfg.update(kw)
    path = tmp_path / f"collect-{len(list(tmp_path.glob('collect-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cli(stage: str, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "lema_hub.cli", stage, "--config", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def finished_mistakes(tmp_path) -> Path:
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        proc = _cli("collect", _collect_config(tmp_path, srv.base_url))
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "mistakes"
    assert {"README.md", "run_summary.json", "lema_hub_config.yaml"} <= set(snapshot(folder))
    return folder


def test_collect_rerun_against_a_dead_endpoint_keeps_the_finished_folder(tmp_path, finished_mistakes):
    before = snapshot(finished_mistakes)
    # temperature changed: every request misses the cache, and the endpoint is down.
    proc = _cli("collect", _collect_config(tmp_path, dead_url(), temperature=0.7))
    assert proc.returncode != 0
    assert snapshot(finished_mistakes) == before
    assert "collect: 12 of 12 requests failed: 12 x connection failed" in proc.stderr
    assert "Rerun the same command to retry them" in proc.stderr  # a server that is down may come back
    assert "nothing written" in proc.stderr and "Traceback" not in proc.stderr


def test_collect_rerun_refused_by_the_server_says_401_once_and_not_to_rerun(tmp_path, finished_mistakes):
    before = snapshot(finished_mistakes)
    with RefusingServer() as srv:
        proc = _cli("collect", _collect_config(tmp_path, srv.base_url, temperature=0.7))
    assert proc.returncode != 0
    assert snapshot(finished_mistakes) == before
    assert proc.stderr.count("12 of 12 requests failed: 12 x HTTP 401") == 1  # progress: false, still said
    assert "Rerunning as is will not help" in proc.stderr and "Rerun the same command" not in proc.stderr
    assert KEY not in proc.stderr and "Traceback" not in proc.stderr


def test_collect_into_a_fresh_folder_with_every_request_failing_writes_nothing(tmp_path):
    proc = _cli("collect", _collect_config(tmp_path, dead_url()))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "12 of 12 requests failed" in proc.stderr
    assert snapshot(tmp_path / "mistakes") == {}  # no card with `configs: []`, no run record


def test_partial_runs_publish_resume_and_never_shrink_a_finished_folder(tmp_path, monkeypatch):
    import datasets.config

    from lema_hub.collect import CollectConfig, collect

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")

    def plain_load() -> int:  # what users type; its cache is keyed on the folder name and the YAML
        return len(datasets.load_dataset(str(folder), "sample-samples", split="train"))

    def cfg(url: str, **kw) -> CollectConfig:
        return CollectConfig(
            **yaml.safe_load(_collect_config(tmp_path, url, write_card=False, **kw).read_text())
        )

    folder = tmp_path / "mistakes"
    # A first run where some requests fail for good still publishes what succeeded (resumable).
    with FakeOpenAIServer(responder=graded_responder(), fault_rate=0.5, faults=("500",), seed=3) as srv:
        first = collect(cfg(srv.base_url, max_retries=0))
    req = first["requests"]["sample"]
    assert 0 < req["failed"] < 12 and first["samples"] == req["succeeded"] == 12 - req["failed"]
    assert plain_load() == req["succeeded"]
    # The rerun takes the successes from the cache and retries only the failures.
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        second = collect(cfg(srv.base_url))
        assert srv.total_requests == req["failed"]
    assert second["samples"] == 12 and second["requests"]["sample"]["failed"] == 0
    assert plain_load() == 12  # the rows on disk now, not the first run's
    finished = snapshot(folder)
    # Changed sampling against a flaky server: fewer successes than the finished run -> refused.
    with FakeOpenAIServer(responder=graded_responder(), fault_rate=0.5, faults=("500",), seed=3) as srv:
        with pytest.raises(RequestsFailed, match="the earlier run had 12 successful requests") as exc:
            collect(cfg(srv.base_url, max_retries=0, temperature=0.7))
    assert 0 < exc.value.outcome.generated < 12 and exc.value.code != 0
    assert snapshot(folder) == finished


def test_a_partial_first_run_is_written_and_the_cli_exits_1(tmp_path):
    """So `sbatch --dependency=afterok` (or `set -e`) does not go on with half a dataset; the rerun
    that finishes it exits 0."""
    with FakeOpenAIServer(responder=graded_responder(), fault_rate=0.5, faults=("500",), seed=3) as srv:
        proc = _cli("collect", _collect_config(tmp_path, srv.base_url, max_retries=0))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    failed = json.loads((tmp_path / "mistakes" / "run_summary.json").read_text())["collect"][
        "failed_requests"
    ]
    assert 0 < failed < 12
    assert f"lema-hub collect: exit 1: {failed} request(s) failed; the rows that succeeded are written" in (
        proc.stderr
    )
    with FakeOpenAIServer(responder=graded_responder()) as srv:
        proc = _cli("collect", _collect_config(tmp_path, srv.base_url))
        assert srv.total_requests == failed
    assert proc.returncode == 0 and "exit 1" not in proc.stderr


# ------------------------------------------------------------------------------------------ correct
def _corrections_responder(rows: list[dict]):
    from lema_hub import formats
    from lema_hub.corrector.reference import reference_correction

    def respond(payload: dict) -> str:
        text = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
        row = max(rows, key=lambda r: text.rfind(r["question"]))
        fix = reference_correction(row, list(row["steps"]))
        if fix is None:
            return "I cannot tell."
        return formats.correction_target(fix.incorrect_step, fix.explanation, fix.corrected_steps)

    return respond


def test_correct_rerun_against_a_dead_endpoint_keeps_the_accepted_corrections(tmp_path):
    from lema_hub.correct import CorrectConfig, correct
    from tests.test_correct import _mistakes_folder

    mistakes, rows = _mistakes_folder(tmp_path)
    out = tmp_path / "corrections"

    def cfg(url: str, **kw) -> CorrectConfig:
        return CorrectConfig(
            mistakes=str(mistakes), output_dir=str(out), base_urls=[url], **endpoint(CorrectConfig, **kw)
        )

    with FakeOpenAIServer(responder=_corrections_responder(rows)) as srv:
        done = correct(cfg(srv.base_url))
    assert done["accepted"] >= 1 and done["requests"]["sample"]["failed"] == 0
    before = snapshot(out)
    with pytest.raises(RequestsFailed) as exc:
        correct(cfg(dead_url(), temperature=0.3))
    assert exc.value.code != 0
    assert f"correct: {len(rows)} of {len(rows)} requests failed: {len(rows)} x connection failed" in str(
        exc.value
    )
    assert snapshot(out) == before  # not "0 accepted + N generation_failed"


# ------------------------------------------------------------------------------------------- evolve
def test_evolve_rerun_against_a_dead_endpoint_keeps_the_evolved_problems(tmp_path):
    from lema_hub.evolve import EvolveConfig, evolve
    from tests.test_evolve import _corrections_folder, responder

    out = tmp_path / "evolved"

    def cfg(url: str, **kw) -> EvolveConfig:
        return EvolveConfig(
            corrections=_corrections_folder(tmp_path), num_seeds=8, seed=1, output_dir=str(out),
            base_urls=[url], **endpoint(EvolveConfig, **kw),
        )  # fmt: skip

    with FakeOpenAIServer(responder=responder) as srv:
        assert evolve(cfg(srv.base_url))["kept"] >= 1
    before = snapshot(out)
    with pytest.raises(RequestsFailed, match="evolve: 8 of 8 requests failed: 8 x connection failed"):
        evolve(cfg(dead_url(), evolve_temperature=0.5))
    assert snapshot(out) == before


# ----------------------------------------------------------------------------------------- evaluate
def test_evaluate_rerun_keeps_each_finished_config_whose_requests_failed(tmp_path):
    from lema_hub.evaluate import EvalConfig, evaluate

    out = tmp_path / "eval"

    def cfg(urls: list[str], models: list[str], **kw) -> EvalConfig:
        return EvalConfig(
            models=models, problems="sample", problems_limit=3, output_dir=str(out),
            **endpoint(EvalConfig, base_urls=urls, **kw),
        )  # fmt: skip

    responder = lambda payload: "We add them up. The answer is 4."  # noqa: E731
    with FakeOpenAIServer(responder=responder) as srv:
        evaluate(cfg([srv.base_url], ["m-a"]))
    before = snapshot(out)
    with pytest.raises(RequestsFailed, match="3 of 3 requests failed: 3 x connection failed"):
        evaluate(cfg([dead_url()], ["m-a"], max_new_tokens=100))
    assert snapshot(out) == before
    # Two models, one unreachable for it: m-b's requests come from its cache, m-a's fail. m-b's
    # config is written, m-a's stays as it was, and the run still fails.
    details = sorted(p for p in before if p.startswith("data/m-a-sample/"))
    with RefusingServer() as refusing:
        with pytest.raises(RequestsFailed, match="HTTP 401"):
            evaluate(cfg([refusing.base_url], ["m-a"], max_new_tokens=100))
    assert snapshot(out) == before
    with FakeOpenAIServer(responder=responder) as srv:
        evaluate(cfg([srv.base_url], ["m-b"], max_new_tokens=100))
    with pytest.raises(RequestsFailed, match=r"evaluate \[m-a\]: 3 of 3 requests failed"):
        evaluate(cfg([dead_url()], ["m-a", "m-b"], max_new_tokens=100))
    after = snapshot(out)
    assert sorted(p for p in after if p.startswith("data/m-a-sample/")) == details
    assert all(after[p] == before[p] for p in details)
    assert set(json.loads(after["results.json"])) == {"m-a-sample", "m-b-sample"}


# ------------------------------------------------------------------------------------ the helpers
def test_failure_causes_and_advice():
    assert cause_of("gave up after 7 attempts: HTTP 503: busy") == "HTTP 503"
    assert cause_of("HTTP 401: Error code: 401") == "HTTP 401"
    assert (
        cause_of("gave up after 2 attempts: connection failed: ConnectionRefusedError: x")
        == "connection failed"
    )
    assert [is_permanent(c) for c in ("HTTP 401", "HTTP 403", "HTTP 404", "HTTP 429", "HTTP 500", "timeout")] == [
        True, True, True, False, False, False,
    ]  # fmt: skip

    class R:
        def __init__(self, error):
            self.error, self.text = error, None if error else "ok"

    o = RequestOutcome("collect")
    o.add([R(None), R("HTTP 401: bad key"), R("HTTP 401: bad key")], {"cached": 1})
    assert (o.total, o.cached, o.generated, o.failed) == (3, 1, 0, 2) and o.permanent
    assert "2 of 3 requests failed: 2 x HTTP 401" in o.report() and "will not help" in o.report()
    o.add([R("gave up after 7 attempts: HTTP 500: oops")])
    assert not o.permanent and "Fix the permanent errors first" in o.advice()
