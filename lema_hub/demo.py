"""The LeMa demo: Solve / Correct / Browse, in Gradio.

- **Solve**: the baseline (CoT fine-tuned) and the LeMa model answer a question side by side, as
  numbered steps, streamed; with a known gold answer each final answer is graded (✓ / ✗).
- **Correct**: a question plus a wrong solution → the LeMa model's `Incorrect Step`,
  `Explanation` and `Correct Solution`, the flagged step highlighted in the original.
- **Browse**: the corrections dataset, filterable by task, generator, level and incorrect step.

Models and datasets come from `DemoConfig` (CLI arguments, or `LEMA_DEMO_<FIELD>` environment
variables on a Space). Missing local defaults fall back to the embedded model and the bundled
sample, so `lema-hub demo` always starts. Inference is local (transformers) or goes to an
OpenAI-compatible endpoint / `huggingface_hub.InferenceClient`.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENV_PREFIX = "LEMA_DEMO_"
EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
QUICKSTART_DIR = "outputs/quickstart"
NONE_VALUES = ("", "none", "null", "off")

# `$` alone is never a delimiter: GSM8K money ("$5 each, $10 total") must stay plain text.
LATEX_DELIMITERS: list[dict[str, Any]] = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "\\[", "right": "\\]", "display": True},
    {"left": "\\(", "right": "\\)", "display": False},
]


def _from_env(name: str, default: Any) -> Any:
    """`LEMA_DEMO_<NAME>` parsed to the type of `default` (a Space sets its options this way)."""
    raw = os.environ.get(ENV_PREFIX + name.upper())
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, list):
        return [x.strip() for x in raw.split(",") if x.strip()]
    return raw


@dataclass
class DemoConfig:
    """What the demo serves. Every field can be set as `--field` or as `LEMA_DEMO_<FIELD>`."""

    lema_model: str = field(
        default=f"{QUICKSTART_DIR}/models/lema-merged",
        metadata={
            "help": "The LeMa model: Hub id, local folder, `embedded:...`/`tiny:...`, or the served name on an endpoint."
        },
    )
    baseline_model: str | None = field(
        default=f"{QUICKSTART_DIR}/models/cot-merged",
        metadata={"help": "The CoT-only baseline; `none` hides it."},
    )
    fallback_model: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": "Used (and said so on the page) when a configured local model folder is absent."},
    )
    corrections: str | None = field(
        default=f"{QUICKSTART_DIR}/lema-corrections",
        metadata={
            "help": "Corrections dataset for Browse: Hub id or Hub-layout folder; `none` hides the tab's data."
        },
    )
    mistakes: str | None = field(
        default=f"{QUICKSTART_DIR}/lema-mistakes",
        metadata={"help": "Mistakes dataset whose wrong paths are the Correct tab's examples."},
    )
    eval_dir: str | None = field(
        default=f"{QUICKSTART_DIR}/eval",
        metadata={
            "help": "An evaluation folder (`lema-hub evaluate`): its comparison table is shown on the page."
        },
    )
    examples: list[str] = field(
        default_factory=lambda: ["sample"],
        metadata={
            "help": "Solve examples: sample, gsm8k, math, math500 (test splits, from the Hub), or `gsm8k=FILE` for a local file."
        },
    )
    examples_per_source: int = field(
        default=20, metadata={"help": "Examples listed per source in the Solve tab."}
    )

    backend: str = field(
        default="transformers",
        metadata={
            "help": "transformers (local) | openai (OpenAI-compatible endpoint: TGI, vLLM, HF router) | inference_client."
        },
    )
    base_url: str | None = field(
        default=None, metadata={"help": "Endpoint for the LeMa model (openai / inference_client backends)."}
    )
    baseline_base_url: str | None = field(
        default=None, metadata={"help": "Endpoint for the baseline; defaults to `base_url`."}
    )
    api_key_env: str = field(
        default="HF_TOKEN",
        metadata={
            "help": "Name of the environment variable holding the endpoint key (never the key itself)."
        },
    )
    prompt_style: str = field(
        default="auto",
        metadata={
            "help": "chat | plain | auto (a model's recorded style, else chat when it has a chat template)."
        },
    )
    endpoint_stream: bool = field(
        default=True, metadata={"help": "Stream tokens from the endpoint (server-sent events)."}
    )

    max_question_chars: int = field(
        default=1500,
        metadata={"help": "Longest question accepted (longer input gets a message, not a crash)."},
    )
    max_solution_chars: int = field(
        default=4000, metadata={"help": "Longest solution accepted in the Correct tab."}
    )
    max_new_tokens: int = field(default=384, metadata={"help": "Max new tokens for a Solve answer."})
    correction_max_new_tokens: int = field(default=512, metadata={"help": "Max new tokens for a correction."})
    generation_timeout_s: float = field(
        default=90.0, metadata={"help": "Wall-clock bound on one generation, in seconds."}
    )
    concurrency_limit: int = field(
        default=2,
        metadata={
            "help": "Generations running at once (Solve and Correct share it); the rest wait in the queue."
        },
    )
    queue_size: int = field(
        default=32, metadata={"help": "Requests waiting in the queue at most; more are refused politely."}
    )
    preload: bool = field(
        default=True,
        metadata={"help": "Load local models when the app starts instead of at the first request."},
    )

    host: str = field(default="127.0.0.1", metadata={"help": "Interface to serve on (0.0.0.0 on a Space)."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    share: bool = field(default=False, metadata={"help": "Create a public gradio.live link."})
    title: str = field(default="LeMa: Learning From Mistakes", metadata={"help": "Page title."})

    def __post_init__(self) -> None:
        # Precedence: explicit argument > LEMA_DEMO_<FIELD> > built-in default.
        for f in fields(self):
            builtin = f.default_factory() if f.default_factory is not MISSING else f.default
            if getattr(self, f.name) == builtin:
                setattr(self, f.name, _from_env(f.name, builtin))


def _none(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() in NONE_VALUES else value


def _is_local_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.startswith(f"{QUICKSTART_DIR}/") or Path(name).exists()


def _hub_link(name: str | None, kind: str) -> str:
    """Markdown for a model/dataset: a Hub link for Hub ids, the name otherwise."""
    if not name:
        return "—"
    if ":" in name or _is_local_path(name) or name.count("/") != 1:
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
# --------------------------------------------------------------------------------------------


class Generation:
    """One generation running in a background thread; `text` grows as tokens arrive."""

    def __init__(self, run: Callable[[Generation], None]):
        self.text = ""
        self.error: str | None = None
        self.finish_reason: str | None = None
        self.stop_reason: str | None = None  # why generation stopped early: a key of STOP_REASONS
        self.started = time.monotonic()
        self.ended: float | None = None
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(run,), daemon=True)
        self._thread.start()

    def _run(self, run: Callable[[Generation], None]) -> None:
        try:
            run(self)
        except Exception as exc:  # shown on the page; the app keeps serving
            logger.exception("generation failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended = time.monotonic()
            self.done.set()

    def append(self, chunk: str) -> None:
        self.text += chunk

    def cancel(self, reason: str = "cancelled") -> None:
        if not self.done.is_set() and self.stop_reason is None:
            self.stop_reason = reason
        self.cancelled.set()

    @property
    def elapsed(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def check_stop(self, stop: Callable[[str], str | None]) -> bool:
        """True (and `stop_reason` set) when the user cancelled or `stop` names a reason to stop."""
        if self.cancelled.is_set():
            return True
        reason = stop(self.text)
        if reason:
            self.stop_reason = self.stop_reason or reason
            return True
        return False


# Why a generation stopped, in words for the page.
STOP_REASONS = {
    "complete": "the answer is complete",
    "repeating": "the model started repeating itself",
    "too_long": "the rewrite grew well past the original's length",
    "length": "it reached the token limit",
    "time": "it reached the time limit",
    "cancelled": "you pressed Stop",
}


_ANSWER_DONE = re.compile(r"The answer is [^\n]*?\.\s")


def _norm_line(line: str) -> str:
    return re.sub(r"^\s*(\*\*)?step\s*\d+\s*[:.)]\s*(\*\*)?\s*", "", line.strip(), flags=re.I).lower()


def is_repeating(text: str) -> bool:
    """The text loops: a finished line (step numbers aside) said twice, or its tail seen before."""
    lines = [_norm_line(x) for x in text.split("\n")[:-1]]  # the last line may still be growing
    lines = [x for x in lines if len(x) >= 12 and x not in ("{", "}")]
    if lines and lines.count(lines[-1]) >= 2:
        return True
    tail = text[-80:]
    return len(text) > 400 and len(tail.strip()) >= 40 and text[:-80].count(tail) > 0


def _answer_complete(text: str) -> str | None:
    """Stop once a CoT answer sentence is complete (saves CPU time; the grader reads this sentence)."""
    if _ANSWER_DONE.search(text) is not None:
        return "complete"
    return "repeating" if is_repeating(text) else None


def correction_stop(num_steps: int) -> Callable[[str], str | None]:
    """Stop a correction at the `}` that closes its Correct Solution block, when it loops, or when
    the rewrite has clearly more steps than the original."""
    from lema_hub.formats import parse_rendered_steps

    def stop(text: str) -> str | None:
        _, sep, tail = text.partition("Correct Solution")
        if sep and "}" in tail:
            return "complete"
        if is_repeating(text):
            return "repeating"
        if sep and len(parse_rendered_steps(tail)) > num_steps + 3:
            return "too_long"
        return None

    return stop


def trim_correction(text: str) -> str:
    """The correction up to the `}` closing its Correct Solution block (a stream chunk may run past it)."""
    head, sep, tail = text.partition("Correct Solution")
    if sep and "}" in tail:
        return head + sep + tail[: tail.index("}") + 1]
    return text


def correction_token_budget(solution: str, cap: int) -> int:
    """New tokens for a correction: about twice the original's (~3 characters a token) plus the
    step-and-explanation header, at most `cap`: a rewrite needs about the original's length."""
    return max(64, min(cap, 96 + 2 * (len(solution) // 3)))


def _correction_complete(text: str) -> bool:
    return correction_stop(10**6)(text) == "complete"


class ModelRunner:
    """A model the demo talks to: a local transformers model or an endpoint."""

    def __init__(self, name: str, display_name: str, cfg: DemoConfig, base_url: str | None):
        self.name = name
        self.display_name = display_name
        self.cfg = cfg
        self.base_url = base_url
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None
        self._style: str | None = None

    @property
    def local(self) -> bool:
        return self.cfg.backend == "transformers"

    def load(self) -> None:
        if not self.local or self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            import torch

            from lema_hub.models import load_model, load_tokenizer

            t0 = time.time()
            device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            tokenizer = load_tokenizer(self.name)
            model = load_model(self.name, dtype=dtype).to(device).eval()
            self._tokenizer, self._model = tokenizer, model
            logger.info("loaded %s on %s in %.1fs", self.name, device, time.time() - t0)

    def prompt_style(self) -> str:
        if self._style is None:
            style = self.cfg.prompt_style
            if style == "auto":
                style = self._recorded_style() or ("chat" if self._has_chat() else "plain")
            if style not in ("chat", "plain"):
                raise ValueError(f"prompt_style must be chat, plain or auto, got {style!r}")
            self._style = style
        return self._style

    def _recorded_style(self) -> str | None:
        """The prompt style the model was trained with, when our training wrote it down."""
        if not self.local:
            return None
        try:
            from lema_hub.models import resolve_model

            meta = Path(resolve_model(self.name)) / "lema_hub_model.json"
            if meta.is_file():
                return json.loads(meta.read_text()).get("prompt_style")
        except Exception:
            return None
        return None

    def _has_chat(self) -> bool:
        if not self.local:
            return True
        from lema_hub.models import has_chat_template

        self.load()
        return has_chat_template(self._tokenizer)

    def start(self, prompt: str, max_new_tokens: int, stop: Callable[[str], str | None]) -> Generation:
        """Start generating greedily from a LeMa-format prompt; returns at once."""
        if self.local:
            return Generation(lambda g: self._run_local(g, prompt, max_new_tokens, stop))
        return Generation(lambda g: self._run_endpoint(g, prompt, max_new_tokens, stop))

    def _run_local(
        self, gen: Generation, prompt: str, max_new_tokens: int, stop: Callable[[str], str | None]
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        from lema_hub.formats import as_messages

        self.load()
        tok, model = self._tokenizer, self._model
        if self.prompt_style() == "chat":
            text = tok.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
            inputs = tok(text, return_tensors="pt", add_special_tokens=False)
        else:
            inputs = tok(prompt, return_tensors="pt")
        inputs = {k: v.to(model.device) for k, v in inputs.items()}

        class Streamer(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                gen.append(text)

        class Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
                halt = gen.check_stop(stop)
                return torch.full((input_ids.shape[0],), halt, dtype=torch.bool, device=input_ids.device)

        streamer = Streamer(tok, skip_prompt=True, skip_special_tokens=True)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                max_time=self.cfg.generation_timeout_s,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([Stop()]),
                pad_token_id=tok.pad_token_id,
            )
        new_tokens = out.shape[1] - inputs["input_ids"].shape[1]
        gen.finish_reason = "length" if new_tokens >= max_new_tokens else "stop"
        if gen.stop_reason is None and gen.finish_reason == "length":
            gen.stop_reason = "length"
        elif gen.stop_reason is None and gen.elapsed >= self.cfg.generation_timeout_s - 0.5:
            gen.stop_reason = "time"

    def _run_endpoint(
        self, gen: Generation, prompt: str, max_new_tokens: int, stop: Callable[[str], str | None]
    ) -> None:
        from lema_hub.formats import as_messages

        key = os.environ.get(self.cfg.api_key_env) or "none"
        timeout = self.cfg.generation_timeout_s
        chat = self.prompt_style() == "chat"
        stream = self.cfg.endpoint_stream
        if self.cfg.backend == "inference_client":
            from huggingface_hub import InferenceClient

            client = InferenceClient(
                model=None if self.base_url else self.name,
                base_url=self.base_url,
                token=key if key != "none" else None,
                timeout=timeout,
            )
            if not chat:
                raise ValueError(
                    "backend inference_client serves chat models; use backend openai for plain prompts"
                )
            response = client.chat_completion(
                messages=as_messages(prompt),
                model=self.name if self.base_url else None,
                max_tokens=max_new_tokens,
                temperature=0.0,
                stream=stream,
            )
        elif self.cfg.backend == "openai":
            from openai import OpenAI

            if not self.base_url:
                raise ValueError("backend openai needs --base_url (the endpoint's /v1 URL)")
            client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=2)
            common = dict(model=self.name, max_tokens=max_new_tokens, temperature=0.0, stream=stream)
            if chat:
                response = client.chat.completions.create(messages=as_messages(prompt), **common)
            else:
                response = client.completions.create(prompt=prompt, **common)
        else:
            raise ValueError(
                f"backend must be transformers, openai or inference_client, got {self.cfg.backend!r}"
            )

        if not stream:
            choice = response.choices[0]
            gen.append((choice.message.content if chat else choice.text) or "")
            gen.finish_reason = choice.finish_reason
            gen.check_stop(stop)
            if gen.finish_reason == "length":
                gen.stop_reason = gen.stop_reason or "length"
            return
        deadline = time.monotonic() + timeout
        for chunk in response:
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            piece = (choice.delta.content if chat else choice.text) or ""
            gen.append(piece)
            gen.finish_reason = choice.finish_reason or gen.finish_reason
            if time.monotonic() > deadline:
                gen.stop_reason = gen.stop_reason or "time"
            if gen.check_stop(stop) or time.monotonic() > deadline:
                gen.finish_reason = gen.finish_reason or "stop"
                close = getattr(response, "close", None)
                if close:
                    close()
                break


def _resolve_model_name(name: str | None, cfg: DemoConfig) -> tuple[str | None, str | None]:
    """(model to use, note for the page). A missing local folder falls back to the embedded model."""
    name = _none(name)
    if name is None:
        return None, None
    if cfg.backend != "transformers":
        return name, None
    if _is_local_path(name) and not Path(name).expanduser().exists():
        return cfg.fallback_model, f"{name} not found — using {cfg.fallback_model}"
    return name, None


# --------------------------------------------------------------------------------------------
# Data: examples, mistakes, corrections
# --------------------------------------------------------------------------------------------


@dataclass
class Example:
    label: str
    question: str
    gold: str | None = None
    task: str = "gsm8k"
    solution: str | None = None  # a wrong solution (Correct tab examples)
    note: str | None = None


def _truncate(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _dataset_configs(path: str) -> list[str]:
    """Config names of a Hub-layout folder (README `configs:`) or a Hub dataset."""
    if Path(path).expanduser().is_dir():
        from lema_hub.artifacts import discover_configs

        return list(discover_configs(Path(path).expanduser()))
    from datasets import get_dataset_config_names

    return list(get_dataset_config_names(path))


def _load_rows(path: str | None, want: Callable[[str], bool]) -> tuple[list[tuple[str, dict]], str | None]:
    """Rows (config, row) of the dataset configs that `want` accepts; and a note on failure."""
    path = _none(path)
    if path is None:
        return [], None
    if _is_local_path(path) and not Path(path).expanduser().exists():
        return [], f"{path} not found"
    try:
        from lema_hub.artifacts import load_artifact

        rows: list[tuple[str, dict]] = []
        for config in _dataset_configs(path):
            if want(config):
                rows += [(config, dict(r)) for r in load_artifact(path, config=config, split="train")]
        return rows, None
    except Exception as exc:
        logger.warning("could not load %s: %s", path, exc)
        return [], f"could not load {path}: {type(exc).__name__}: {exc}"


def _task_of(row: dict, config: str) -> str:
    try:
        from lema_hub.problems import task_of

        return task_of(row.get("source") or config)
    except Exception:
        return "math" if "math" in config else "gsm8k"


def _planted_mistake(problem: Any) -> Example | None:
    """A Correct-tab example from a gold solution: its final computation altered (said so on the page)."""
    from lema_hub.formats import gold_steps, render_steps

    steps = gold_steps(problem)
    gold = str(problem.gold_answer)
    if len(steps) < 2 or not re.fullmatch(r"-?\d+", gold.replace(",", "")):
        return None
    wrong = str(int(gold.replace(",", "")) + 10)
    k = len(steps) - 1  # the step that produces the answer
    if gold not in steps[k - 1]:
        return None
    steps = steps[: k - 1] + [steps[k - 1].replace(gold, wrong)] + [f"The answer is {wrong}."]
    return Example(
        label=f"[planted] {_truncate(problem.question)}",
        question=problem.question,
        gold=gold,
        task="gsm8k",
        solution=render_steps(steps),
        note=f"Planted mistake: step {k} of the gold solution was altered (no mistakes dataset configured).",
    )


class DemoData:
    """Everything the tabs show that is not generated: examples, mistakes, corrections."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.notes: list[str] = []
        rows, note = _load_rows(cfg.corrections, lambda c: not c.endswith("-rejected"))
        if note:
            self.notes.append(f"Corrections: {note}.")
        self.corrections = [dict(r, _config=c) for c, r in rows]
        self.solve_examples = self._solve_examples()
        self.correct_examples = self._correct_examples()

    def reference_for(self, question: str, steps: list[str]) -> dict | None:
        """The dataset's accepted correction of exactly this wrong solution, when there is one."""
        want = [s.strip() for s in steps]
        for r in self.corrections:
            if (
                r.get("question", "").strip() == question.strip()
                and [str(s).strip() for s in r.get("steps") or []] == want
            ):
                return r
        return None

    def _solve_examples(self) -> list[Example]:
        from lema_hub.problems import ProblemArgs, load_problems, load_sample, task_of

        out: list[Example] = []
        for entry in self.cfg.examples:
            # "gsm8k" (from the Hub) or "gsm8k=path/to/test.jsonl" (a local file in the original format)
            source, _, path = entry.partition("=")
            try:
                if source == "sample":
                    problems = load_sample("test")[: self.cfg.examples_per_source]
                else:
                    problems = load_problems(
                        ProblemArgs(
                            problems=source,
                            problems_split="test",
                            problems_path=path or None,
                            problems_limit=self.cfg.examples_per_source,
                        )
                    )
            except Exception as exc:
                self.notes.append(f"Examples from {source}: not available ({type(exc).__name__}: {exc}).")
                continue
            out += [
                Example(f"[{source}] {_truncate(p.question)}", p.question, str(p.gold_answer), task_of(p))
                for p in problems
            ]
        return out

    def _correct_examples(self) -> list[Example]:
        from lema_hub.formats import render_steps

        rows, note = _load_rows(self.cfg.mistakes, lambda c: not c.endswith("-samples"))
        if note:
            self.notes.append(f"Mistakes: {note}.")
        out = []
        seen: set[str] = set()
        for config, row in rows:
            steps = list(row.get("steps") or [])
            key = row.get("problem_id", "") + "|" + "|".join(steps)
            if not steps or key in seen:
                continue
            seen.add(key)
            out.append(
                Example(
                    label=f"[{config}] {_truncate(row['question'])}",
                    question=row["question"],
                    gold=str(row.get("gold_answer") or "") or None,
                    task=_task_of(row, config),
                    solution=render_steps(steps),
                    note=f"A wrong path by {row.get('generator', 'a generator')} ({row.get('problem_id', '')}).",
                )
            )
            if len(out) >= 50:
                break
        if not out:
            from lema_hub.problems import load_sample

            for p in load_sample("test"):
                ex = _planted_mistake(p)
                if ex:
                    out.append(ex)
                if len(out) >= 10:
                    break
        return out

    # Browse -----------------------------------------------------------------------------------
    def facets(self) -> dict[str, list[str]]:
        rows = self.corrections

        def values(key: str) -> list[str]:
            return sorted({str(r.get(key)) for r in rows if r.get(key) is not None}, key=_natural)

        return {
            "task": sorted({r["_config"] for r in rows}),
            "generator": values("generator"),
            "level": values("level"),
            "incorrect_step": values("incorrect_step"),
        }

    def filter(self, task: str, generator: str, level: str, step: str) -> list[dict]:
        def ok(value: Any, wanted: str) -> bool:
            return wanted in (ANY, "", None) or str(value) == wanted

        return [
            r
            for r in self.corrections
            if ok(r["_config"], task)
            and ok(r.get("generator"), generator)
            and ok(r.get("level"), level)
            and ok(r.get("incorrect_step"), step)
        ]


ANY = "any"


def _natural(s: str) -> tuple:
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


# --------------------------------------------------------------------------------------------
# The handlers (plain functions: the UI and the API call the same code)
# --------------------------------------------------------------------------------------------


def _grade(text: str, gold: str | None, task: str) -> tuple[str | None, str | None]:
    from lema_hub.grading import extract_answer, grade

    if gold:
        v = grade(text, gold, task)
        return v.predicted_answer, v.verdict
    return extract_answer(text, task), None


def _panel(runner: ModelRunner, gen: Generation | None, gold: str | None, task: str, role: str) -> str:
    """A model's answer panel: header, step cards, verdict or status."""
    from lema_hub.formats import split_steps

    head = _header(role, runner.display_name)
    if gen is None:
        return head + _status("waiting…")
    steps = split_steps(gen.text) if gen.text.strip() else []
    if not gen.done.is_set():
        return head + render_step_cards(steps, cursor=True) + _status(f"generating… {gen.elapsed:.0f} s")
    if gen.error:
        return head + render_step_cards(steps) + _notice(f"Generation failed: {gen.error}", "error")
    predicted, verdict = _grade(gen.text, gold, task)
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

        self.lema = runner(lema, lema, cfg.base_url)
        self.baseline = (
            runner(baseline, baseline, cfg.baseline_base_url or cfg.base_url) if baseline else None
        )
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
        for ex in (*self._examples.values(), *self._mistakes.values()):
            if ex.question == question:
                return ex.task
        return "math" if gold and not re.fullmatch(r"[-\d.,/ ]+", gold) else "gsm8k"

    def solve(self, question: str, gold: str = "") -> Iterator[tuple[str, str]]:
        from lema_hub.formats import cot_prompt

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
        from lema_hub.formats import correction_prompt, cot_prompt, split_steps

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
        from lema_hub.correction import parse_correction

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
            from lema_hub.grading import grade

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


# The corrector's reject reasons (lema_hub.correction.REJECT_REASONS), in words for the page.
REJECT_WORDS = {
    "no_answer": "The rewrite states no final answer (no “The answer is …” line).",
    "inconsistent_steps": "The rewrite's step numbers do not continue from the flagged step.",
    "empty_explanation": "The model gave no explanation for the flagged step.",
    "step_out_of_range": "The flagged step number is not a step of this solution.",
    "parse_error": "The output is not in the correction format.",
}


def corrected_solution(steps: list[str], corrected: list[str], k: int) -> list[str]:
    """The whole corrected solution: original steps 1..k-1 (kept) then the corrected steps k..N.
    Accepts a correction that restates the solution from step 1 as well."""
    if len(corrected) >= k and [s.strip() for s in corrected[: k - 1]] == [s.strip() for s in steps[: k - 1]]:
        return corrected
    return list(steps[: k - 1]) + list(corrected)


# --------------------------------------------------------------------------------------------
# Browse
# --------------------------------------------------------------------------------------------


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


def model_facts(name: str) -> dict[str, Any]:
    """What a model is, from the metadata our training wrote: base model, steps, rows, data."""
    facts: dict[str, Any] = {"name": name}
    try:
        from lema_hub.models import base_model_hub_id, resolve_model

        facts["base_model"] = base_model_hub_id(name)
        folder = Path(resolve_model(name))
    except Exception:
        return facts
    if not folder.is_dir():
        return facts
    import yaml

    for candidate in (folder, folder.with_name(folder.name.removesuffix("-merged"))):
        summary_path, config_path = candidate / "run_summary.json", candidate / "lema_hub_config.yaml"
        if not summary_path.is_file():
            continue
        sft = json.loads(summary_path.read_text()).get("sft") or {}
        config = (
            (yaml.safe_load(config_path.read_text()) or {}).get("sft", {}) if config_path.is_file() else {}
        )
        state_path = candidate / "trainer_state.json"
        steps = json.loads(state_path.read_text()).get("global_step") if state_path.is_file() else None
        facts.update(
            steps=steps or config.get("max_steps"),
            batch_size=config.get("per_device_train_batch_size"),
            train_rows=(sft.get("metrics") or {}).get("train_samples"),
            datasets=sft.get("datasets"),
            dataset_config=sft.get("dataset_config"),
            adapter=sft.get("adapter"),
        )
        break
    return facts


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
`--backend openai --base_url http://host:8000/v1 --lema_model <served name>`. On a Space, set the same
options as `LEMA_DEMO_LEMA_MODEL`, `LEMA_DEMO_BACKEND`, `LEMA_DEMO_BASE_URL` variables."""


def eval_table(cfg: DemoConfig) -> str | None:
    """The comparison table an evaluation folder holds (`comparison.md`), or None."""
    folder = _none(cfg.eval_dir)
    path = Path(folder) / "comparison.md" if folder else None
    if path is None or not path.is_file():
        return None
    return path.read_text().strip() or None


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


def build_demo(cfg: DemoConfig | None = None, app: DemoApp | None = None) -> Any:
    """The Gradio Blocks (theme and CSS are applied by `launch`, as Gradio 6 wants)."""
    import gradio as gr

    cfg = cfg or DemoConfig()
    app = app or DemoApp(cfg)
    md = dict(latex_delimiters=LATEX_DELIMITERS, sanitize_html=True)
    gen_events = dict(concurrency_limit=cfg.concurrency_limit, concurrency_id="generation")
    solve_fn, correct_fn = _on_zero_gpu(app.solve, cfg), _on_zero_gpu(app.correct, cfg)

    with gr.Blocks(title=cfg.title) as demo:
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

        gold_info = "The known right answer, if you have it: each model's final answer is then marked ✓ or ✗."
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

        # Events: every one has an explicit api_name; generation shares one concurrency limit.
        s_pick.change(app.pick_example, s_pick, [s_question, s_gold], api_name="pick_example")
        solve_out = [s_base, s_lema]
        solve_runs = [
            s_button.click(solve_fn, [s_question, s_gold], solve_out, api_name="solve", **gen_events),
            s_question.submit(
                solve_fn, [s_question, s_gold], solve_out, api_name="solve_submit", **gen_events
            ),
        ]
        for trigger in (s_button.click, s_question.submit):
            trigger(
                None, js=_SCROLL_JS.format(target="#solve-lema"), api_name=f"scroll_{trigger.__name__}_solve"
            )
        s_stop.click(
            None,
            cancels=solve_runs,
            js=_STOPPED_JS.format(panels="#solve-lema, #solve-baseline"),
            api_name="solve_stop",
        )

        c_pick.change(
            app.pick_mistake, c_pick, [c_question, c_solution, c_gold, c_note], api_name="pick_mistake"
        )
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

        filters = [b_task, b_gen, b_level, b_step]

        def browse(task: str, generator: str, level: str, step: str, index: float | None) -> tuple[Any, ...]:
            """Rows are numbered from 1 on the page; out-of-range numbers get a line, not an error."""
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

    demo.queue(max_size=cfg.queue_size, default_concurrency_limit=cfg.concurrency_limit)
    demo.lema_app = app  # for tests and for `launch`
    return demo


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


# --------------------------------------------------------------------------------------------
# The Space folder
# --------------------------------------------------------------------------------------------

SPACE_DIR = Path(__file__).resolve().parents[1] / "spaces" / "demo"
SPACE_SDK_VERSION = "6.31.0"  # the Gradio version the app is tested with (pinned in the Space card)


def space_card_info(cfg: DemoConfig) -> dict[str, Any]:
    """What the Space README's `SpaceCardData` front matter and body say (models and datasets linked
    when they are Hub ids)."""

    def hub_ids(*names: str | None) -> list[str]:
        return [n for n in names if n and not _is_local_path(n) and ":" not in n and n.count("/") == 1]

    return dict(
        title="LeMa: Learning From Mistakes",
        sdk_version=SPACE_SDK_VERSION,
        app_file="app.py",
        license="apache-2.0",
        short_description="Math solutions corrected step by step, LeMa vs a CoT baseline",
        models=hub_ids(cfg.lema_model, cfg.baseline_model),
        datasets=hub_ids(cfg.corrections, cfg.mistakes),
        body=SPACE_BODY,
    )


SPACE_BODY = """## Configuration

Set Space variables named `LEMA_DEMO_<FIELD>` (any field of `lema_hub.demo.DemoConfig`):

| variable | what |
|---|---|
| `LEMA_DEMO_LEMA_MODEL` | the LeMa model (Hub id or folder) |
| `LEMA_DEMO_BASELINE_MODEL` | the CoT-only baseline shown beside it (`none` hides it) |
| `LEMA_DEMO_CORRECTIONS`, `LEMA_DEMO_MISTAKES` | the corrections (Browse) and mistakes (Correct examples) datasets |
| `LEMA_DEMO_EXAMPLES` | Solve examples, e.g. `sample,gsm8k,math500` |
| `LEMA_DEMO_BACKEND`, `LEMA_DEMO_BASE_URL` | `openai` or `inference_client` to use an endpoint instead of local inference (key in the `HF_TOKEN` secret) |

Without them the Space runs SmolLM2-135M-Instruct on the bundled sample problems."""


def write_space_readme(folder: str | Path, cfg: DemoConfig | None = None) -> Path:
    """Write `README.md` (front matter from `SpaceCardData`) into a Space folder."""
    from lema_hub.cards.model import write_space_card

    cfg = cfg or DemoConfig()
    folder = Path(folder)
    write_space_card(folder, space_card_info(cfg))
    return folder / "README.md"


def prepare_space_folder(out_dir: str | Path, cfg: DemoConfig | None = None) -> Path:
    """A folder ready to push as a Space repo: app.py, requirements.txt, README.md and lema_hub/.

    Push it with `lema_hub.push.push_folder(out_dir, repo_id, repo_type="space")`. The Space reads
    its models and datasets from `LEMA_DEMO_*` variables; `cfg` only fills the README's links.
    """
    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("app.py", "requirements.txt"):
        shutil.copy2(SPACE_DIR / name, out / name)
    license_file = SPACE_DIR.parents[1] / "LICENSE"
    if license_file.is_file():  # the code's license travels with the code
        shutil.copy2(license_file, out / "LICENSE")
    package = Path(__file__).resolve().parent
    target = out / "lema_hub"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    templates = package.parent
    for extra in ("dataset_cards", "model_cards"):  # lema_hub.cards renders cards from these
        if (templates / extra).is_dir() and not (target / "_templates" / extra).exists():
            shutil.copytree(templates / extra, target / "_templates" / extra)
    write_space_readme(out, cfg)
    return out


def config_fields() -> list[str]:
    return [f.name for f in fields(DemoConfig)]
