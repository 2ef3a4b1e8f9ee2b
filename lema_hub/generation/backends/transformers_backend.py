"""Local batched generation with `transformers` (the default for the embedded model).

Left padding, batches of similar length (the engine sorts them), sampling or greedy. Each batch is
decoded in one `generate` call; EOS and stop strings end a row, and its text is cut at the stop.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from lema_hub.generation.backends.base import Backend
from lema_hub.models import load_model, load_tokenizer, resolve_prompt_style


class TransformersBackend(Backend):
    is_async = False

    def __init__(self, config) -> None:
        self.config = config
        self._model = None
        self._tok = None
        self._lock = threading.Lock()

    # Loaded lazily: building an engine is cheap, the first batch pays for the model.
    @property
    def tokenizer(self):
        if self._tok is None:
            tok = load_tokenizer(self.config.model)
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            self._tok = tok
        return self._tok

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.config.model).eval()
        return self._model

    def prompt_style(self, requested: str) -> str:
        return resolve_prompt_style(requested, self.config.model, "transformers", lambda: self.tokenizer)

    def render(self, prompt: str | list[dict]) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def prompt_length(self, prompt) -> int:
        return len(
            self.tokenizer(self.render(prompt), add_special_tokens=isinstance(prompt, str))["input_ids"]
        )

    def generate_batch(self, units: list) -> list[dict[str, Any]]:
        import torch

        tok, model = self.tokenizer, self.model
        sp = units[0].sampling
        texts = [self.render(u.prompt) for u in units]
        enc = tok(
            texts, return_tensors="pt", padding=True, add_special_tokens=isinstance(units[0].prompt, str)
        )
        enc = enc.to(model.device)
        gen_kwargs: dict[str, Any] = {"max_new_tokens": sp.max_tokens, "pad_token_id": tok.pad_token_id}
        if sp.greedy:
            gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(do_sample=True, temperature=sp.temperature, top_p=sp.top_p, top_k=None)
            if sp.seed is not None:
                # Reproducible for a given batch: seeded from the batch's own request keys.
                digest = hashlib.sha256("".join(u.key for u in units).encode()).hexdigest()
                torch.manual_seed(int(digest[:8], 16))
        if sp.stop:
            gen_kwargs.update(stop_strings=list(sp.stop), tokenizer=tok)
        with self._lock, torch.inference_mode():
            out = model.generate(**enc, **gen_kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        eos_ids = _eos_ids(model, tok)
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, plen in zip(new.tolist(), prompt_lens):
            n_tokens, finish = len(row), "length"
            for j, t in enumerate(row):
                if t in eos_ids:
                    n_tokens, finish = j + 1, "stop"
                    break
            while (
                n_tokens
                and finish == "length"
                and row[n_tokens - 1] == tok.pad_token_id
                and tok.pad_token_id not in eos_ids
            ):
                n_tokens -= 1  # padding after a row stopped on a stop string
            text = tok.decode(row[:n_tokens], skip_special_tokens=True)
            if sp.stop:
                cut = min((i for i in (text.find(s) for s in sp.stop) if i >= 0), default=-1)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            results.append(
                {
                    "text": text,
                    "finish_reason": finish,
                    "prompt_tokens": int(plen),
                    "completion_tokens": n_tokens,
                }
            )
        return results

    def close(self) -> None:
        self._model = None


def _eos_ids(model, tok) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return ids
