"""What the paper-scale benchmark relies on: its simulated LLM, and memory that does not pile up."""

from __future__ import annotations

import pytest

from lema_hub import artifacts, formats
from lema_hub.cards.dataset import write_dataset_card
from lema_hub.collect import CollectConfig, collect
from lema_hub.corrector.parse import parse_correction
from lema_hub.generation import RequestCache
from lema_hub.grading import grade
from tests.fake_openai_server import FakeOpenAIServer


def test_simulated_llm_answers_in_the_lema_formats(shared_data, monkeypatch):
    from benchmarks import scale

    monkeypatch.setattr(scale, "DATA", shared_data)
    llm = scale.SimulatedLLM()
    problems = list(llm.by_question.values())[:60]
    wrong = fixed = 0
    for p in problems:
        for seed in range(4):
            path = llm.cot(p.question, seed)
            verdict = grade(path, p.gold_answer).verdict
            if verdict == "correct":
                assert path == llm.gold_completion(p)
                continue
            assert verdict == "wrong"
            wrong += 1
            steps = formats.split_steps(path)
            prompt = "few-shot ...\n\n" + formats.corrector_query(p.question, steps)
            parsed = parse_correction(llm.correction(prompt, bad=False), len(steps))
            assert parsed.ok, parsed.reject_reason
            fixed += grade("\n".join(parsed.corrected_steps), p.gold_answer).verdict == "correct"
    assert 0.3 * 240 < wrong < 0.7 * 240  # about half of the paths are wrong
    assert fixed == wrong  # a good correction continues with the gold steps and reaches gold


def test_list_schedule_is_the_makespan_of_the_slots():
    from benchmarks.scale import list_schedule

    assert list_schedule([1.0] * 4, 2) == 2.0
    assert list_schedule([3.0, 1.0, 1.0, 1.0], 2) == 3.0  # the long one sets the end
    assert list_schedule([1.0, 1.0, 1.0, 3.0], 2) == 4.0  # ... and a late long one is the tail


def test_a_closed_cache_keeps_its_results_on_disk_not_in_memory(tmp_path):
    path = tmp_path / "requests.jsonl"
    cache = RequestCache(path)
    cache.put("k", {"text": "x"})
    assert len(cache) == 1
    cache.close()
    assert len(cache) == 0  # a finished stage does not keep every result twice
    with RequestCache(path) as again:
        assert again.get("k") == {"text": "x"}


def test_the_card_reads_only_the_columns_its_statistics_use(tmp_path, monkeypatch):
    with FakeOpenAIServer() as srv:
        out = tmp_path / "lema-mistakes"
        collect(
            CollectConfig(
                problems="sample", problems_limit=4, output_dir=str(out), backend="openai", model="fake-model",
                base_urls=[srv.base_url], prompt_style="chat", num_samples=2, progress=False, write_card=False,
            )
        )  # fmt: skip
    read: list[str] = []
    real = artifacts._ParquetColumns.column
    monkeypatch.setattr(
        artifacts._ParquetColumns, "column", lambda self, name: read.append(name) or real(self, name)
    )
    write_dataset_card(out, "mistakes")
    text = (out / "README.md").read_text()
    assert "fake-model" in text  # the per-generator table came from the `generator` column
    assert {"verdict", "generator", "problem_id"} <= set(read)
    # The free-text columns of every row are never loaded as a whole.
    assert not {"question", "gold_solution", "completion"} & set(read), read


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
