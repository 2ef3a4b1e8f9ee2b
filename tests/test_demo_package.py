"""The demo package speaks the generation engine's names, keeps its old ones working, and takes its
business rules from their one owner (no Gradio server: these run in a second)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from lema_hub.demo.config import DemoConfig
from lema_hub.demo.data import DemoData
from lema_hub.demo.handlers import DemoApp, guess_task
from lema_hub.errors import InvalidInputError
from lema_hub.generation.types import EndpointArgs


@pytest.fixture(autouse=True)
def _no_demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("LEMA_DEMO_")]:
        monkeypatch.delenv(name)


def _quiet(**kw) -> DemoConfig:
    """A config that loads no model and no dataset."""
    return DemoConfig(
        **{"lema_model": "m", "baseline_model": "none", "corrections": "none", "mistakes": "none", **kw}
    )


def test_engine_names_for_backends_urls_and_key() -> None:
    cfg = _quiet(backend="tgi", base_urls=["http://a:8080"], baseline_base_urls=["http://b:8080"])
    assert (cfg.backend, cfg.endpoint, cfg.baseline_endpoint) == ("tgi", "http://a:8080", "http://b:8080")
    assert _quiet(backend="openai", base_urls=["http://a/v1"]).baseline_endpoint == "http://a/v1"
    engine_default = next(f.default for f in fields(EndpointArgs) if f.name == "api_key_env")
    assert DemoConfig().api_key_env == engine_default == "OPENAI_API_KEY"
    for bad in ("vllm", "inference-client", "bogus"):
        with pytest.raises(InvalidInputError, match="backend must be one of transformers, openai, tgi"):
            _quiet(backend=bad)


def test_old_names_still_parse_as_deprecated_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    from lema_hub.configs import parse_config

    old = _quiet(backend="inference_client", base_url="http://a/v1", baseline_base_url="http://b/v1")
    assert (old.backend, old.base_urls, old.baseline_base_urls) == ("tgi", ["http://a/v1"], ["http://b/v1"])
    # The new name wins when both are given.
    assert _quiet(base_url="http://old", base_urls=["http://new"]).endpoint == "http://new"
    # On the command line, as `lema-hub demo` parses it.
    (cli,) = parse_config([DemoConfig], ["--backend", "inference_client", "--base_url", "http://c/v1"])
    assert (cli.backend, cli.endpoint, cli.baseline_endpoint) == ("tgi", "http://c/v1", "http://c/v1")
    # As Space variables: the old one, then the new one (comma-separated, like any list field).
    monkeypatch.setenv("LEMA_DEMO_BACKEND", "inference_client")
    monkeypatch.setenv("LEMA_DEMO_BASE_URL", "http://d/v1")
    env = _quiet()
    assert (env.backend, env.base_urls) == ("tgi", ["http://d/v1"])
    monkeypatch.setenv("LEMA_DEMO_BASE_URLS", "http://e/v1, http://f/v1")
    assert _quiet().base_urls == ["http://e/v1", "http://f/v1"]


def test_example_tasks_come_from_the_row_not_the_config_name(tmp_path: Path) -> None:
    """A mistakes row whose source the task table does not know decides by its own (numeric) gold
    answer; only a question the user typed gets the guess from its gold answer."""
    from lema_hub.artifacts import save_dataset_config

    row = dict(
        problem_id="mine/1",
        source="mine",
        question="Tom has 3 apples and buys 8 more. How many?",
        gold_answer="11",
        generator="g",
        steps=["3 + 8 = 12.", "The answer is 12."],
    )
    save_dataset_config(tmp_path / "mistakes", "mine", {"train": [row]})
    data = DemoData(_quiet(mistakes=str(tmp_path / "mistakes"), examples=[]))
    assert [(e.question, e.task) for e in data.correct_examples] == [(row["question"], "gsm8k")]
    app = DemoApp(_quiet(mistakes=str(tmp_path / "mistakes"), examples=[]))
    assert app._task_for(row["question"], "\\frac{1}{2}") == "gsm8k"  # the row's task, not a guess
    assert app._task_for("Typed by a user", "\\frac{1}{2}") == guess_task("\\frac{1}{2}") == "math"
    assert app._task_for("Typed by a user", "12") == "gsm8k"


def test_corrected_solution_is_one_rule_for_the_demo_and_the_mixture() -> None:
    """The demo's and the cot_corrected view's full solution come from lema_hub.formats; a
    correction that restates the kept steps is not doubled."""
    import lema_hub.demo
    from lema_hub.build import view_rows
    from lema_hub.demo import render
    from lema_hub.formats import corrected_solution

    assert lema_hub.demo.corrected_solution is render.corrected_solution is corrected_solution
    steps = ["Tom has 3 apples.", "3 + 8 = 12.", "The answer is 12."]
    restated = ["Tom has 3 apples.", "3 + 8 = 11.", "The answer is 11."]
    assert corrected_solution(steps, restated, 2) == restated
    assert corrected_solution(steps, restated[1:], 2) == restated
    row = dict(question="Q?", steps=steps, incorrect_step=2, corrected_steps=restated, corrected_answer="11")
    (cot,) = view_rows("cot_corrected", [], [row], "plain")
    assert cot["completion"].count("Tom has 3 apples.") == 1


def test_solve_through_an_endpoint_configured_with_the_engine_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """`base_urls` and `api_key_env` reach a real OpenAI-compatible server on 127.0.0.1: both models
    answer, graded, and the key travels from the named variable (the baseline shares the endpoint)."""
    from tests.fake_openai_server import FakeOpenAIServer

    monkeypatch.setenv("DEMO_TEST_KEY", "sk-demo-test")
    answers = {"lema": "3 + 8 = 11.\nThe answer is 11.", "cot": "3 + 8 = 12.\nThe answer is 12."}
    with FakeOpenAIServer(responder=lambda p: answers[p["model"]]) as srv:
        cfg = _quiet(
            backend="openai",
            base_urls=[srv.base_url],
            api_key_env="DEMO_TEST_KEY",
            lema_model="lema",
            baseline_model="cot",
            prompt_style="chat",
            endpoint_stream=False,  # the fake server answers in one piece
            examples=[],
        )
        base, lema = list(DemoApp(cfg).solve("Tom has 3 apples and buys 8 more. How many?", "11"))[-1]
        assert srv.auth_headers == {"Bearer sk-demo-test": 2}
    assert "lema-correct" in lema and "<b>11</b>" in lema
    assert "lema-wrong" in base and "<b>12</b>" in base
