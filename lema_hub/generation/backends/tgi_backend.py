"""Text Generation Inference / Inference Endpoints through `huggingface_hub.AsyncInferenceClient`.

Chat prompts use the Messages API (`chat_completion`), plain prompts `text_generation` with
details (finish reason and token counts). Several endpoint URLs share the load.
"""

from __future__ import annotations

from typing import Any

from lema_hub.generation.backends.base import Backend, api_key
from lema_hub.generation.retry import MalformedResponse
from lema_hub.models import is_hub_id

_FINISH = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}


class TGIBackend(Backend):
    def __init__(self, config) -> None:
        self.config = config
        self.clients: list = []
        self.in_flight: list[int] = []

    async def astart(self) -> None:
        from huggingface_hub import AsyncInferenceClient

        key = api_key(self.config.api_key_env)
        self.clients = [
            AsyncInferenceClient(base_url=u, api_key=key, timeout=self.config.request_timeout)
            for u in self.config.base_urls
        ]
        for client, url in zip(self.clients, self.config.base_urls):
            await _allow_self_hosted_offline(client, url)
        self.in_flight = [0] * len(self.clients)

    async def astop(self) -> None:
        for c in self.clients:
            close = getattr(c, "close", None)
            if close is not None:
                await close()
        self.clients = []

    async def agenerate(self, unit) -> dict[str, Any]:
        sp = unit.sampling
        i = min(range(len(self.clients)), key=self.in_flight.__getitem__)
        self.in_flight[i] += 1
        client = self.clients[i]
        seed = sp.sample_seed(unit.sample_index)
        try:
            if isinstance(unit.prompt, list):
                resp = await client.chat_completion(
                    messages=unit.prompt,
                    model=self.config.model if is_hub_id(self.config.model) else None,
                    max_tokens=sp.max_tokens,
                    temperature=sp.temperature,
                    top_p=sp.top_p,
                    stop=sp.stop,
                    seed=seed,
                    extra_body=self.config.extra_body,
                )
                if not getattr(resp, "choices", None):
                    raise MalformedResponse("response has no choices")
                choice = resp.choices[0]
                if choice.message is None or choice.message.content is None:
                    raise MalformedResponse("choice has no text")
                usage = getattr(resp, "usage", None)
                return {
                    "text": choice.message.content,
                    "finish_reason": choice.finish_reason,
                    "prompt_tokens": getattr(usage, "prompt_tokens", None),
                    "completion_tokens": getattr(usage, "completion_tokens", None),
                }
            greedy = sp.greedy
            resp = await client.text_generation(
                unit.prompt,
                details=True,
                max_new_tokens=sp.max_tokens,
                do_sample=not greedy,
                temperature=None if greedy else sp.temperature,
                top_p=None if greedy or sp.top_p >= 1 else sp.top_p,
                stop=sp.stop or None,
                seed=seed,
            )
            text = getattr(resp, "generated_text", None)
            if text is None:
                raise MalformedResponse("response has no generated_text")
            details = getattr(resp, "details", None)
            finish = getattr(details, "finish_reason", None)
            return {
                "text": _strip_stop(text, sp.stop),
                "finish_reason": _FINISH.get(finish, finish),
                "prompt_tokens": None,
                "completion_tokens": getattr(details, "generated_tokens", None),
            }
        finally:
            self.in_flight[i] -= 1


async def _allow_self_hosted_offline(client, url: str) -> None:
    """`HF_HUB_OFFLINE` blocks every request of huggingface_hub's HTTP session, a self-hosted TGI
    included. For an endpoint off the Hub, give the client a session without that block."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(url).hostname or ""
    if not constants.is_offline_mode() or host.endswith(("huggingface.co", "hf.co", "hf.space")):
        return
    if getattr(client, "_async_client", "missing") is not None:  # private attribute moved: keep the default
        return
    import httpx2
    from huggingface_hub.utils._http import async_hf_response_event_hook

    client._async_client = await client.exit_stack.enter_async_context(
        httpx2.AsyncClient(
            event_hooks={"response": [async_hf_response_event_hook]}, follow_redirects=True, timeout=None
        )
    )


def _strip_stop(text: str, stop: list[str] | None) -> str:
    """TGI returns the stop sequence at the end; OpenAI semantics leave it out."""
    for s in stop or ():
        if text.endswith(s):
            return text[: -len(s)]
    return text
