"""The demo app, served on 127.0.0.1 and driven through gradio_client (what the UI calls).

Two apps: one runs the tiny random model locally (structure, limits, Browse, examples), one talks
to a real OpenAI-compatible HTTP server on 127.0.0.1 with fixed answers (verdicts and a parsed
correction, which random weights cannot produce).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fake_openai_server import FakeOpenAIServer

TINY_MODEL = "tiny:smollm2"
QUESTION = "Tom buys 3 pens at $2 each and a $5 notebook. How much does he pay?"
GOLD = "11"
WRONG_SOLUTION = "Step 1: The pens cost 3 * 2 = 7 dollars.\nStep 2: With the notebook, 7 + 5 = 12.\nStep 3: The answer is 12."
BASELINE_ANSWER = (
    "The pens cost 3 * $2 = $7. With the $5 notebook he pays 7 + 5 = 12 dollars. The answer is 12."
)
LEMA_ANSWER = (
    "The pens cost \\(3 \\times 2 = 6\\) dollars, so $6 for the pens.\n"
    "With the $5 notebook he pays 6 + 5 = 11 dollars.\nThe answer is 11."
)
CORRECTION = (
    " Step 1.\nExplanation: 3 * 2 is 6, not 7, so the pens cost $6.\nCorrect Solution:\n{\n"
    "Step 1: The pens cost 3 * 2 = 6 dollars.\nStep 2: With the notebook, 6 + 5 = 11.\n"
    "Step 3: The answer is 11.\n}"
)


def responder(payload: dict[str, Any]) -> str:
    """Fixed answers by served model name and prompt kind (the endpoint under test is ours; this is its model)."""
    text = payload["messages"][-1]["content"] if "messages" in payload else payload["prompt"]
    if text.rstrip().endswith("Incorrect Step:"):
        return CORRECTION
    return LEMA_ANSWER if payload["model"] == "lema" else BASELINE_ANSWER


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def correction_rows() -> list[dict[str, Any]]:
    """Correction records in the dataset schema (two generators, two step positions)."""
    base = dict(
        source="sample",
        split="train",
        gold_solution="3 * 2 = 6\n6 + 5 = 11\n#### 11",
        gold_answer=GOLD,
        level=None,
        subject=None,
        sample_index=0,
        completion=WRONG_SOLUTION,
        verdict="wrong",
        sampling={"temperature": 0.8, "top_p": 1.0, "max_tokens": 64, "seed": 0},
        finish_reason="stop",
        prompt_tokens=10,
        completion_tokens=20,
        corrector="reference",
        corrector_prompt="reference@sha256:000000000000",
        accepted=True,
        reject_reason=None,
        reference_step=1,
        question=QUESTION,
    )
    return [
        dict(
            base,
            problem_id="sample/train/0",
            generator="gen-a",
            predicted_answer="12",
            steps=["The pens cost 3 * 2 = 7 dollars.", "With the notebook, 7 + 5 = 12.", "The answer is 12."],
            raw_output=CORRECTION,
            incorrect_step=1,
            explanation="3 * 2 is 6, not 7.",
            corrected_steps=[
                "The pens cost 3 * 2 = 6 dollars.",
                "With the notebook, 6 + 5 = 11.",
                "The answer is 11.",
            ],
            corrected_answer="11",
        ),
        dict(
            base,
            problem_id="sample/train/1",
            generator="gen-b",
            predicted_answer="10",
            steps=["The pens cost 3 * 2 = 6 dollars.", "With the notebook, 6 + 5 = 10.", "The answer is 10."],
            raw_output="",
            incorrect_step=2,
            explanation="6 + 5 is 11.",
            reference_step=2,
            corrected_steps=["With the notebook, 6 + 5 = 11.", "The answer is 11."],
            corrected_answer="11",
        ),
    ]


def make_datasets(root: Path) -> tuple[Path, Path]:
    """A corrections folder and a mistakes folder in the Hub layout (written by lema_hub.artifacts)."""
    from lema_hub.artifacts import save_dataset_config

    rows = correction_rows()
    corrections, mistakes = root / "corrections", root / "mistakes"
    save_dataset_config(corrections, "sample", {"train": rows})
    save_dataset_config(
        corrections, "sample-rejected", {"train": [dict(rows[0], accepted=False, generator="gen-x")]}
    )
    keep = (
        "problem_id",
        "source",
        "split",
        "question",
        "gold_solution",
        "gold_answer",
        "level",
        "subject",
        "generator",
        "sample_index",
        "completion",
        "steps",
        "predicted_answer",
        "verdict",
    )
    save_dataset_config(mistakes, "sample", {"train": [{k: r[k] for k in keep} for r in rows]})
    return corrections, mistakes


def serve(cfg: Any) -> tuple[Any, str]:
    from lema_hub.demo import build_demo, launch_kwargs

    demo = build_demo(cfg)
    demo.lema_app.preload()
    kwargs = launch_kwargs(cfg)
    kwargs.update(prevent_thread_lock=True, quiet=True, ssr_mode=False)
    _, url, _ = demo.launch(**kwargs)
    return demo, url


@contextlib.contextmanager
def endpoint_demo(corrections: Path, mistakes: Path) -> Iterator[tuple[Any, str, FakeOpenAIServer]]:
    """The demo served on 127.0.0.1 with both models behind a real OpenAI-compatible endpoint."""
    from lema_hub.demo import DemoConfig

    with FakeOpenAIServer(responder=responder) as srv:
        cfg = DemoConfig(
            backend="openai",
            base_url=srv.base_url,
            lema_model="lema",
            baseline_model="baseline",
            corrections=str(corrections),
            mistakes=str(mistakes),
            endpoint_stream=False,
            port=free_port(),
        )
        demo, url = serve(cfg)
        try:
            yield demo, url, srv
        finally:
            demo.close()


@pytest.fixture(scope="module")
def datasets_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_datasets(tmp_path_factory.mktemp("demo-data"))


@pytest.fixture(scope="module")
def local_app(tiny_model: str, datasets_dir: tuple[Path, Path]):
    from gradio_client import Client

    from lema_hub.demo import DemoConfig

    corrections, mistakes = datasets_dir
    cfg = DemoConfig(
        lema_model=tiny_model,
        baseline_model=tiny_model,
        corrections=str(corrections),
        mistakes=str(mistakes),
        examples=["sample"],
        max_new_tokens=12,
        correction_max_new_tokens=16,
        max_question_chars=300,
        port=free_port(),
    )
    demo, url = serve(cfg)
    try:
        yield demo, Client(url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def endpoint_app(datasets_dir: tuple[Path, Path]):
    from gradio_client import Client

    with endpoint_demo(*datasets_dir) as (demo, url, srv):
        yield demo, Client(url, verbose=False), srv


# ------------------------------------------------------------------------------------ local model
def test_every_event_has_an_api_name(local_app) -> None:
    demo, client = local_app
    api = client.view_api(print_info=False, return_format="dict")
    assert not api["unnamed_endpoints"]
    assert {"/solve", "/correct", "/pick_example", "/pick_mistake", "/browse", "/browse_next"} <= set(
        api["named_endpoints"]
    )
    for dep in demo.config["dependencies"]:
        assert dep["api_name"], dep


def test_math_delimiters_leave_dollar_amounts_alone(local_app) -> None:
    demo, _ = local_app
    markdowns = [c["props"] for c in demo.config["components"] if c["type"] == "markdown"]
    assert markdowns
    for props in markdowns:
        lefts = {d["left"] for d in props["latex_delimiters"]}
        assert "$" not in lefts and {"$$", "\\("} <= lefts


def test_solve_streams_numbered_steps_for_both_models(local_app) -> None:
    _, client = local_app
    job = client.submit(QUESTION, GOLD, api_name="/solve")
    updates = list(job)  # every streamed update
    baseline, lema = job.result()
    # Streamed: a first update while the models are still generating, then the final panels.
    assert len(updates) >= 2 and "generating" in updates[0][1], updates[0]
    for panel, title in ((baseline, "Baseline (CoT)"), (lema, "LeMa")):
        assert title in panel and TINY_MODEL in panel
        assert 'class="lema-steps' in panel
        assert "lema-verdict" in panel  # graded against the gold answer (random weights: never ✓)
        assert "lema-correct" not in panel


def test_over_long_question_gets_a_message(local_app) -> None:
    _, client = local_app
    baseline, lema = client.predict("7 + 8 = ? " * 100, "", api_name="/solve")
    assert "accepts up to 300" in lema and "lema-notice" in lema
    original, fix, _, parsed = client.predict("What is 2 + 2?", "x" * 5000, "", api_name="/correct")
    assert "accepts up to 4,000" in original and parsed["error"]
    _, lema = client.predict("What is 2 + 2?", "4" * 500, api_name="/solve")
    assert "gold answer is 500 characters long" in lema


def test_correct_shows_original_and_the_models_output(local_app) -> None:
    _, client = local_app
    original, fix, baseline, parsed = client.predict(QUESTION, WRONG_SOLUTION, GOLD, api_name="/correct")
    assert original.count("data-step=") == 3 and "3 * 2 = 7" in original
    assert "LeMa correction" in fix and "Raw model output" in fix
    assert "Baseline (CoT) attempt" in baseline
    assert set(parsed) >= {
        "incorrect_step",
        "explanation",
        "corrected_steps",
        "corrected_answer",
        "raw_output",
    }


def test_examples_fill_the_inputs(local_app) -> None:
    demo, client = local_app
    app = demo.lema_app
    label = next(iter(app._examples))
    question, gold = client.predict(label, api_name="/pick_example")
    assert question and gold
    mistake = next(iter(app._mistakes))
    question, solution, gold, note = client.predict(mistake, api_name="/pick_mistake")
    assert question == QUESTION and solution.startswith("Step 1:") and gold == GOLD
    assert "A wrong path by gen-" in note and "(sample/train/" in note


def test_browse_filters_and_renders_a_correction(local_app) -> None:
    _, client = local_app
    table, view, index, count = client.predict("any", "any", "any", "2", 1, api_name="/browse")
    assert [row[0] for row in table["data"]] == ["sample/train/1"]
    assert '<div class="lema-step lema-flagged" data-step="2">' in view
    assert "6 + 5 is 11." in view and "lema-correct" in view
    assert "1 of 2 corrections match" in count
    table, view, index, count = client.predict("sample", "gen-a", "any", "any", 1, api_name="/browse_next")
    assert index["value"] == 1 and [row[0] for row in table["data"]] == ["sample/train/0"]  # clamped
    assert index["label"] == "Row (1–1)"
    assert "Row 2 does not exist: rows go from 1 to 1" in view
    # Rows are numbered from 1; a negative or zero row gets a line and row 1, not an error.
    table, view, index, _ = client.predict("any", "any", "any", "any", -3, api_name="/browse")
    assert (
        index["value"] == 1
        and "Row -3 does not exist: rows go from 1 to 2" in view
        and "lema-flagged" in view
    )
    table, view, _, count = client.predict("sample", "gen-a", "any", "2", 1, api_name="/browse")
    assert "No corrections match" in view and "0 of 2 corrections match" in count


# ------------------------------------------------------------------------------------ endpoint
def test_endpoint_solve_grades_both_answers(endpoint_app) -> None:
    _, client, _ = endpoint_app
    baseline, lema = client.predict(QUESTION, GOLD, api_name="/solve")
    assert "lema-wrong" in baseline and "✗ <b>12</b>" in baseline
    assert "lema-correct" in lema and "✓ <b>11</b>" in lema
    assert lema.count("data-step=") == 3 and "$5 notebook" in lema


def test_endpoint_correction_is_parsed_and_highlighted(endpoint_app) -> None:
    _, client, srv = endpoint_app
    original, fix, baseline, parsed = client.predict(QUESTION, WRONG_SOLUTION, GOLD, api_name="/correct")
    assert parsed["incorrect_step"] == 1 and parsed["corrected_answer"] == "11"
    assert parsed["explanation"].startswith("3 * 2 is 6")
    assert '<div class="lema-step lema-flagged" data-step="1">' in original
    assert "Incorrect step: <b>Step 1</b>" in fix and "lema-fixed" in fix and "✓ <b>11</b>" in fix
    assert "✗ <b>12</b>" in baseline
    assert srv.total_requests >= 2
    # The wrong solution is a row of the corrections dataset: its own correction is shown beside LeMa's.
    assert "The dataset's correction (by reference): <b>step 1</b> — the same step" in fix
    assert "3 * 2 is 6, not 7." in fix.split("lema-reference", 1)[1]
    assert "took " in fix  # elapsed time


def test_page_says_what_to_expect_and_where_to_go(endpoint_app) -> None:
    demo, _, _ = endpoint_app
    markdowns = [c["props"].get("value") or "" for c in demo.config["components"] if c["type"] == "markdown"]
    page = "\n".join(str(m) for m in markdowns)
    assert "What to expect" in page and "lema-hub demo --lema_model" in page  # larger models
    assert "Why a baseline attempt?" in page
    # Result panels start with a placeholder, so Gradio's queue text has room to show.
    for elem in ("solve-lema", "solve-baseline", "correct-fix", "correct-original", "correct-baseline"):
        props = next(c["props"] for c in demo.config["components"] if c["props"].get("elem_id") == elem)
        assert "lema-placeholder" in props["value"], elem
    boxes = {
        c["props"].get("elem_id"): c["props"] for c in demo.config["components"] if c["type"] == "textbox"
    }
    assert boxes["correct-solution"]["max_length"] == 4000 and boxes["solve-question"]["max_length"] == 1500
    assert "Shift+Enter" in boxes["solve-question"]["info"] and "right answer" in boxes["solve-gold"]["info"]
    from lema_hub.demo import CSS

    assert "margin: auto" not in CSS


# ------------------------------------------------------------------------------------ Space folder
def test_space_folder_is_self_contained(tmp_path: Path, repo_root: Path, tiny_model: str) -> None:
    from lema_hub.demo import DemoConfig, prepare_space_folder

    out = prepare_space_folder(tmp_path / "space", DemoConfig(lema_model="someone/lema-smollm2-gsm8k"))
    assert {"app.py", "requirements.txt", "README.md"} <= {p.name for p in out.iterdir()}
    readme = (out / "README.md").read_text()
    assert readme.startswith("---") and "sdk: gradio" in readme and "app_file: app.py" in readme
    assert "someone/lema-smollm2-gsm8k" in readme
    # Licence facts: the code's (LICENSE travels with the bundled package) and each data source's.
    assert (out / "LICENSE").read_text() == (repo_root / "LICENSE").read_text()
    assert "Apache License" in (out / "LICENSE").read_text() and "license: apache-2.0" in readme
    assert "ASDiv: CC BY-NC 4.0" in readme and "GSM8K, MATH and SVAMP: MIT" in readme
    # The app imports the bundled copy of the package and builds the Blocks (without serving).
    env = dict(
        os.environ,
        LEMA_DEMO_LEMA_MODEL=tiny_model,
        LEMA_DEMO_BASELINE_MODEL="none",
        LEMA_DEMO_CORRECTIONS="none",
        LEMA_DEMO_MISTAKES="none",
        PYTHONPATH="",
    )
    code = (
        "import runpy; ns = runpy.run_path('app.py'); import lema_hub; "
        "print(lema_hub.__file__); print(type(ns['demo']).__name__)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=out, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "Blocks" and Path(lines[-2]).resolve().is_relative_to(out.resolve())


def test_committed_space_readme_is_generated(repo_root: Path, tmp_path: Path) -> None:
    from lema_hub.demo import DemoConfig, write_space_readme

    fresh = write_space_readme(tmp_path, DemoConfig()).read_text()
    assert (repo_root / "spaces" / "demo" / "README.md").read_text() == fresh, (
        "regenerate with: python -c 'from lema_hub.demo import write_space_readme; write_space_readme(\"spaces/demo\")'"
    )


# ------------------------------------------------------------------------------------ streaming endpoint
class _SSEHandler(BaseHTTPRequestHandler):
    """`/v1/chat/completions` with `stream: true`: server-sent events, one chunk per word."""

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert payload["stream"] is True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        words = responder(payload).split(" ")
        for i, word in enumerate(words):
            delta = {"content": word + (" " if i < len(words) - 1 else "")}
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": payload["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
        self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_streamed_endpoint_answers_are_assembled() -> None:
    from lema_hub.demo import DemoApp, DemoConfig

    server = ThreadingHTTPServer(("127.0.0.1", 0), _SSEHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = DemoConfig(
            backend="openai",
            base_url=f"http://127.0.0.1:{server.server_port}/v1",
            lema_model="lema",
            baseline_model="baseline",
            corrections="none",
            mistakes="none",
        )
        baseline, lema = list(DemoApp(cfg).solve(QUESTION, GOLD))[-1]
        assert "✓ <b>11</b>" in lema and "✗ <b>12</b>" in baseline
        assert "$5 notebook" in lema
    finally:
        server.shutdown()


def test_inference_client_backend_solves_through_a_real_endpoint(repo_root: Path) -> None:
    """backend inference_client: huggingface_hub's InferenceClient against an endpoint on 127.0.0.1.

    huggingface_hub refuses every request under HF_HUB_OFFLINE=1 (set for the whole suite), even to
    a self-hosted server, so the client runs in a subprocess with offline mode off; the endpoint is
    still on loopback.
    """
    code = f"""
from lema_hub.demo import DemoApp, DemoConfig
import sys
cfg = DemoConfig(backend="inference_client", base_url=sys.argv[1], lema_model="lema", baseline_model="baseline",
                 corrections="none", mistakes="none", prompt_style="chat", endpoint_stream=False)
baseline, lema = list(DemoApp(cfg).solve({QUESTION!r}, {GOLD!r}))[-1]
print("LEMA", lema)
print("BASELINE", baseline)
"""
    with FakeOpenAIServer(responder=responder) as srv:
        env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1"}
        base_url = srv.base_url.removesuffix("/v1")
        proc = subprocess.run(
            [sys.executable, "-c", code, base_url],
            capture_output=True,
            text=True,
            env=env,
            cwd=repo_root,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "✓ <b>11</b>" in proc.stdout and "✗ <b>12</b>" in proc.stdout
        assert sum(srv.request_counts.values()) >= 2  # both models were asked through the endpoint


# ------------------------------------------------------------------------------------ runaway corrections
LOOP_STEP = "She fills 1500 * 3 = 4500 boxes, then packs them into crates of 50."
LOOPING_CORRECTION = " Step 1.\nExplanation: 3 * 2 is 6, not 7.\nCorrect Solution:\n{\n" + "".join(
    f"Step {i}: {LOOP_STEP}\n" for i in range(1, 400)
)
TRAILING_JUNK = "Question: an unrelated follow-up the model invents after the block"


class _CorrectionSSE(BaseHTTPRequestHandler):
    """Streams `text` word by word (a correction model that may loop or run on)."""

    text = ""

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        text = type(self).text if payload["model"] == "lema" else BASELINE_ANSWER
        try:
            for word in text.split(" "):
                chunk = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": payload["model"],
                    "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            done = dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
            self.wfile.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        except (BrokenPipeError, ConnectionResetError):  # the demo stopped reading: what we want
            pass

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _streaming_app(text: str) -> Iterator[Any]:
    from lema_hub.demo import DemoApp, DemoConfig

    _CorrectionSSE.text = text
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CorrectionSSE)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = DemoConfig(
            backend="openai",
            base_url=f"http://127.0.0.1:{server.server_port}/v1",
            lema_model="lema",
            baseline_model="baseline",
            corrections="none",
            mistakes="none",
            correction_max_new_tokens=100_000,  # only the demo's own stops can end the loop
        )
        yield DemoApp(cfg)
    finally:
        server.shutdown()
        server.server_close()


def test_a_looping_correction_is_stopped_and_drawn_unfinished() -> None:
    with _streaming_app(LOOPING_CORRECTION) as app:
        original, fix, _, parsed = list(app.correct(QUESTION, WRONG_SOLUTION, GOLD))[-1]
    # Stopped after the step was said twice, not after 400 repeats.
    assert parsed["raw_output"].count(LOOP_STEP) == 2, parsed["raw_output"][-300:]
    assert "Unfinished rewrite: generation stopped because the model started repeating itself" in fix
    assert "Correct solution (unfinished)" in fix and "lema-unfinished" in fix
    assert "note: no_answer" not in fix and "stopped after" in fix


def test_a_correction_stops_at_the_closing_brace() -> None:
    with _streaming_app(CORRECTION + "\n" + " ".join([TRAILING_JUNK] * 50)) as app:
        _, fix, _, parsed = list(app.correct(QUESTION, WRONG_SOLUTION, GOLD))[-1]
    assert parsed["raw_output"].rstrip().endswith("}") and TRAILING_JUNK not in parsed["raw_output"]
    assert parsed["corrected_answer"] == "11" and "Unfinished" not in fix and "took " in fix


def test_stop_rules_and_rewrite_budget() -> None:
    from lema_hub.demo import correction_stop, correction_token_budget, is_repeating

    stop = correction_stop(3)
    head = " Step 1.\nExplanation: x.\nCorrect Solution:\n{\n"
    assert stop(head + "Step 1: a = 6.\nStep 2: b = 11.\n") is None
    assert stop(head + "Step 1: a = 6.\nStep 2: The answer is 11.\n}") == "complete"
    assert stop(head + "".join(f"Step {i}: value {i * 7} is new here.\n" for i in range(1, 8))) == "too_long"
    assert is_repeating("Step 3: " + LOOP_STEP + "\nStep 4: " + LOOP_STEP + "\n")
    assert not is_repeating("Step 3: " + LOOP_STEP + "\nStep 4: " + LOOP_STEP)  # last line still growing
    # The rewrite's budget follows the original's length (never more than the configured cap).
    assert correction_token_budget("x" * 300, 512) == 96 + 200
    assert correction_token_budget("x" * 3000, 512) == 512
    assert correction_token_budget("short", 512) == 96 + 2


def test_repository_licence_and_citation_agree_with_pyproject(repo_root: Path) -> None:
    import re

    import yaml

    pyproject = (repo_root / "pyproject.toml").read_text()
    project = {k: re.search(rf'^{k} = "([^"]+)"', pyproject, re.M).group(1) for k in ("license", "version")}
    assert project["license"] == "Apache-2.0"
    assert "Apache License\n                           Version 2.0" in (repo_root / "LICENSE").read_text()
    cff = yaml.safe_load((repo_root / "CITATION.cff").read_text())
    assert cff["license"] == project["license"] and cff["version"] == project["version"]
    assert cff["preferred-citation"]["url"] == "https://arxiv.org/abs/2310.20689"
