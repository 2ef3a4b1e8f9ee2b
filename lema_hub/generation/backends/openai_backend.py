"""Any OpenAI-compatible endpoint (OpenAI, vLLM, TGI's /v1, SGLang, `transformers serve`).

Several base URLs share the load: each attempt goes to the least busy one, so a retry after a
failure usually lands on another server. Nothing retries below the engine: it retries with its
own policy and counts every attempt.

Per request, the client's CPU cost caps what one process can push through (benchmarks/engine.py):
the SDK's request pipeline (options, headers, httpx request objects, its aiohttp adapter) cost
~0.5 ms of CPU per request, more than aiohttp itself. So with aiohttp installed (`http_transport`
`auto` or `aiohttp`) each request is one `aiohttp` POST of the JSON body to `<base_url>/
(chat/)completions` with the same `Authorization: Bearer` header the SDK sends, on one pooled
session per run; a non-2xx answer raises `HTTPStatusError` (status and headers, so 429's
Retry-After is honoured). `http_transport: httpx` keeps the `AsyncOpenAI` client (its raw
`client.post`, the SDK's typed HTTP errors).
"""

from __future__ import annotations

import json
import logging
import os
from types import SimpleNamespace
from typing import Any

from lema_hub.generation.backends.base import Backend, api_key
from lema_hub.generation.retry import MalformedResponse, PermanentError

logger = logging.getLogger(__name__)


DEFAULT_BASE_URL = "https://api.openai.com/v1"


class HTTPStatusError(RuntimeError):
    """A non-2xx answer; `status_code` and `response.headers` are read by the engine's retry logic."""

    def __init__(self, status: int, headers: Any, message: str) -> None:
        super().__init__(f"Error code: {status} - {message}")
        self.status_code = status
        self.response = SimpleNamespace(status_code=status, headers=headers)


def use_aiohttp(transport: str) -> bool:
    """Whether requests go straight through aiohttp (`auto`: when it is installed)."""
    if transport == "httpx":
        return False
    try:
        import aiohttp  # noqa: F401
    except ImportError as exc:
        if transport == "aiohttp":
            raise RuntimeError(
                "EngineConfig.http_transport='aiohttp' needs aiohttp: pip install 'openai[aiohttp]'."
            ) from exc
        logger.info("aiohttp is not installed; the openai backend uses the SDK's default transport.")
        return False
    return True


def _env_proxy(url: str) -> str | None:
    """The proxy the environment sets for `url` (HTTP(S)_PROXY, minus NO_PROXY), or None."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


class OpenAIBackend(Backend):
    def __init__(self, config) -> None:
        self.config = config
        self.clients: list = []
        self.in_flight: list[int] = []
        self.session = None  # the aiohttp session (direct transport)
        self.urls: list[str] = []
        self.proxies: list[str | None] = []

    async def astart(self) -> None:
        if use_aiohttp(self.config.http_transport):
            await self._start_aiohttp()
            return
        # The SDK path (`httpx`, or aiohttp not installed): its default httpx transport.
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
            )
            for u in urls
        ]
        self.in_flight = [0] * len(self.clients)

    async def _start_aiohttp(self) -> None:
        import aiohttp

        key = api_key(self.config.api_key_env) or "EMPTY"
        base = self.config.base_urls or [os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL]
        self.urls = [u.rstrip("/") for u in base]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        # The SDK's other client-level headers, from the same environment variables.
        for env, header in (
            ("OPENAI_ORG_ID", "OpenAI-Organization"),
            ("OPENAI_PROJECT_ID", "OpenAI-Project"),
        ):
            if os.environ.get(env):
                headers[header] = os.environ[env]
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # the engine's workers bound the connections
            timeout=aiohttp.ClientTimeout(total=self.config.request_timeout),
            headers=headers,
        )
        # HTTP(S)_PROXY / NO_PROXY as the SDK's httpx client honours them, looked up once per URL:
        # aiohttp's `trust_env` looks them (and ~/.netrc) up on every request, which cost a
        # fifth of the throughput at 64 in flight.
        self.proxies = [_env_proxy(u) for u in self.urls]
        self.in_flight = [0] * len(self.urls)

    async def astop(self) -> None:
        for c in self.clients:
            await c.close()
        self.clients = []
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _pick(self) -> int:
        if len(self.in_flight) == 1:
            return 0
        return min(range(len(self.in_flight)), key=self.in_flight.__getitem__)

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
            if self.session is not None:
                resp = await self._post(i, chat, unit)
                return parse_completion(resp, chat=chat)
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

    async def _post(self, i: int, chat: bool, unit) -> Any:
        url = self.urls[i] + ("/chat/completions" if chat else "/completions")
        data = json.dumps(self.payload(unit), ensure_ascii=False).encode()
        # An idempotency key: servers ignore it; our test server counts requests by it.
        headers = {"X-Lema-Request-Key": unit.key}
        async with self.session.post(url, data=data, headers=headers, proxy=self.proxies[i]) as r:
            if r.status >= 300:
                raise HTTPStatusError(r.status, r.headers, (await r.text(errors="replace"))[:300])
            return json.loads(await r.read())  # not JSON: ValueError, retried as malformed


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
