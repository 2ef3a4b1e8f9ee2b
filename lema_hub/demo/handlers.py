"""The demo's state and handlers (plain functions: the UI and the API call the same code)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from lema_hub.corrector.parse import parse_correction
from lema_hub.demo.config import DemoConfig
from lema_hub.demo.data import DemoData
from lema_hub.demo.inference import (
    Generation,
    ModelRunner,
    _answer_complete,
    _correction_complete,
    _resolve_model_name,
    correction_stop,
    correction_token_budget,
    trim_correction,
)
from lema_hub.demo.render import (
    REJECT_WORDS,
    STOP_REASONS,
    _header,
    _notice,
    _status,
    _text_html,
    render_step_cards,
    render_verdict,
)
from lema_hub.formats import corrected_solution, correction_prompt, cot_prompt, split_steps
from lema_hub.grading import extract_answer, grade


def guess_task(gold: str | None) -> str:
    """The task of a question typed by the user (no row to ask): "math" when the gold answer is
    not a plain number, else "gsm8k". Examples from a dataset use their row's own task instead."""
    return "math" if gold and not re.fullmatch(r"[-\d.,/ ]+", gold) else "gsm8k"


def _grade_answer(text: str, gold: str | None, task: str) -> tuple[str | None, str | None]:
    if gold:
        v = grade(text, gold, task)
        return v.predicted_answer, v.verdict
    return extract_answer(text, task), None


def _panel(runner: ModelRunner, gen: Generation | None, gold: str | None, task: str, role: str) -> str:
    """A model's answer panel: header, step cards, verdict or status."""
    head = _header(role, runner.display_name)
    if gen is None:
        return head + _status("waiting…")
    steps = split_steps(gen.text) if gen.text.strip() else []
    if not gen.done.is_set():
        return head + render_step_cards(steps, cursor=True) + _status(f"generating… {gen.elapsed:.0f} s")
    if gen.error:
        return head + render_step_cards(steps) + _notice(f"Generation failed: {gen.error}", "error")
    predicted, verdict = _grade_answer(gen.text, gold, task)
    return head + render_step_cards(steps) + render_verdict(predicted, gold, verdict) + _stopped_line(gen)


def _stopped_line(gen: Generation) -> str:
    """ "Took 12 s" and, unless the answer simply finished, why generation stopped."""
    reason = gen.stop_reason
    if reason in (None, "complete"):
        return _status(f"took {gen.elapsed:.0f} s")
    return _status(f"stopped after {gen.elapsed:.0f} s: {STOP_REASONS.get(reason, reason)}")


def _stream(gens: list[Generation], render: Callable[[], Any], deadline_s: float) -> Iterator[Any]:
    """Yield renders while generations run (throttled), then the final render; cancel on exit."""
    deadline = time.monotonic() + deadline_s
    try:
        while not all(g.done.is_set() for g in gens) and time.monotonic() < deadline:
            yield render()
            time.sleep(0.25)
        for g in gens:
            if not g.done.is_set():
                g.cancel("time")
                g.done.wait(5)
        yield render()
    finally:
        for g in gens:
            g.cancel()


MAX_GOLD_CHARS = 200


def _check_gold(gold: str | None) -> str | None:
    if gold and len(gold) > MAX_GOLD_CHARS:
        return f"The gold answer is {len(gold):,} characters long; this demo accepts up to {MAX_GOLD_CHARS}."
    return None


class DemoApp:
    """The demo's state and handlers; `build_demo` wires them to Gradio components."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.notes: list[str] = []
        lema, note = _resolve_model_name(cfg.lema_model, cfg)
        if lema is None:
            raise ValueError("lema_model must be set")
        self.lema_is_fallback = note is not None
        if note:
            self.notes.append(f"LeMa model: {note}.")
        baseline, bnote = _resolve_model_name(cfg.baseline_model, cfg)
        if bnote:
            self.notes.append(f"Baseline: {bnote}.")
        runners: dict[str, ModelRunner] = {}

        def runner(name: str, shown: str, url: str | None) -> ModelRunner:
            key = f"{name}@{url}"
            if key not in runners:  # one loaded copy when both roles resolve to the same model
                runners[key] = ModelRunner(name, shown, cfg, url)
            return runners[key]

        self.lema = runner(lema, lema, cfg.endpoint)
        self.baseline = runner(baseline, baseline, cfg.baseline_endpoint) if baseline else None
        self.data = DemoData(cfg)
        self.notes += self.data.notes
        self._examples = {e.label: e for e in self.data.solve_examples}
        self._mistakes = {e.label: e for e in self.data.correct_examples}

    def preload(self) -> None:
        for r in {id(r): r for r in (self.lema, self.baseline) if r}.values():
            r.load()

    # Solve ------------------------------------------------------------------------------------
    def pick_example(self, label: str | None) -> tuple[str, str]:
        ex = self._examples.get(label or "")
        return (ex.question, ex.gold or "") if ex else ("", "")

    def _task_for(self, question: str, gold: str | None) -> str:
        """An example's own task (from its row's source); a guess only for a question the user typed."""
        for ex in (*self._examples.values(), *self._mistakes.values()):
            if ex.question == question:
                return ex.task
        return guess_task(gold)

    def solve(self, question: str, gold: str = "") -> Iterator[tuple[str, str]]:
        question, gold = (question or "").strip(), (gold or "").strip() or None
        problem = self._check_question(question) or _check_gold(gold)
        if problem:
            msg = _notice(problem)
            yield (msg if self.baseline else "", msg)
            return
        task = self._task_for(question, gold)
        prompt = cot_prompt(question)
        lema_gen = self.lema.start(prompt, self.cfg.max_new_tokens, _answer_complete)
        base_gen = (
            self.baseline.start(prompt, self.cfg.max_new_tokens, _answer_complete) if self.baseline else None
        )
        gens = [g for g in (base_gen, lema_gen) if g]

        def render() -> tuple[str, str]:
            base = _panel(self.baseline, base_gen, gold, task, "Baseline (CoT)") if self.baseline else ""
            return base, _panel(self.lema, lema_gen, gold, task, "LeMa")

        yield from _stream(gens, render, self.cfg.generation_timeout_s + 30)

    def _check_question(self, question: str) -> str | None:
        if not question:
            return "Type a question or pick an example."
        if len(question) > self.cfg.max_question_chars:
            return (
                f"The question is {len(question):,} characters long; this demo accepts up to "
                f"{self.cfg.max_question_chars:,}. Please shorten it."
            )
        return None

    # Correct ----------------------------------------------------------------------------------
    def pick_mistake(self, label: str | None) -> tuple[str, str, str, str]:
        """(question, wrong solution, gold, where the wrong solution comes from)."""
        ex = self._mistakes.get(label or "")
        if ex is None:
            return "", "", "", ""
        return ex.question, ex.solution or "", ex.gold or "", _status(ex.note) if ex.note else ""

    def correct(self, question: str, solution: str, gold: str = "") -> Iterator[tuple[str, str, str, dict]]:
        """Yields (original with the flagged step, LeMa's correction, baseline attempt, parsed fields)."""
        question, solution, gold = (
            (question or "").strip(),
            (solution or "").strip(),
            (gold or "").strip() or None,
        )
        problem = self._check_question(question) or _check_gold(gold)
        if not problem and not solution:
            problem = "Paste a wrong solution (one step per line) or pick an example."
        if not problem and len(solution) > self.cfg.max_solution_chars:
            problem = (
                f"The solution is {len(solution):,} characters long; this demo accepts up to "
                f"{self.cfg.max_solution_chars:,}. Please shorten it."
            )
        steps = split_steps(solution) if not problem else []
        if not problem and not steps:
            problem = "No steps found in the solution."
        if problem:
            yield _notice(problem), "", "", {"error": problem}
            return
        task = self._task_for(question, gold)
        budget = correction_token_budget(solution, self.cfg.correction_max_new_tokens)
        lema_gen = self.lema.start(correction_prompt(question, steps), budget, correction_stop(len(steps)))
        base_gen = (
            self.baseline.start(cot_prompt(question), self.cfg.max_new_tokens, _answer_complete)
            if self.baseline
            else None
        )
        gens = [g for g in (lema_gen, base_gen) if g]

        def render() -> tuple[str, str, str, dict]:
            original_head = _header("Original solution", f"{len(steps)} steps")
            base = (
                _panel(self.baseline, base_gen, gold, task, "Baseline (CoT) attempt") if self.baseline else ""
            )
            if not lema_gen.done.is_set():
                partial = "Incorrect Step:" + lema_gen.text
                body = f'<pre class="lema-raw">{html.escape(partial)}<span class="lema-cursor">▌</span></pre>'
                return (
                    original_head + render_step_cards(steps),
                    _header("LeMa correction", self.lema.display_name)
                    + body
                    + _status(f"generating… {lema_gen.elapsed:.0f} s"),
                    base,
                    {},
                )
            return (
                self._render_correction(steps, lema_gen, gold, task, question)
                + (base,)
                + (self._parsed(lema_gen, steps),)
            )

        yield from _stream(gens, render, self.cfg.generation_timeout_s + 30)

    def _parse(self, gen: Generation, steps: list[str]) -> Any:
        return parse_correction(trim_correction(gen.text), len(steps))

    def _parsed(self, gen: Generation, steps: list[str]) -> dict:
        if gen.error:
            return {"error": gen.error}
        p = self._parse(gen, steps)
        keys = ("incorrect_step", "explanation", "corrected_steps", "corrected_answer", "reject_reason")
        out = {k: getattr(p, k, None) for k in keys}
        out["raw_output"] = trim_correction(gen.text)
        return out

    def _render_correction(
        self, steps: list[str], gen: Generation, gold: str | None, task: str, question: str = ""
    ) -> tuple[str, str]:
        original_head = _header("Original solution", f"{len(steps)} steps")
        head = _header("LeMa correction", self.lema.display_name)
        if gen.error:
            return original_head + render_step_cards(steps), head + _notice(
                f"Generation failed: {gen.error}", "error"
            )
        p = self._parse(gen, steps)
        k = getattr(p, "incorrect_step", None)
        corrected = list(getattr(p, "corrected_steps", None) or [])
        raw = (
            '<details class="lema-rawbox"><summary>Raw model output</summary>'
            f'<pre class="lema-raw">Incorrect Step:{html.escape(trim_correction(gen.text))}</pre></details>'
        )
        original = original_head + render_step_cards(steps, flagged=k, mode="original")
        if k is None:
            reason = getattr(p, "reject_reason", None) or "no incorrect step found"
            detail = getattr(p, "detail", "")
            message = f"The model's output is not in the correction format ({reason}{': ' + detail if detail else ''})."
            if self.lema_is_fallback:
                message += (
                    f" {self.lema.name} is the fallback model, never trained on corrections: "
                    "train a LeMa model with `lema-hub quickstart` or pass `--lema_model`."
                )
            return (
                original,
                head
                + _notice(message)
                + _stopped_line(gen)
                + self._reference_html(question, steps, None)
                + raw.replace("<details ", "<details open ", 1),
            )
        explanation = getattr(p, "explanation", "") or ""
        answer = getattr(p, "corrected_answer", None)
        verdict = None
        if gold and answer is not None:
            verdict = grade(f"The answer is {answer}.", gold, task).verdict
        finished = gen.stop_reason == "complete" or _correction_complete(gen.text)
        cards = render_step_cards(corrected_solution(steps, corrected, k), mode="corrected", kept_before=k)
        if not finished:
            why = STOP_REASONS.get(gen.stop_reason or "", "the output ended before its closing `}`")
            cards = (
                '<div class="lema-unfinished">'
                + cards
                + f'<div class="lema-unfinished-note">Unfinished rewrite: generation stopped because {html.escape(why)}.</div></div>'
            )
        body = (
            f'<div class="lema-flag">Incorrect step: <b>Step {k}</b></div>'
            f'<div class="lema-explain"><span class="lema-explain-label">Explanation</span>{_text_html(explanation)}</div>'
            + _header("Correct solution" if finished else "Correct solution (unfinished)")
            + cards
            + render_verdict(answer, gold, verdict)
        )
        reject = getattr(p, "reject_reason", None)
        if reject and reject in REJECT_WORDS:
            body += _status(REJECT_WORDS[reject])
        return original, head + body + _stopped_line(gen) + self._reference_html(question, steps, k) + raw

    def _reference_html(self, question: str, steps: list[str], flagged: int | None) -> str:
        """For a wrong solution from the datasets: the dataset's own correction beside LeMa's flag."""
        ref = self.data.reference_for(question, steps)
        if ref is None:
            return ""
        k = ref.get("incorrect_step")
        agree = (
            ""
            if flagged is None or k is None
            else (" — the same step" if k == flagged else f" — LeMa flagged step {flagged}")
        )
        who = html.escape(str(ref.get("corrector") or "the corrector"))
        fixed = corrected_solution(steps, list(ref.get("corrected_steps") or []), k) if k else []
        return (
            '<details class="lema-reference" open><summary>The dataset\'s correction '
            f"(by {who}): <b>step {k}</b>{agree}</summary>"
            f'<div class="lema-explain"><span class="lema-explain-label">Explanation</span>{_text_html(str(ref.get("explanation") or ""))}</div>'
            + render_step_cards(fixed, mode="corrected", kept_before=k)
            + "</details>"
        )
