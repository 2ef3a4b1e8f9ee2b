"""The demo's HTML: step cards, verdict colours, notices, correction records, the page CSS."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from lema_hub.formats import corrected_solution
from lema_hub.models import is_hub_id

# `$` alone is never a delimiter: GSM8K money ("$5 each, $10 total") must stay plain text.
LATEX_DELIMITERS: list[dict[str, Any]] = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]


def _hub_link(name: str | None, kind: str) -> str:
    """Markdown for a model/dataset: a Hub link for Hub ids, the name otherwise."""
    if not name:
        return "—"
    if not is_hub_id(name):
        return f"`{name}`"
    prefix = "datasets/" if kind == "dataset" else ""
    return f"[{name}](https://huggingface.co/{prefix}{name})"


# --------------------------------------------------------------------------------------------
# Rendering: steps as numbered cards (HTML inside gr.Markdown, so KaTeX still renders math)
# --------------------------------------------------------------------------------------------


def _text_html(text: str) -> str:
    # One raw-HTML line (no blank lines) so markdown never reinterprets model text.
    return html.escape(text.strip()).replace("\n", "<br>")


def render_step_cards(
    steps: list[str],
    flagged: int | None = None,
    mode: str = "plain",
    first_number: int = 1,
    kept_before: int | None = None,
    cursor: bool = False,
) -> str:
    """Numbered step cards. `flagged` (1-based) is marked as the mistake (mode "original");
    in mode "corrected", steps numbered >= `kept_before` are marked as rewritten."""
    if not steps:
        return (
            '<div class="lema-steps lema-empty">…</div>'
            if cursor
            else '<div class="lema-steps lema-empty">(no steps)</div>'
        )
    cards = []
    for offset, step in enumerate(steps):
        number = first_number + offset
        classes = ["lema-step"]
        badge = ""
        if mode == "original" and flagged is not None:
            if number == flagged:
                classes.append("lema-flagged")
                badge = '<span class="lema-badge lema-badge-bad">✗ incorrect step</span>'
            elif number > flagged:
                classes.append("lema-after")
        if mode == "corrected" and kept_before is not None:
            if number >= kept_before:
                classes.append("lema-fixed")
                badge = (
                    '<span class="lema-badge lema-badge-good">corrected</span>'
                    if number == kept_before
                    else ""
                )
            else:
                classes.append("lema-kept")
        last = cursor and offset == len(steps) - 1
        cards.append(
            f'<div class="{" ".join(classes)}" data-step="{number}">'
            f'<span class="lema-num">{number}</span>'
            f'<div class="lema-text">{_text_html(step)}{"<span class=lema-cursor>▌</span>" if last else ""}</div>'
            f"{badge}</div>"
        )
    return '<div class="lema-steps">' + "".join(cards) + "</div>"


def render_verdict(predicted: str | None, gold: str | None, verdict: str | None) -> str:
    """A coloured line: ✓ / ✗ against the gold answer, or just the answer when gold is unknown."""
    shown = html.escape(predicted) if predicted else "no final answer"
    if verdict is None or not gold:
        return f'<div class="lema-verdict lema-neutral">Answer: <b>{shown}</b></div>'
    gold_html = html.escape(gold)
    if verdict == "correct":
        return f'<div class="lema-verdict lema-correct">✓ <b>{shown}</b> — matches the gold answer {gold_html}</div>'
    if verdict == "wrong":
        return f'<div class="lema-verdict lema-wrong">✗ <b>{shown}</b> — the gold answer is {gold_html}</div>'
    return (
        f'<div class="lema-verdict lema-neutral">? <b>{shown}</b> — could not grade (gold: {gold_html})</div>'
    )


def _notice(text: str, kind: str = "warn") -> str:
    body = re.sub(r"`([^`<>]+)`", r"<code>\1</code>", html.escape(text))
    return f'<div class="lema-notice lema-notice-{kind}">{body}</div>'


# Tooltips for the words on the page that are the method's jargon.
_TIPS = {
    "Baseline (CoT)": "CoT = chain of thought. This model was fine-tuned on worked solutions only, with the "
    "same budget as the LeMa model but no mistake-correction pairs.",
    "Baseline (CoT) attempt": "The CoT baseline cannot correct a solution; it solves the question itself.",
    "LeMa": "Fine-tuned on worked solutions plus mistake-correction pairs (Learning From Mistakes).",
    "LeMa correction": "The LeMa model names the first wrong step, explains it and rewrites the solution from there.",
}


def _header(title: str, subtitle: str = "") -> str:
    sub = f'<span class="lema-sub">{html.escape(subtitle)}</span>' if subtitle else ""
    tip = f' title="{html.escape(_TIPS[title])}"' if title in _TIPS else ""
    return f'<div class="lema-head"><span class="lema-title"{tip}>{html.escape(title)}</span>{sub}</div>'


def _status(text: str) -> str:
    return f'<div class="lema-status">{html.escape(text)}</div>'


# --------------------------------------------------------------------------------------------
# Inference: local transformers with a streamer, or an endpoint

# Why a generation stopped, in words for the page.
STOP_REASONS = {
    "complete": "the answer is complete",
    "repeating": "the model started repeating itself",
    "too_long": "the rewrite grew well past the original's length",
    "length": "it reached the token limit",
    "time": "it reached the time limit",
    "cancelled": "you pressed Stop",
}


# The corrector's reject reasons (lema_hub.schema.REJECT_REASONS), in words for the page.
REJECT_WORDS = {
    "no_answer": "The rewrite states no final answer (no “The answer is …” line).",
    "inconsistent_steps": "The rewrite's step numbers do not continue from the flagged step.",
    "empty_explanation": "The model gave no explanation for the flagged step.",
    "step_out_of_range": "The flagged step number is not a step of this solution.",
    "parse_error": "The output is not in the correction format.",
}


def render_correction_row(row: dict) -> str:
    """One correction record: question, original with the mistake highlighted, explanation, fix."""
    steps = list(row.get("steps") or [])
    k = row.get("incorrect_step")
    corrected = list(row.get("corrected_steps") or [])
    meta = " · ".join(
        f"{name}: {html.escape(str(row[key]))}"
        for name, key in (
            ("problem", "problem_id"),
            ("generator", "generator"),
            ("corrector", "corrector"),
            ("level", "level"),
            ("subject", "subject"),
        )
        if row.get(key) not in (None, "")
    )
    gold = str(row.get("gold_answer") or "") or None
    answer = row.get("corrected_answer")
    verdict = None if not gold else ("correct" if row.get("accepted") else "wrong")
    full = corrected_solution(steps, corrected, k) if k else corrected
    ref = row.get("reference_step")
    ref_note = ""
    if ref is not None and k is not None:
        ref_note = (
            '<div class="lema-status"><span title="A rule-based check, no model involved: it compares the '
            'numbers of each step with the gold solution and reports the first step that departs from it." '
            'style="text-decoration: underline dotted">'
            f"Rule-based check</span>: first wrong step {ref} ({'agrees' if ref == k else 'disagrees'})</div>"
        )
    return (
        f'<div class="lema-question"><span class="lema-explain-label">Question</span>{_text_html(row.get("question", ""))}</div>'
        f'<div class="lema-meta">{meta}</div>'
        '<div class="lema-row">'
        f'<div class="lema-col">{_header("Original (wrong) solution")}'
        f"{render_step_cards(steps, flagged=k, mode='original')}"
        f"{render_verdict(row.get('predicted_answer'), gold, 'wrong' if gold else None)}</div>"
        f'<div class="lema-col">{_header("Correction")}'
        f'<div class="lema-flag">Incorrect step: <b>Step {k}</b></div>'
        f'<div class="lema-explain"><span class="lema-explain-label">Explanation</span>{_text_html(row.get("explanation") or "")}</div>'
        f"{render_step_cards(full, mode='corrected', kept_before=k)}"
        f"{render_verdict(answer, gold, verdict)}{ref_note}</div>"
        "</div>"
    )


# --------------------------------------------------------------------------------------------
# The Gradio app
# --------------------------------------------------------------------------------------------

# No `margin: auto` on .gradio-container: with it, every keystroke in a long pasted text re-lays out
# the whole page (a 1,000-line paste froze the tab for over a minute).
CSS = """
.gradio-container { max-width: 1280px !important; }
.lema-panel { min-height: 72px; }
.lema-placeholder { color: var(--body-text-color-subdued); padding: 18px 12px; border: 1px dashed var(--border-color-primary);
  border-radius: 8px; min-height: 40px; }
.lema-answers > div { flex: 1 1 300px; }
.lema-filters { flex-wrap: wrap; }
.lema-unfinished { border-left: 4px dashed #b45309; padding-left: 8px; }
.lema-unfinished .lema-step:last-child { border-style: dashed; }
.lema-unfinished-note { font-size: 0.9em; color: #92400e; margin: 4px 0; }
.dark .lema-unfinished-note { color: #fcd34d; }
.lema-reference { margin-top: 10px; padding: 8px 12px; border-radius: 8px; border: 1px solid var(--border-color-primary); }
#browse-table { max-width: 100%; overflow-x: auto; }
@media (max-width: 640px) {
  .lema-row { flex-direction: column; }
  .lema-col { flex-basis: auto; }
  .lema-head { flex-wrap: wrap; }
}
.lema-hero h1 { margin-bottom: 0.2em; }
.lema-steps { display: flex; flex-direction: column; gap: 6px; margin: 6px 0; }
.lema-step { display: flex; gap: 10px; align-items: flex-start; padding: 8px 10px; border-radius: 8px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary); line-height: 1.45; }
.lema-num { flex: none; min-width: 1.7em; height: 1.7em; border-radius: 50%; display: inline-flex;
  align-items: center; justify-content: center; font-weight: 600; font-size: 0.85em;
  background: var(--color-accent-soft); color: var(--color-accent); }
.lema-text { flex: 1; }
.lema-flagged { border: 2px solid #dc2626; background: rgba(220, 38, 38, 0.09); }
.lema-flagged .lema-num { background: #b91c1c; color: white; }
.lema-after { opacity: 0.55; }
.lema-fixed { border: 1px solid #16a34a; background: rgba(22, 163, 74, 0.08); }
.lema-fixed .lema-num { background: #15803d; color: white; }
.lema-kept { opacity: 0.7; }
.lema-badge { flex: none; font-size: 0.75em; font-weight: 600; padding: 2px 8px; border-radius: 999px; align-self: center; }
.lema-badge-bad { background: #b91c1c; color: white; }
.lema-badge-good { background: #15803d; color: white; }
.lema-verdict { margin-top: 8px; padding: 8px 12px; border-radius: 8px; font-size: 1.02em; }
.lema-correct { background: rgba(22, 163, 74, 0.12); color: #166534; border: 1px solid #16a34a; }
.lema-wrong { background: rgba(220, 38, 38, 0.10); color: #991b1b; border: 1px solid #dc2626; }
.dark .lema-correct { background: #052e16; color: #86efac; }
.dark .lema-wrong { background: #450a0a; color: #fca5a5; }
.dark .lema-flagged { background: #3b0a0a; }
.dark .lema-fixed { background: #04240f; }
.lema-neutral { background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); }
.lema-head { display: flex; align-items: baseline; gap: 10px; margin: 4px 0 6px; }
.lema-title { font-weight: 700; font-size: 1.1em; }
.lema-sub { color: var(--body-text-color-subdued); font-size: 0.85em; font-family: var(--font-mono); }
.lema-status { color: var(--body-text-color-subdued); font-size: 0.85em; margin-top: 6px; }
.lema-notice { padding: 8px 12px; border-radius: 8px; margin: 6px 0; }
.lema-notice-warn { background: rgba(234, 179, 8, 0.14); border: 1px solid #ca8a04; }
.lema-notice-error { background: rgba(220, 38, 38, 0.10); border: 1px solid #dc2626; }
.lema-notice-info { background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); }
.lema-flag { margin: 6px 0; padding: 6px 12px; border-left: 4px solid #dc2626; background: rgba(220, 38, 38, 0.07); }
.lema-explain, .lema-question { margin: 6px 0; padding: 8px 12px; border-radius: 8px;
  background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); }
.lema-explain-label { display: block; font-size: 0.75em; font-weight: 700; text-transform: uppercase;
  letter-spacing: 0.04em; color: var(--body-text-color-subdued); margin-bottom: 2px; }
.lema-meta { font-size: 0.85em; color: var(--body-text-color-subdued); margin: 4px 0 8px; }
.lema-row { display: flex; gap: 16px; flex-wrap: wrap; }
.lema-col { flex: 1 1 380px; min-width: 0; }
.lema-raw { white-space: pre-wrap; font-size: 0.85em; max-height: 320px; overflow: auto; }
.lema-cursor { animation: lema-blink 1s steps(1) infinite; color: var(--color-accent); }
@keyframes lema-blink { 50% { opacity: 0; } }
"""


def _theme() -> Any:
    import gradio as gr

    return gr.themes.Soft(
        primary_hue="indigo",
        secondary_hue="slate",
        neutral_hue="slate",
        font=[gr.themes.GoogleFont("Inter"), "ui-sans-serif", "system-ui", "sans-serif"],
    )


def _facts_line(role: str, facts: dict[str, Any]) -> str:
    base = facts.get("base_model")
    line = f"**{role}** {_hub_link(facts['name'], 'model')}"
    if base and base != facts["name"]:
        line += f": fine-tuned from {_hub_link(base, 'model')}"
    if facts.get("steps"):
        line += f"; training budget: {facts['steps']} optimizer steps"
        if facts.get("batch_size"):
            line += f" × {facts['batch_size']} rows per device"
        if facts.get("train_rows"):
            line += f", {facts['train_rows']} training rows"
        if facts.get("datasets"):
            data = ", ".join(_hub_link(str(d), "dataset") for d in facts["datasets"])
            line += f" ({data}{', config `' + str(facts['dataset_config']) + '`' if facts.get('dataset_config') else ''})"
    return line


LARGER_MODELS_MD = """**Use larger models.** This page runs whatever models it is given. Point it at your own
fine-tunes (a Hub id or folder, e.g. from `recipes/qwen2.5-1.5b/` or `recipes/llama-2-7b/`):

```
lema-hub demo --lema_model <ns>/<lema-model> --baseline_model <ns>/<cot-model>
```

or at models served elsewhere (vLLM, TGI, `transformers serve`, the HF router):
`--backend openai --base_urls http://host:8000/v1 --lema_model <served name>`. On a Space, set the same
options as `LEMA_DEMO_LEMA_MODEL`, `LEMA_DEMO_BACKEND`, `LEMA_DEMO_BASE_URLS` variables."""


BROWSE_HEADERS = [
    "problem",
    "task",
    "generator",
    "level",
    "incorrect step",
    "corrected answer",
    "gold answer",
]
# A result panel's content before its first run: without it the panel has no height and Gradio's
# queue text ("queue: 2/3", the timer) has nowhere to show.
PLACEHOLDER = '<div class="lema-placeholder">{}</div>'
# Bring the answers into view when a run starts (on a phone they are below the inputs).
_SCROLL_JS = "() => {{ setTimeout(() => document.querySelector('{target}')?.scrollIntoView({{behavior: 'smooth', block: 'start'}}), 100); }}"

# A cancelled run's generator never yields again, so the page itself says it stopped (and the
# cursor goes): the partial text stays for the user to read.
_STOPPED_JS = (
    "() => {{ document.querySelectorAll('{panels}').forEach(p => {{"
    " p.querySelectorAll('.lema-cursor').forEach(c => c.remove());"
    " p.querySelectorAll('.lema-status').forEach(s => {{ if (s.textContent.startsWith('generating'))"
    " s.textContent = 'stopped: ' + " + json.dumps(STOP_REASONS["cancelled"]) + "; }}); }}); }}"
)


def _match_line(n: int, total: int) -> str:
    return f'<div class="lema-status" id="browse-count-text">{n} of {total} corrections match</div>'


def _browse_table(rows: list[dict]) -> list[list[Any]]:
    if not rows:
        return [["", "", "", "", "", "", ""]]
    return [
        [
            r.get("problem_id", ""),
            r["_config"],
            r.get("generator", ""),
            "" if r.get("level") is None else r["level"],
            r.get("incorrect_step"),
            r.get("corrected_answer") or "",
            r.get("gold_answer") or "",
        ]
        for r in rows
    ]
