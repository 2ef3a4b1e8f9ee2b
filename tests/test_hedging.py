"""Hedged requests and slot-free retries in the engine, against a real HTTP server on 127.0.0.1.

The server decides each attempt's fate by its prompt: `slow` is never answered on its first
attempt (the handler waits until the client goes away, which it counts as a cancellation), every
later attempt and every other prompt is answered at once with the attempt number in the text.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from lema_hub.generation import EngineConfig, GenerationRequest, SamplingParams, make_engine  # noqa: E402
from lema_hub.generation.engine import _Dispatch  # noqa: E402


class PromptServer:
    """`attempts`, `answered`, `cancelled`: Counters by prompt; `order`: (prompt, attempt) as they came."""

    def __init__(
        self,
        hang_first: set[str] = frozenset(),
        limit_first: set[str] = frozenset(),
        hang_second: set[str] = frozenset(),
        first_after_s: float = 0.0,
    ) -> None:
        self.hang_first = set(hang_first)  # first attempt never answered
        self.limit_first = set(limit_first)  # first attempt answered 429 + Retry-After
        self.hang_second = set(hang_second)  # second attempt never answered
        self.first_after_s = first_after_s  # any first attempt is answered after this long
        self.attempts: collections.Counter[str] = collections.Counter()
        self.answered: collections.Counter[str] = collections.Counter()
        self.cancelled: collections.Counter[str] = collections.Counter()
        self.order: list[tuple[str, int]] = []
        self.seeds: dict[str, set] = collections.defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _complete(self, request: web.Request) -> web.Response:
        payload = await request.json()
        prompt = payload["messages"][-1]["content"]
        self.attempts[prompt] += 1
        n = self.attempts[prompt]
        self.order.append((prompt, n))
        self.seeds[prompt].add((payload.get("seed"), request.headers.get("X-Lema-Request-Key")))
        if n == 1 and prompt in self.hang_first or n == 2 and prompt in self.hang_second:
            try:
                await asyncio.sleep(120)
            except asyncio.CancelledError:
                self.cancelled[prompt] += 1
                raise
        if n == 1 and self.first_after_s and prompt in self.hang_second:
            await asyncio.sleep(self.first_after_s)
        if n == 1 and prompt in self.limit_first:
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0.5"}
            )
        self.answered[prompt] += 1
        message = {"role": "assistant", "content": f"{prompt} answer #{n}"}
        body = {
            "id": "x",
            "object": "chat.completion",
            "usage": {"prompt_tokens": 1, "completion_tokens": 3},
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        }
        return web.json_response(body)

    def __enter__(self) -> PromptServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.add_routes([web.post("/v1/chat/completions", self._complete)])
            # handler_cancellation: a client that goes away cancels its handler (counted above).
            self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def wait_for(self, check, what: str) -> None:
        """Wait (not a timing assertion: a deadline for an event the server reports) for `check()`."""
        deadline = time.monotonic() + 20
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"the server never saw {what}")
            time.sleep(0.02)


PROMPTS = ["slow", *(f"fast {i}" for i in range(7))]


def _engine(srv: PromptServer, cache, **more):
    cfg = EngineConfig(
        backend="openai",
        model="m",
        base_urls=[srv.base_url],
        prompt_style="chat",
        concurrency=8,
        progress=False,
        retry_base_delay=0.01,
        **more,
    )
    return make_engine(cfg, cache_path=cache)


def _requests(n: int = 1) -> list[GenerationRequest]:
    return [GenerationRequest(p, p, SamplingParams(temperature=0.7, seed=11, n=n)) for p in PROMPTS]


def test_a_hung_request_is_hedged_answered_once_and_its_first_attempt_cancelled(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with PromptServer(hang_first={"slow"}) as srv:
        with _engine(srv, cache, hedge_after_s=1.0) as engine:
            out = engine.generate(_requests())
            summary = engine.last_summary
        srv.wait_for(lambda: srv.cancelled["slow"] == 1, "the hung attempt cancelled")
        # One result per request; the slow one is the hedge's answer, the hung attempt never answered.
        assert [r.request_id for r in out] == PROMPTS
        assert all(r.ok for r in out)
        assert out[0].text == "slow answer #2"
        assert srv.attempts["slow"] == 2 and srv.answered["slow"] == 1
        assert all(srv.attempts[p] == 1 for p in PROMPTS[1:])
        # The hedge is the same request: same seed, same idempotency key.
        assert len(srv.seeds["slow"]) == 1
        assert summary["hedges"] == 1 and summary["hedge_wins"] == 1
        assert summary["generated"] == len(PROMPTS) and summary["failed"] == 0
        # One cache line per request; a rerun on the cache asks the server nothing.
        lines = [json.loads(line) for line in cache.read_text().splitlines()]
        assert len(lines) == len(PROMPTS) == len({rec["key"] for rec in lines})
        before = sum(srv.attempts.values())
        with _engine(srv, cache, hedge_after_s=1.0) as engine:
            again = engine.generate(_requests())
            assert engine.last_summary["cached"] == len(PROMPTS) and engine.last_summary["hedges"] == 0
        assert sum(srv.attempts.values()) == before
        assert [r.text for r in again] == [r.text for r in out]


def test_when_the_first_attempt_answers_first_the_hedge_is_cancelled_and_unused(tmp_path):
    cache = tmp_path / "cache.jsonl"
    with PromptServer(hang_second={"slow"}, first_after_s=3.0) as srv:
        with _engine(srv, cache, hedge_after_s=0.3, max_hedges=1) as engine:
            out = engine.generate(_requests())
            summary = engine.last_summary
        srv.wait_for(lambda: srv.cancelled["slow"] == 1, "the hung hedge cancelled")
        assert out[0].text == "slow answer #1"
        assert srv.attempts["slow"] == 2 and srv.answered["slow"] == 1
        assert summary["hedges"] == 1 and summary["hedge_wins"] == 0
        assert len(cache.read_text().splitlines()) == len(PROMPTS)


def test_without_hedging_each_request_is_sent_once(tmp_path):
    with PromptServer() as srv:
        with _engine(srv, tmp_path / "cache.jsonl") as engine:
            out = engine.generate(_requests(n=2))
            summary = engine.last_summary
        assert len(out) == 2 * len(PROMPTS) and all(r.ok for r in out)
        assert all(srv.attempts[p] == 2 for p in PROMPTS)  # the two samples, once each
        assert summary["hedges"] == 0 and summary["hedge_wins"] == 0
        assert len((tmp_path / "cache.jsonl").read_text().splitlines()) == 2 * len(PROMPTS)


def test_a_quantile_threshold_hedges_only_past_enough_finished_attempts(tmp_path):
    # 20 finished attempts are needed before a quantile is trusted: with 8 prompts x 3 samples the
    # hung one is hedged once 23 others have answered; with 8 x 1 it would wait (never hedged).
    # The 1 s floor keeps fast answers still in flight when the queue empties (a few ms past the
    # median under load) from being hedged too: only the hung one is.
    with PromptServer(hang_first={"slow"}) as srv:
        with _engine(srv, tmp_path / "c.jsonl", hedge_quantile=0.5, hedge_after_s=1.0) as engine:
            out = engine.generate(_requests(n=3))
            summary = engine.last_summary
        assert _Dispatch.MIN_SAMPLES <= 3 * len(PROMPTS) - 1
        assert len(out) == 3 * len(PROMPTS) and all(r.ok for r in out)
        assert summary["hedges"] == 1 and summary["hedge_wins"] == 1
        assert srv.attempts["slow"] == 4  # three samples, one of them hedged


def test_a_rate_limited_request_waits_without_holding_its_slot(tmp_path):
    # One slot: the 429'd request waits out Retry-After while the next request uses the slot.
    with PromptServer(limit_first={"slow"}) as srv:
        with _engine(srv, tmp_path / "c.jsonl") as engine:
            engine.config.concurrency = 1
            out = engine.generate(_requests()[:3])
        assert [r.text for r in out] == ["slow answer #2", "fast 0 answer #1", "fast 1 answer #1"]
        assert srv.order[:2] == [("slow", 1), ("fast 0", 1)]
        assert ("slow", 2) in srv.order


def test_hedge_settings_are_checked():
    with pytest.raises(ValueError, match="hedge_quantile"):
        EngineConfig(backend="openai", hedge_quantile=1.5)
    with pytest.raises(ValueError, match="max_hedges"):
        EngineConfig(backend="openai", hedge_after_s=1, max_hedges=0)
    assert not EngineConfig(backend="openai").hedging


def test_ranks_hedges_add_up_in_the_merged_summary():
    from lema_hub.distributed import merge_summaries

    rank = {"samples": 4, "cached": 0, "generated": 4, "failed": 0, "wall_s": 1.0, "tokens_per_s": 1.0}
    merged = merge_summaries(
        [{**rank, "hedges": 2, "hedge_wins": 1}, {**rank, "hedges": 3, "hedge_wins": 0}], 1.0
    )
    assert (merged["hedges"], merged["hedge_wins"]) == (5, 1)
