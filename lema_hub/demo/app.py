"""The Gradio page: `build_demo` (one function per tab) and `launch`."""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable
from typing import Any

from lema_hub.demo.config import DemoConfig, _none
from lema_hub.demo.data import ANY, eval_table, model_facts
from lema_hub.demo.handlers import MAX_GOLD_CHARS, DemoApp
from lema_hub.demo.render import (
    _SCROLL_JS,
    _STOPPED_JS,
    BROWSE_HEADERS,
    CSS,
    LARGER_MODELS_MD,
    LATEX_DELIMITERS,
    PLACEHOLDER,
    _browse_table,
    _facts_line,
    _hub_link,
    _match_line,
    _notice,
    _theme,
    render_correction_row,
)


def _intro(app: DemoApp) -> str:
    cfg = app.cfg
    models = _facts_line("LeMa model", model_facts(app.lema.name))
    if app.baseline:
        models += "  \n" + _facts_line(
            '<span title="chain of thought: trained on worked solutions only, no corrections">Baseline (CoT)</span>',
            model_facts(app.baseline.name),
        )
    data = ""
    if _none(cfg.corrections):
        data += f" · **corrections** {_hub_link(cfg.corrections, 'dataset')}"
    if _none(cfg.mistakes):
        data += f" · **mistakes** {_hub_link(cfg.mistakes, 'dataset')}"
    return (
        f"# {cfg.title}\n"
        "Fine-tuning on *mistake → correction* pairs makes LLMs better reasoners "
        "([An et al., 2023](https://arxiv.org/abs/2310.20689)). **Solve** compares a CoT-only baseline with the "
        "LeMa model; **Correct** asks the LeMa model to find and fix the first wrong step of a solution; "
        "**Browse** shows the corrections it learned from.\n\n"
        f"{models}  \n{data.removeprefix(' · ')}\n\n"
        "*What to expect:* small models trained for a few steps (as in the quickstart) are often wrong; "
        "the page shows what the method produces at that budget, not the paper's accuracy. "
        "See *Evaluation* and *Use larger models* below."
    )


def _on_zero_gpu(fn: Callable[..., Any], cfg: DemoConfig) -> Callable[..., Any]:
    """On ZeroGPU Space hardware, run a generating handler under `spaces.GPU` (elsewhere: as is)."""
    if cfg.backend != "transformers" or not os.environ.get("SPACES_ZERO_GPU"):
        return fn
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=int(cfg.generation_timeout_s) + 30)(fn)


# Gradio's Markdown settings for every panel: KaTeX without `$`, HTML sanitised.
MD = dict(latex_delimiters=LATEX_DELIMITERS, sanitize_html=True)
GOLD_INFO = "The known right answer, if you have it: each model's final answer is then marked ✓ or ✗."


def _generation_events(cfg: DemoConfig) -> dict[str, Any]:
    """Solve and Correct share one concurrency limit."""
    return dict(concurrency_limit=cfg.concurrency_limit, concurrency_id="generation")


def build_demo(cfg: DemoConfig | None = None, app: DemoApp | None = None) -> Any:
    """The Gradio Blocks (theme and CSS are applied by `launch`, as Gradio 6 wants).
    Every event has an explicit api_name."""
    import gradio as gr

    cfg = cfg or DemoConfig()
    app = app or DemoApp(cfg)
    with gr.Blocks(title=cfg.title) as demo:
        _page_head(app)
        _solve_tab(app)
        _correct_tab(app)
        _browse_tab(app)
    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency_limit)
    demo.lema_app = app  # for tests and for `launch`
    return demo


def _page_head(app: DemoApp) -> None:
    """The introduction, the notes (fallbacks, missing data), the evaluation table."""
    import gradio as gr

    cfg, md = app.cfg, MD
    gr.Markdown(_intro(app), elem_classes=["lema-hero"], **md)
    if app.notes:
        gr.Markdown(
            '<div class="lema-notice lema-notice-info">'
            + "<br>".join(html.escape(n) for n in app.notes)
            + "</div>",
            elem_id="lema-notes",
            **md,
        )

    table = eval_table(cfg)
    with gr.Accordion("Evaluation" + ("" if table else " (none found)"), open=False, elem_id="lema-eval"):
        gr.Markdown(
            table
            or f"No evaluation folder at `{cfg.eval_dir}` (run `lema-hub quickstart` or `lema-hub evaluate`, "
            "or pass `--eval_dir`).",
            **md,
        )
    with gr.Accordion("Use larger models", open=False, elem_id="lema-larger"):
        gr.Markdown(LARGER_MODELS_MD, **md)


def _solve_tab(app: DemoApp) -> None:
    """Solve: both models answer a question side by side."""
    import gradio as gr

    cfg, md, gold_info = app.cfg, MD, GOLD_INFO
    solve_fn, gen_events = _on_zero_gpu(app.solve, cfg), _generation_events(cfg)
    with gr.Tab("Solve", id="solve"):
        with gr.Row():
            with gr.Column(scale=3, min_width=280):
                s_question = gr.Textbox(
                    label="Question",
                    lines=3,
                    max_lines=10,
                    max_length=cfg.max_question_chars,
                    elem_id="solve-question",
                    placeholder="A math word problem…",
                    info="Shift+Enter runs it.",
                )
            with gr.Column(scale=1, min_width=220):
                s_gold = gr.Textbox(
                    label="Gold answer (optional)",
                    elem_id="solve-gold",
                    max_length=MAX_GOLD_CHARS,
                    info=gold_info,
                )
                with gr.Row():
                    s_button = gr.Button("Solve", variant="primary", elem_id="solve-run", min_width=100)
                    s_stop = gr.Button("Stop", variant="stop", elem_id="solve-stop", min_width=80)
        s_pick = gr.Dropdown(
            choices=list(app._examples),
            value=None,
            label="…or pick an example",
            elem_id="solve-example",
            interactive=True,
        )
        if app.data.solve_examples:
            gr.Examples(
                [[e.question, e.gold or ""] for e in app.data.solve_examples[:4]],
                [s_question, s_gold],
                label="One-click examples",
                cache_examples=False,  # generating is not cheap enough to cache at start-up
            )
        with gr.Row(equal_height=False, elem_classes=["lema-answers"]):
            with gr.Column(min_width=300, visible=app.baseline is not None):
                s_base = gr.Markdown(
                    PLACEHOLDER.format("The baseline's answer appears here."),
                    elem_id="solve-baseline",
                    elem_classes=["lema-panel"],
                    **md,
                )
            with gr.Column(min_width=300):
                s_lema = gr.Markdown(
                    PLACEHOLDER.format("The LeMa model's answer appears here."),
                    elem_id="solve-lema",
                    elem_classes=["lema-panel"],
                    **md,
                )

    s_pick.change(app.pick_example, s_pick, [s_question, s_gold], api_name="pick_example")
    solve_out = [s_base, s_lema]
    solve_runs = [
        s_button.click(solve_fn, [s_question, s_gold], solve_out, api_name="solve", **gen_events),
        s_question.submit(solve_fn, [s_question, s_gold], solve_out, api_name="solve_submit", **gen_events),
    ]
    for trigger in (s_button.click, s_question.submit):
        trigger(None, js=_SCROLL_JS.format(target="#solve-lema"), api_name=f"scroll_{trigger.__name__}_solve")
    s_stop.click(
        None,
        cancels=solve_runs,
        js=_STOPPED_JS.format(panels="#solve-lema, #solve-baseline"),
        api_name="solve_stop",
    )


def _correct_tab(app: DemoApp) -> None:
    """Correct: the LeMa model flags and fixes a wrong solution; the baseline attempts the question."""
    import gradio as gr

    cfg, md, gold_info = app.cfg, MD, GOLD_INFO
    correct_fn, gen_events = _on_zero_gpu(app.correct, cfg), _generation_events(cfg)
    with gr.Tab("Correct", id="correct"):
        with gr.Row():
            with gr.Column(scale=3, min_width=280):
                c_question = gr.Textbox(
                    label="Question",
                    lines=2,
                    max_lines=8,
                    max_length=cfg.max_question_chars,
                    elem_id="correct-question",
                )
                c_solution = gr.Textbox(
                    label="Wrong solution (one step per line)",
                    lines=6,
                    max_lines=16,
                    max_length=cfg.max_solution_chars,
                    elem_id="correct-solution",
                    placeholder="Step 1: …\nStep 2: …\nStep 3: The answer is …",
                    info=f"Up to {cfg.max_solution_chars:,} characters. Shift+Enter runs it.",
                )
            with gr.Column(scale=1, min_width=220):
                c_gold = gr.Textbox(
                    label="Gold answer (optional)",
                    elem_id="correct-gold",
                    max_length=MAX_GOLD_CHARS,
                    info=gold_info,
                )
                with gr.Row():
                    c_button = gr.Button(
                        "Find and fix the mistake",
                        variant="primary",
                        elem_id="correct-run",
                        min_width=120,
                    )
                    c_stop = gr.Button("Stop", variant="stop", elem_id="correct-stop", min_width=80)
        c_pick = gr.Dropdown(
            choices=list(app._mistakes),
            value=None,
            elem_id="correct-example",
            label="…or pick a wrong solution from the mistakes dataset",
            interactive=True,
        )
        if app.data.correct_examples:
            gr.Examples(
                [[e.question, e.solution or "", e.gold or ""] for e in app.data.correct_examples[:4]],
                [c_question, c_solution, c_gold],
                label="One-click examples",
                cache_examples=False,
            )
        c_note = gr.Markdown(elem_id="correct-example-note", **md)
        with gr.Row(equal_height=False, elem_classes=["lema-answers"]):
            with gr.Column(min_width=300):
                c_original = gr.Markdown(
                    PLACEHOLDER.format("The solution, with the step the model flags, appears here."),
                    elem_id="correct-original",
                    elem_classes=["lema-panel"],
                    **md,
                )
            with gr.Column(min_width=300):
                c_fix = gr.Markdown(
                    PLACEHOLDER.format("The LeMa model's correction appears here."),
                    elem_id="correct-fix",
                    elem_classes=["lema-panel"],
                    **md,
                )
        if app.baseline is not None:
            gr.Markdown(
                '<div class="lema-status" id="correct-baseline-why">Why a baseline attempt? The '
                '<span title="chain of thought: trained on worked solutions only">CoT</span> baseline was '
                "never trained to correct solutions, so it solves the question from scratch instead: "
                "compare its answer with the LeMa model's corrected one.</div>",
                **md,
            )
        c_base = gr.Markdown(
            PLACEHOLDER.format("The baseline's own attempt appears here."),
            elem_id="correct-baseline",
            elem_classes=["lema-panel"],
            visible=app.baseline is not None,
            **md,
        )
        with gr.Accordion("Parsed correction (JSON)", open=False):
            c_json = gr.JSON(elem_id="correct-json")

    c_pick.change(app.pick_mistake, c_pick, [c_question, c_solution, c_gold, c_note], api_name="pick_mistake")
    correct_args = ([c_question, c_solution, c_gold], [c_original, c_fix, c_base, c_json])
    correct_runs = [
        c_button.click(correct_fn, *correct_args, api_name="correct", **gen_events),
        c_solution.submit(correct_fn, *correct_args, api_name="correct_submit", **gen_events),
    ]
    for trigger in (c_button.click, c_solution.submit):
        trigger(
            None,
            js=_SCROLL_JS.format(target="#correct-fix"),
            api_name=f"scroll_{trigger.__name__}_correct",
        )
    c_stop.click(
        None,
        cancels=correct_runs,
        js=_STOPPED_JS.format(panels="#correct-fix, #correct-baseline"),
        api_name="correct_stop",
    )


def _browse_tab(app: DemoApp) -> None:
    """Browse: the corrections dataset, filterable, one record at a time."""
    import gradio as gr

    cfg, md = app.cfg, MD
    with gr.Tab("Browse", id="browse"):
        facets = app.data.facets()
        gr.Markdown(
            f"Corrections dataset: {_hub_link(cfg.corrections, 'dataset') if _none(cfg.corrections) else '—'}"
            f" · {len(app.data.corrections)} accepted corrections"
            if app.data.corrections
            else "No corrections dataset loaded. Run `lema-hub quickstart`, or set `--corrections` "
            "(or `LEMA_DEMO_CORRECTIONS`) to a Hub id or folder.",
            **md,
        )
        with gr.Row(elem_classes=["lema-filters"]):
            b_task = gr.Dropdown(
                [ANY, *facets["task"]], value=ANY, label="Task", elem_id="browse-task", min_width=150
            )
            b_gen = gr.Dropdown(
                [ANY, *facets["generator"]],
                value=ANY,
                label="Generator",
                elem_id="browse-generator",
                min_width=150,
                info="The model that made the mistake.",
            )
            b_level = gr.Dropdown(
                [ANY, *facets["level"]], value=ANY, label="Level", elem_id="browse-level", min_width=150
            )
            b_step = gr.Dropdown(
                [ANY, *facets["incorrect_step"]],
                value=ANY,
                label="Incorrect step",
                elem_id="browse-step",
                min_width=150,
                info="Which step the corrector flagged.",
            )
        total = len(app.data.corrections)
        b_count = gr.Markdown(_match_line(total, total), elem_id="browse-count", **md)
        b_table = gr.Dataframe(
            value=_browse_table(app.data.corrections),
            headers=BROWSE_HEADERS,
            interactive=False,
            max_height=260,
            wrap=True,
            elem_id="browse-table",
            latex_delimiters=LATEX_DELIMITERS,
        )
        with gr.Row():
            b_prev = gr.Button("◀ Previous", size="sm", scale=2, min_width=90)
            b_index = gr.Number(
                value=1,
                precision=0,
                label=f"Row (1–{max(total, 1)})",
                elem_id="browse-index",
                scale=1,
                min_width=100,
            )
            b_next = gr.Button("Next ▶", size="sm", scale=2, min_width=90)
        b_view = gr.Markdown(
            value=render_correction_row(app.data.corrections[0]) if app.data.corrections else "",
            elem_id="browse-view",
            **md,
        )

    filters = [b_task, b_gen, b_level, b_step]

    def browse(task: str, generator: str, level: str, step: str, index: float | None) -> tuple[Any, ...]:
        return _browse_page(app, task, generator, level, step, index)

    def step_index(delta: int) -> Callable[..., tuple[Any, ...]]:
        def fn(task: str, generator: str, level: str, step: str, index: float | None) -> tuple[Any, ...]:
            return browse(task, generator, level, step, (index or 1) + delta)

        return fn

    def select(task: str, generator: str, level: str, step: str, evt: gr.SelectData) -> tuple[Any, ...]:
        return browse(task, generator, level, step, (evt.index[0] if evt.index else 0) + 1)

    # Gradio finds the event-data parameter by its annotation; postponed annotations are strings.
    select.__annotations__["evt"] = gr.SelectData

    browse_out = [b_table, b_view, b_index, b_count]
    for i, f in enumerate(filters):
        f.change(
            lambda *a: browse(*a, 1),
            filters,
            browse_out,
            api_name=f"browse_filter_{i}",
            show_progress="hidden",
        )
    b_index.submit(browse, [*filters, b_index], browse_out, api_name="browse")
    b_prev.click(step_index(-1), [*filters, b_index], browse_out, api_name="browse_prev")
    b_next.click(step_index(+1), [*filters, b_index], browse_out, api_name="browse_next")
    b_table.select(select, filters, browse_out, api_name="browse_select")


def _browse_page(
    app: DemoApp, task: str, generator: str, level: str, step: str, index: float | None
) -> tuple[Any, ...]:
    """Browse's outputs (table, record, row number, count) for the filters and a row number.
    Rows are numbered from 1 on the page; out-of-range numbers get a line, not an error."""
    import gradio as gr

    rows = app.data.filter(task, generator, level, step)
    count = _match_line(len(rows), len(app.data.corrections))
    label = gr.update(value=1, label="Row (none)")
    if not rows:
        return _browse_table([]), _notice("No corrections match these filters.", "info"), label, count
    wanted = 1 if index is None else int(index)
    i = min(max(wanted, 1), len(rows))
    view = render_correction_row(rows[i - 1])
    if wanted != i:
        view = (
            _notice(
                f"Row {wanted} does not exist: rows go from 1 to {len(rows)}. Showing row {i}.",
                "info",
            )
            + view
        )
    return _browse_table(rows), view, gr.update(value=i, label=f"Row (1–{len(rows)})"), count


def launch_kwargs(cfg: DemoConfig) -> dict[str, Any]:
    """What `Blocks.launch` needs besides the Blocks (Gradio 6 takes theme and CSS here)."""
    return dict(
        server_name=cfg.host,
        server_port=cfg.port,
        share=cfg.share,
        theme=_theme(),
        css=CSS,
        footer_links=["api", "gradio"],
        show_error=False,
    )


def launch(cfg: DemoConfig, demo: Any = None, **overrides: Any) -> Any:
    """`lema-hub demo`: build (unless given) and serve the app; blocks until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    demo = demo or build_demo(cfg)
    if cfg.preload:
        demo.lema_app.preload()
    return demo.launch(**{**launch_kwargs(cfg), **overrides})
