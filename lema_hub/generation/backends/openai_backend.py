"""Any OpenAI-compatible endpoint (OpenAI, vLLM, TGI's /v1, SGLang, `transformers serve`).

One `AsyncOpenAI` client per base URL; each attempt goes to the least busy one, so several servers
share the load and a retry after a failure usually lands on another server. The client's own
retries are off: the engine retries with its own policy and counts every attempt.
"""

from __future__ import annotations

from typing import Any

from lema_hub.generation.backends.base import Backend, api_key
from lema_hub.generation.retry import MalformedResponse, PermanentError


class OpenAIBackend(Backend):
    def __init__(self, config) -> None:
        self.config = config
        self.clients: list = []
        self.in_flight: list[int] = []

    async def astart(self) -> None:
        from openai import AsyncOpenAI

        key = api_key(self.config.api_key_env) or "EMPTY"  # local servers accept any key
        urls = self.config.base_urls or [
            None
        ]  # None: the client's default (api.openai.com or $OPENAI_BASE_URL)
        self.clients = [
            AsyncOpenAI(api_key=key, base_url=u, max_retries=0, timeout=self.config.request_timeout)
            for u in urls
        ]
        self.in_flight = [0] * len(self.clients)

    async def astop(self) -> None:
        for c in self.clients:
            await c.close()
        self.clients = []

    def _pick(self) -> int:
        return min(range(len(self.clients)), key=self.in_flight.__getitem__)

    async def agenerate(self, unit) -> dict[str, Any]:
        sp = unit.sampling
        kwargs: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": sp.max_tokens,
            "temperature": sp.temperature,
            "top_p": sp.top_p,
            "n": 1,
        }
        if sp.stop:
            kwargs["stop"] = sp.stop
        seed = sp.sample_seed(unit.sample_index)
        if seed is not None:
            kwargs["seed"] = seed
        if self.config.extra_body:
            kwargs["extra_body"] = self.config.extra_body
        # An idempotency key: servers ignore it; our test server counts requests by it.
        kwargs["extra_headers"] = {"X-Lema-Request-Key": unit.key}
        i = self._pick()
        self.in_flight[i] += 1
        try:
            if isinstance(unit.prompt, str):
                resp = await self.clients[i].completions.create(prompt=unit.prompt, **kwargs)
                return _parse(resp, chat=False)
            resp = await self.clients[i].chat.completions.create(messages=unit.prompt, **kwargs)
            return _parse(resp, chat=True)
        finally:
            self.in_flight[i] -= 1


def _parse(resp: Any, chat: bool) -> dict[str, Any]:
    if isinstance(resp, str | bytes) or not hasattr(resp, "choices"):
        raise MalformedResponse(f"response is not a completion object: {str(resp)[:120]!r}")
    choices = resp.choices or []
    if not choices:
        raise MalformedResponse("response has no choices")
    choice = choices[0]
    text = choice.message.content if chat and choice.message is not None else getattr(choice, "text", None)
    if text is None:
        if chat and getattr(choice.message, "refusal", None):
            raise PermanentError(f"model refused: {choice.message.refusal[:200]}")
        raise MalformedResponse("choice has no text")
    usage = getattr(resp, "usage", None)
    return {
        "text": text,
        "finish_reason": choice.finish_reason,
        "prompt_tokens": getattr(usage, "prompt_tokens", None),
        "completion_tokens": getattr(usage, "completion_tokens", None),
    }
