"""Talking to the models: local transformers with a streamer, or an endpoint (backends as
`lema_hub.generation` names them), plus the rules that stop a generation early."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lema_hub.demo.config import DEMO_BACKENDS, DemoConfig, _is_local_path, _none
from lema_hub.formats import as_messages, parse_rendered_steps
from lema_hub.generation.backends.base import api_key
from lema_hub.models import load_model, load_tokenizer, resolve_prompt_style

logger = logging.getLogger(__name__)


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
        self.base_url = base_url  # one endpoint URL (the first of the config's `base_urls`)
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

            t0 = time.time()
            device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            tokenizer = load_tokenizer(self.name)
            model = load_model(self.name, dtype=dtype).to(device).eval()
            self._tokenizer, self._model = tokenizer, model
            logger.info("loaded %s on %s in %.1fs", self.name, device, time.time() - t0)

    def prompt_style(self) -> str:
        if self._style is None:
            self._style = resolve_prompt_style(
                self.cfg.prompt_style, self.name, self.cfg.backend, self._loaded_tokenizer
            )
        return self._style

    def _loaded_tokenizer(self):
        self.load()
        return self._tokenizer

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
        key = api_key(self.cfg.api_key_env) or "none"
        timeout = self.cfg.generation_timeout_s
        chat = self.prompt_style() == "chat"
        stream = self.cfg.endpoint_stream
        if self.cfg.backend == "tgi":
            from huggingface_hub import InferenceClient

            client = InferenceClient(
                model=None if self.base_url else self.name,
                base_url=self.base_url,
                token=key if key != "none" else None,
                timeout=timeout,
            )
            if not chat:
                raise ValueError("backend tgi serves chat models; use backend openai for plain prompts")
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
                raise ValueError("backend openai needs --base_urls (the endpoint's /v1 URL)")
            client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=2)
            common = dict(model=self.name, max_tokens=max_new_tokens, temperature=0.0, stream=stream)
            if chat:
                response = client.chat.completions.create(messages=as_messages(prompt), **common)
            else:
                response = client.completions.create(prompt=prompt, **common)
        else:
            raise ValueError(f"backend must be one of {', '.join(DEMO_BACKENDS)}, got {self.cfg.backend!r}")

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
