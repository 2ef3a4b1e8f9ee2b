"""Any OpenAI-compatible endpoint (OpenAI, vLLM, TGI's /v1, SGLang, `transformers serve`).

One `AsyncOpenAI` client per base URL; each attempt goes to the least busy one, so several servers
share the load and a retry after a failure usually lands on another server. The client's own
retries are off: the engine retries with its own policy and counts every attempt.

Per request, the client's CPU cost caps what one process can push through (benchmarks/engine.py):
so the client runs on openai's aiohttp transport (`DefaultAioHttpClient`, the SDK's choice "for
improved concurrency performance") and sends the JSON body through the SDK's documented raw
`client.post(...)`, skipping the typed-params transform and response models that we would only
read three fields from. Auth, base URL, timeouts and the SDK's typed HTTP errors are unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from lema_hub.generation.backends.base import Backend, api_key
from lema_hub.generation.retry import MalformedResponse, PermanentError

logger = logging.getLogger(__name__)


def make_http_client(transport: str):
    """The `http_client` for `AsyncOpenAI`: openai's aiohttp client, or None (the SDK's default)."""
    if transport == "httpx":
        return None
    from openai import DefaultAioHttpClient

    try:
        return DefaultAioHttpClient()
    except RuntimeError as exc:  # aiohttp is not installed
        if transport == "aiohttp":
            raise RuntimeError(
                "EngineConfig.http_transport='aiohttp' needs aiohttp: pip install 'openai[aiohttp]'."
            ) from exc
        logger.info("aiohttp is not installed; the openai backend uses the SDK's default transport.")
        return None


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
            AsyncOpenAI(
                api_key=key,
                base_url=u,
                max_retries=0,
                timeout=self.config.request_timeout,
                http_client=make_http_client(self.config.http_transport),
            )
            for u in urls
        ]
        self.in_flight = [0] * len(self.clients)

    async def astop(self) -> None:
        for c in self.clients:
            await c.close()
        self.clients = []

    def _pick(self) -> int:
        return min(range(len(self.clients)), key=self.in_flight.__getitem__)

    def payload(self, unit) -> dict[str, Any]:
        """The JSON body of one sample's request (`n` is always 1: each sample is its own request)."""
        sp = unit.sampling
        body: dict[str, Any] = {"model": self.config.model}
        if isinstance(unit.prompt, str):
            body["prompt"] = unit.prompt
        else:
            body["messages"] = unit.prompt
        body.update(max_tokens=sp.max_tokens, temperature=sp.temperature, top_p=sp.top_p, n=1)
        if sp.stop:
            body["stop"] = sp.stop
        seed = sp.sample_seed(unit.sample_index)
        if seed is not None:
            body["seed"] = seed
        if self.config.extra_body:
            body.update(self.config.extra_body)
        return body

    async def agenerate(self, unit) -> dict[str, Any]:
        chat = not isinstance(unit.prompt, str)
        i = self._pick()
        self.in_flight[i] += 1
        try:
            resp = await self.clients[i].post(
                "/chat/completions" if chat else "/completions",
                body=self.payload(unit),
                cast_to=object,  # the decoded JSON; a non-JSON body raises ValueError (retried)
                # An idempotency key: servers ignore it; our test server counts requests by it.
                options={"headers": {"X-Lema-Request-Key": unit.key}},
            )
        finally:
            self.in_flight[i] -= 1
        return parse_completion(resp, chat=chat)


def parse_completion(resp: Any, chat: bool) -> dict[str, Any]:
    """Text, finish reason and token usage of a decoded (chat) completion response."""
    if not isinstance(resp, dict):
        raise MalformedResponse(f"response is not a completion object: {str(resp)[:120]!r}")
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedResponse("response has no choices")
    choice = choices[0]
    if chat:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedResponse("choice has no message")
        text = message.get("content")
        if text is None and message.get("refusal"):
            raise PermanentError(f"model refused: {str(message['refusal'])[:200]}")
    else:
        text = choice.get("text")
    if not isinstance(text, str):
        raise MalformedResponse("choice has no text")
    usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
    return {
        "text": text,
        "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
    }
