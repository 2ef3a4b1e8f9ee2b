"""Training rows and views; end to end: mistakes -> corrections -> mixture through a loopback endpoint."""

from __future__ import annotations

import json
import re

import pytest

from lema_hub import formats
from lema_hub.artifacts import load_rows
from lema_hub.build import (
    VIEWS,
    BuildConfig,
    build,
    correction_completion,
    decontaminate,
    ngrams,
    view_rows,
)
from lema_hub.collect import CollectConfig, collect
from lema_hub.correct import CorrectConfig, correct
from lema_hub.corrector.reference import reference_correction
from lema_hub.problems import load_sample
from tests.fake_openai_server import FakeOpenAIServer

PROBLEMS = {p.question: p for p in load_sample("train")}


def _correction_row() -> dict:
    p = load_sample("train")[0]  # 4*18=72, 72-15=57, 57/3=19
    steps = formats.gold_steps(p)
    wrong = [
        steps[0],
        "After giving some away she has 72 - 15 = 47 cookies left.",
        steps[2],
        "The answer is 19.",
    ]
    fix = reference_correction(p.to_dict(), wrong)
    return {
        **p.to_dict(),
        "steps": wrong,
        "incorrect_step": fix.incorrect_step,
        "explanation": fix.explanation,
        "corrected_steps": fix.corrected_steps,
        "corrected_answer": fix.corrected_answer,
        "generator": "g",
        "corrector": "reference",
        "accepted": True,
    }


def test_correction_row_in_the_paper_format_and_its_ablations():
    row = _correction_row()
    prompt, completion = correction_completion(row, "lema")
    assert prompt.startswith(formats.CORRECTION_INSTRUCTION) and prompt.endswith("}\nIncorrect Step:")
    assert (
        completion.startswith(" Step 2.\nExplanation: ")
        and "\nCorrect Solution:\n{\n...\nStep 2: " in completion
    )
    assert completion.endswith("Step 4: The answer is 19.\n}")
    p2, c2 = correction_completion(row, "no_explanation")
    assert p2 == prompt and "Explanation:" not in c2 and c2.startswith(" Step 2.\nCorrect Solution:")
    p3, c3 = correction_completion(row, "no_corrected_solution")
    assert p3 == prompt and "Correct Solution" not in c3 and c3.startswith(" Step 2.\nExplanation:")
    p4, c4 = correction_completion(row, "no_incorrect_step")
    assert "Incorrect Step:" not in p4 and c4.startswith("Explanation:") and "Correct Solution:" in c4


@pytest.mark.parametrize("style", ["plain", "chat"])
def test_views(style):
    row = _correction_row()
    from lema_hub.build import gold_cot_rows

    cot = gold_cot_rows(load_sample("train")[:3], style)
    assert cot[0]["completion"] == (
        "Maya bakes 4 * 18 = 72 cookies. After giving some away she has 72 - 15 = 57 cookies left. "
        "She fills 57 / 3 = 19 bags. The answer is 19."
        if style == "plain"
        else [{"role": "assistant", "content": cot[0]["completion"][0]["content"]}]
    )
    counts = {v: len(view_rows(v, cot, [row], style)) for v in VIEWS}
    assert counts == {v: (3 if v == "cot" else 4) for v in VIEWS}
    corrected = view_rows("cot_corrected", cot, [row], style)[-1]
    text = corrected["completion"] if style == "plain" else corrected["completion"][0]["content"]
    assert (
        corrected["kind"] == "cot"
        and text.startswith("Maya bakes 4 * 18 = 72 cookies.")
        and text.endswith("The answer is 19.")
    )
    if style == "chat":
        assert corrected["prompt"][0]["role"] == "user"


def test_decontamination_by_8gram():
    rows = [{"question": q, "kind": "cot"} for q in ("a b c d e f g h i", "z y x w v u t s")]
    kept, dropped = decontaminate(rows, ["one two a b c d e f g h three"], 8)
    assert [r["question"] for r in kept] == ["z y x w v u t s"] and dropped == {"cot": 1}
    assert ngrams("a b c", 8) == set()


# ------------------------------------------------------------------------------------- end to end
def _prompt_text(payload: dict) -> str:
    if "messages" in payload:
        return payload["messages"][-1]["content"]
    return payload["prompt"] if isinstance(payload["prompt"], str) else payload["prompt"][0]


def _wrong_path(p) -> str:
    steps = formats.gold_steps(p)
    head, _, seg = steps[0].rpartition("=")
    n = re.search(r"\d+(?:\.\d+)?", seg).group(0)
    steps[0] = f"{head}= {float(n) + 1000:g}{seg[seg.index(n) + len(n) :]}"
    steps[-1] = formats.cot_target("", str(float(p.gold_answer) + 1000 + 0.5))
    return " ".join(steps)


def responder(payload: dict) -> str:
    """A loopback 'LLM': wrong CoT paths for collection, reference-quality corrections (some spoiled)."""
    text = _prompt_text(payload)
    if "Original Solution:" not in text:  # a CoT prompt: answer most problems wrongly
        q = text.split("Question: ", 1)[1].rsplit("\nAnswer:", 1)[0]
        p = PROBLEMS[q]
        return (
            formats.cot_target(" ".join(formats.gold_steps(p)[:-1]), p.gold_answer)
            if q.startswith("A train")
            else _wrong_path(p)
        )
    block = text.rsplit("\n\nQuestion: ", 1)[1]
    q = block.split("\nOriginal Solution:", 1)[0]
    p = PROBLEMS[q]
    steps = [s for _, s in formats.parse_rendered_steps(block.split("Original Solution:", 1)[1])]
    fix = reference_correction(p.to_dict(), steps)
    idx = list(PROBLEMS).index(q)
    if idx % 4 == 1:
        return "I am not sure what is wrong here."  # parse_error
    corrected = list(fix.corrected_steps)
    if idx % 4 == 2:
        corrected[-1] = formats.cot_target("", "123456")  # wrong_answer
    return "**" + formats.correction_target(fix.incorrect_step, fix.explanation, corrected).strip().replace(
        "\n", "\r\n"
    )


def test_end_to_end_mistakes_corrections_mixture(tmp_path):
    n_problems = 8
    with FakeOpenAIServer(responder=responder) as srv:
        mistakes = collect(
            CollectConfig(
                problems="sample",
                problems_limit=n_problems,
                output_dir=str(tmp_path / "mistakes"),
                backend="openai",
                model="fake-model",
                base_urls=[srv.base_url],
                prompt_style="plain",
                num_samples=2,
                temperature=0.7,
                max_tokens=128,
                progress=False,
            )
        )
        samples = load_rows(str(tmp_path / "mistakes"), "sample-samples")
        wrong = load_rows(str(tmp_path / "mistakes"), "sample")  # de-duplicated by collect
        assert len(samples) == 2 * n_problems and len(wrong) == n_problems - 1
        cfg = CorrectConfig(
            mistakes=mistakes["output_dir"],
            output_dir=str(tmp_path / "corrections"),
            backend="openai",
            model="fake-model",
            base_urls=[srv.base_url],
            prompt_style="chat",
            num_attempts=2,
            temperature=0.7,
            progress=False,
        )
        summary = correct(cfg)
        requests_first = srv.total_requests
        # Resume: a second run is served from the engine's cache, with identical results.
        again = correct(cfg)
        assert srv.total_requests == requests_first
    assert {k: again[k] for k in ("n", "accepted", "reject_reasons")} == {
        k: summary[k] for k in ("n", "accepted", "reject_reasons")
    }
    assert summary["n"] == 2 * len(wrong) == summary["accepted"] + summary["rejected"]
    assert sum(summary["reject_reasons"].values()) == summary["rejected"]
    assert set(summary["reject_reasons"]) == {"parse_error", "wrong_answer"}
    assert summary["reference_agreement"]["rate"] == 1.0
    assert summary["tokens"]["completion_tokens"] > 0
    accepted = load_rows(summary["output_dir"], "sample")
    rejected = load_rows(summary["output_dir"], "sample-rejected")
    assert len(accepted) == summary["accepted"] > 0 and len(rejected) == summary["rejected"]
    assert {r["attempt"] for r in accepted} == {0, 1}
    assert all(
        re.fullmatch(r"lema-hub/corrector_gsm8k@sha256:[0-9a-f]{12}", r["corrector_prompt"]) for r in accepted
    )

    out = build(
        BuildConfig(
            problems="sample",
            problems_limit=n_problems,
            corrections=summary["output_dir"],
            output_dir=str(tmp_path / "mixture"),
            mistakes=mistakes["output_dir"],
            include_correct_samples=True,
            decontaminate="sample_test",
        )
    )
    n_cot = n_problems + out["sample_cot_rows"]
    # The one solved problem's 2 correct paths repeat its gold rationale: both are dropped as duplicates.
    assert out["sample_duplicates_dropped"] == 2 and out["sample_cot_rows"] == 0
    views = out["views"]
    assert views["cot"] == {"cot": n_cot, "correction": 0, "total": n_cot}
    for v in ("lema", "no_explanation", "no_incorrect_step", "no_corrected_solution"):
        assert views[v] == {
            "cot": n_cot,
            "correction": summary["accepted"],
            "total": n_cot + summary["accepted"],
        }
    assert views["cot_corrected"]["cot"] == n_cot + summary["accepted"]
    assert out["decontamination"]["dropped_cot_rows"] == 0
    lema = load_rows(out["output_dir"], "sample-lema")
    assert len(lema) == views["lema"]["total"]
    assert {r["kind"] for r in lema} == {"cot", "correction"}
    for r in lema:
        assert isinstance(r["prompt"], str) and isinstance(r["completion"], str)
    record = json.loads((tmp_path / "mixture" / "run_summary.json").read_text())
    assert record["build"]["views"] == views
