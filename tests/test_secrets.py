"""No credential reaches a dataset, a record, a card, a log or a push (issue 21, items 4 and 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lema_hub.artifacts import find_leaks, load_rows, sanitize, save_dataset_config, write_run_record
from lema_hub.collect import CollectConfig, collect
from lema_hub.problems import load_sample
from lema_hub.push import push_folder
from tests.conftest import REPO_ROOT
from tests.fake_openai_server import FakeOpenAIServer

# A key of no known shape (no sk-/hf_ prefix, short, low entropy), in an env var whose NAME says
# nothing about credentials: only the configured `api_key_env` tells where it is.
KEY = "my-secret-key-123"
KEY_ENV = "LEMA_TEST_CORRECTOR_ACCESS"
WRONG = "Step 1: 48 / 2 = 20.\nThe answer is 20."


def _every_text(folder: Path) -> dict[str, str]:
    """Each file's bytes as text, and each parquet file's decoded rows (compression can split a string)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            out[rel] = path.read_bytes().decode("utf-8", errors="replace")
            if path.suffix == ".parquet":
                out[rel + " (rows)"] = json.dumps(pq.read_table(path).to_pylist(), default=str)
    return out


def _mistakes(tmp_path: Path) -> Path:
    """A mistakes folder written by `collect` against a server that answers wrongly."""
    with FakeOpenAIServer(responder=lambda payload: WRONG) as srv:
        summary = collect(
            CollectConfig(
                problems_limit=3,
                num_samples=1,
                backend="openai",
                model="fake-model",
                base_urls=[srv.base_url],
                output_dir=str(tmp_path / "mistakes"),
                progress=False,
                max_retries=0,
            )
        )
    assert summary["mistakes"] == 3
    return tmp_path / "mistakes"


def test_correct_against_a_server_that_echoes_the_key_stores_it_nowhere(tmp_path, monkeypatch):
    mistakes = _mistakes(tmp_path)
    out = tmp_path / "corrections"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", **{KEY_ENV: KEY})
    # Half the requests get a 401 whose body echoes the Authorization header and the bare key.
    with FakeOpenAIServer(responder=lambda payload: WRONG, echo_key_401=0.5, seed=3) as srv:
        proc = subprocess.run(
            [sys.executable, "-m", "lema_hub.cli", "correct", "--mistakes", str(mistakes)]
            + ["--output_dir", str(out), "--backend", "openai", "--model", "fake-model"]
            + ["--base_urls", srv.base_url, "--api_key_env", KEY_ENV, "--num_attempts", "4"]
            + ["--max_retries", "0", "--progress", "false"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=600,
        )
        assert srv.echo_counts > 0 and srv.auth_headers[f"Bearer {KEY}"] == srv.total_requests
    assert KEY not in proc.stdout + proc.stderr, "the key reached the logs"
    texts = _every_text(out)
    assert any(name.endswith(".parquet (rows)") for name in texts)
    assert [name for name, text in texts.items() if KEY in text] == []
    failed = [r for r in load_rows(str(out), "sample-rejected") if r["reject_reason"] == "generation_failed"]
    assert len(failed) == srv.echo_counts
    # The reason is still useful: the status and the server's words, with the key cut out.
    assert all(
        r["reject_detail"].startswith("HTTP 401") and "<redacted>" in r["reject_detail"] for r in failed
    )
    # What push would upload: the guard (which knows the configured key from the run record) is clean.
    monkeypatch.setenv(KEY_ENV, KEY)
    assert find_leaks(out) == []


def test_push_guard_refuses_a_configured_key_of_any_shape(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    folder = tmp_path / "leaky"
    rows = [
        {"problem_id": f"p{i}", "reject_detail": f"HTTP 401: bad key {KEY} (attempt {i})"} for i in range(50)
    ]
    save_dataset_config(folder, "sample", {"train": rows})
    write_run_record(folder, {"api_key_env": KEY_ENV, "model": "m"}, {"n": 50}, recipe="correct")
    leaks = find_leaks(folder)
    assert leaks and all("token-like" in leak and KEY not in leak for leak in leaks)
    assert any(leak.startswith("data/sample/") for leak in leaks)
    with pytest.raises(ValueError, match="Refusing to push"):
        push_folder(folder, "me/leaky")  # refused before any request is made


def test_push_guard_refuses_bearer_headers_and_url_passwords(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.json").write_text('{"log": "Authorization: Bearer abc-123-def-456"}')
    (folder / "b.txt").write_text("endpoint http://bob:hunter2x@example.org/v1")
    (folder / "c.txt").write_text("The bearer bonds are worth 12 dollars; the answer is 12.")
    flagged = {leak.split(":")[0] for leak in find_leaks(folder)}
    assert flagged == {"a.json", "b.txt"}


SECRET_TEXTS = [
    ("Error code: 401 - {'message': 'Incorrect API key provided: Bearer q7-xyz-0011'}", "q7-xyz-0011"),
    ("request failed: Authorization: Basic YWxpY2U6cHctczNjcmV0LTc3", "YWxpY2U6cHctczNjcmV0LTc3"),
    ("GET /v1?api_key=plainpass99&api-version=2024-06-01 -> 403", "plainpass99"),
    ('{"password": "correct horse", "client_secret": "s3cr3t-v4lue"}', "s3cr3t-v4lue"),
    ("token=abcdEFGH1234 expired", "abcdEFGH1234"),
    ("see http://alice:pw-s3cret-77@10.0.0.1:8000/v1 for details", "pw-s3cret-77"),
    ("x-api-key: 9fKq2LmZx8Rt4WbNc7Hs1Yd3Pv", "9fKq2LmZx8Rt4WbNc7Hs1Yd3Pv"),
    ("rejected sk-proj-AbCdEfGhIjKlMnOpQrStUv012345", "AbCdEfGhIjKlMnOpQrStUv012345"),
    ("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 leaked", "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
]
PLAIN_TEXTS = [
    "Natalia sold 48/2 = 24 clips in May. The answer is 72.",
    "$\\frac{1}{2} + \\sqrt{3x^2} = \\boxed{\\dfrac{\\sqrt{3}}{2}}$, max_tokens=512, token: 42",
    "model HuggingFaceTB/SmolLM2-135M-Instruct and deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "sha256 3f5a0c9e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0, 12345678901234567890123",
    "The bearer of the note pays 15 dollars; https://huggingface.co/datasets/openai/gsm8k?row=3",
]


def test_scrubbing_hides_credentials_but_not_math():
    for text, secret in SECRET_TEXTS:
        scrubbed = sanitize({"detail": text})["detail"]
        assert secret not in scrubbed and "<redacted>" in scrubbed, text
    for text in PLAIN_TEXTS:
        assert sanitize({"detail": text})["detail"] == text


def test_scrubbing_leaves_real_problems_and_solutions_alone(shared_data):
    """Every line of the real data (GSM8K, MATH, SVAMP, ASDiv, the paper's prompts and eval files,
    ProcessBench's model-written steps) and the bundled sample comes out of the scrubber unchanged."""
    from lema_hub.configs import scrub_secrets

    texts = [t for p in load_sample("train") + load_sample("test") for t in (p.question, p.gold_solution)]
    for path in sorted(shared_data.rglob("*.jsonl")):
        texts += path.read_text(encoding="utf-8").splitlines()
    for path in sorted(shared_data.glob("processbench/*.json")):
        texts += [t for row in json.loads(path.read_text()) for t in (row["problem"], *row["steps"])]
    texts += [path.read_text(encoding="utf-8") for path in sorted(shared_data.rglob("*.txt"))]
    assert len(texts) > 40_000
    assert [t[:80] for t in texts if scrub_secrets(t) != t] == []


def test_url_credentials_never_reach_a_record_or_card(tmp_path, capfd):
    """`base_urls: [http://user:pw@host]` (item 5): redacted in the config record, summary, card, logs."""
    out = tmp_path / "mistakes"
    with FakeOpenAIServer(responder=lambda payload: WRONG) as srv:
        url = srv.root_url.replace("http://", "http://alice:pw-s3cret-77@")
        collect(
            CollectConfig(
                problems_limit=2,
                num_samples=1,
                backend="tgi",
                model="fake-model",
                base_urls=[url],
                output_dir=str(out),
                progress=False,
                max_retries=0,
            )
        )
        assert srv.success_counts.total() == 2  # the credentials in the URL did work
    logs = capfd.readouterr()
    texts = _every_text(out) | {"stdout": logs.out, "stderr": logs.err}
    assert {"lema_hub_config.yaml", "run_summary.json", "README.md"} <= set(texts)
    assert [name for name, text in texts.items() if "pw-s3cret-77" in text or "alice" in text] == []
    assert f"http://<redacted>@127.0.0.1:{srv.port}" in texts["lema_hub_config.yaml"]
    # Query tokens too; harmless query values stay.
    write_run_record(out, {"base_urls": ["https://h.example/v1?api_key=q-7777777&api-version=2024"]}, {}, "x")
    record = (out / "lema_hub_config.yaml").read_text()
    assert "q-7777777" not in record and "api_key=<redacted>&api-version=2024" in record
