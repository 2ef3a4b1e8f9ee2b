"""The engine: expand requests into samples, reuse the cache, run a backend, retry, report.

Remote backends (`openai`, `tgi`) get at most `concurrency` requests in flight, each sample its own
request (so `n` works even where the server ignores it, and each sample is cached on its own); a
retry waits out its back-off without holding a slot, and with hedging on (`hedge_quantile` /
`hedge_after_s`) the slots left idle at the end of a call re-send the slowest requests.
Local backends (`transformers`, `vllm`) get length-sorted batches; every finished batch is
appended to the cache before the next starts.

The requests may come from a generator: remote backends pull them as slots free up, so only the
requests in flight (or waiting to retry) hold their prompts, never the whole input at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lema_hub.configs import register_secret, scrub_secrets, secret_values
from lema_hub.generation.backends.base import api_key
from lema_hub.generation.backends.openai_backend import OpenAIBackend
from lema_hub.generation.backends.tgi_backend import TGIBackend
from lema_hub.generation.backends.transformers_backend import TransformersBackend
from lema_hub.generation.backends.vllm_backend import VLLMBackend
from lema_hub.generation.cache import RequestCache, request_key
from lema_hub.generation.results import GenerationResults, ResultSpool
from lema_hub.generation.retry import (
    MalformedResponse,
    PermanentError,
    RetryPolicy,
    failure_cause,
    headers_of,
    is_permanent_status,
    parse_retry_after,
    status_of,
)
from lema_hub.generation.types import EngineConfig, GenerationRequest, GenerationResult, SamplingParams

logger = logging.getLogger(__name__)


@dataclass
class Unit:
    """One sample of one request: the unit of caching, retrying and counting."""

    position: int  # index in the flat output list
    request_id: str
    prompt: str | list[dict]  # resolved for the backend's prompt style
    sampling: SamplingParams
    sample_index: int
    key: str


class _Progress:
    """tqdm bar with requests/s (tqdm's rate), tokens/s and ETA; a no-op when disabled.

    The bar opens at the first sample that is not cached (`total` is None for a generator).
    """

    def __init__(self, total: int | None, desc: str, enabled: bool) -> None:
        self.start = time.perf_counter()
        self.tokens = 0
        self._last = 0.0
        self.bar = None
        self.total, self.desc, self.enabled = total, desc, enabled

    def open(self, done: int) -> None:
        if self.enabled and self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=done,
                desc=self.desc,
                unit="req",
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def update(self, tokens: int | None, n: int = 1) -> None:
        self.tokens += tokens or 0
        if self.bar is None:
            return
        self.bar.update(n)
        now = time.perf_counter()
        if now - self._last > 0.5:
            self._last = now
            self.bar.set_postfix_str(f"{self.tokens / max(now - self.start, 1e-9):.1f} tok/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Engine:
    """Generate `sampling.n` samples for each request with the configured backend."""

    def __init__(self, config: EngineConfig, cache_path: str | Path | None = None) -> None:
        self.config = config
        self.cache = RequestCache(cache_path)
        self.backend = _make_backend(config)
        self.last_summary: dict[str, Any] = {}
        self.policy = RetryPolicy(config.max_retries, config.retry_base_delay, config.retry_max_delay)
        self._secrets = _endpoint_secrets(config)
        self._flush_scheduled = False
        self._hedges = (0, 0)

    # ----------------------------------------------------------------- public API
    def generate(
        self, requests: Iterable[GenerationRequest], desc: str = "generating", total: int | None = None
    ) -> GenerationResults:
        """All samples, ordered by request then sample index; failures carry `error` and never raise.

        `requests` may be a generator: remote backends consume it lazily, keeping only the requests
        not in the cache, each until its result is recorded (results never hold the prompt); `total`
        (its samples, when known) gives the progress bar its end. The results are a read-only
        sequence spooled to disk as they land (beside the cache file, or in the temp dir): a call
        holds 12 bytes per result, not its text.
        """
        if isinstance(requests, Sequence):
            self._check(requests)  # a bad request fails before anything is sent
            total = sum(r.sampling.n for r in requests)
        progress = _Progress(total, desc, self.config.progress)
        spool = ResultSpool(self.cache.path.parent if self.cache.path is not None else None)
        source = _Source(self, requests, progress, spool)
        start = time.perf_counter()
        self._hedges = (0, 0)
        try:
            todo = source.peek()  # whether anything is not cached (nothing held here: the run drops it)
            if todo:
                if self.backend.is_async:
                    _run_coroutine(self._run_async(source, progress))
                else:  # batches are sorted by length: every uncached unit is needed up front
                    self._run_batched(list(iter(source.next, None)), source.results, progress)
        finally:
            progress.close()
        wall = time.perf_counter() - start
        self._progress_tokens = progress.tokens
        assert spool.pending() == 0
        out = GenerationResults(spool)
        self.last_summary = self._summarise(out, source.cached, wall)
        if todo:
            s = self.last_summary
            line = (
                f"{desc}: {s['samples']} samples ({s['cached']} cached, {s['generated']} generated, "
                f"{s['failed']} failed), {s['prompt_tokens']} prompt + {s['completion_tokens']} completion tokens, "
                f"{s['wall_s']:.1f} s ({s['requests_per_s']:.1f} req/s, {s['tokens_per_s']:.1f} tok/s)"
            )
            if s["failure_reasons"]:
                line += f"; failures: {s['failure_reasons']}"
            logger.info(line)
            if self.config.progress:
                print(line, file=sys.stderr)
        return out

    def close(self) -> None:
        self.cache.close()
        self.backend.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _check(self, requests: Iterable[GenerationRequest]) -> None:
        """Raise on a duplicate request id or a malformed prompt."""
        style = self.backend.prompt_style(self.config.prompt_style)
        seen: set[int] = set()
        for req in requests:
            _check_id(req.request_id, seen)
            _resolve_prompt(req.prompt, style, req.request_id)

    def _expand(self, requests: Iterable[GenerationRequest]) -> Iterator[Unit]:
        """The units of each request in turn, as the requests are drawn."""
        style = self.backend.prompt_style(self.config.prompt_style)
        position = 0
        seen: set[int] = set()
        for req in requests:
            _check_id(req.request_id, seen)
            prompt = _resolve_prompt(req.prompt, style, req.request_id)
            sp = req.sampling
            sampling_key = {
                "temperature": sp.temperature,
                "top_p": sp.top_p,
                "max_tokens": sp.max_tokens,
                "stop": sp.stop,
                "seed": sp.seed,
            }
            extra = {"extra_body": self.config.extra_body} if self.config.extra_body else None
            for i in range(sp.n):
                key = request_key(self.config.model, prompt, sampling_key, i, extra)
                position += 1
                yield Unit(position - 1, req.request_id, prompt, sp, i, key)

    async def _run_async(self, source: _Source, progress: _Progress) -> None:
        await self.backend.astart()
        dispatch = _Dispatch(self, source, progress)
        try:
            await dispatch.run()
        finally:
            self._hedges = (dispatch.hedges, dispatch.hedge_wins)
            self.cache.flush()
            await self.backend.astop()

    def _flush_cache(self) -> None:
        self._flush_scheduled = False
        self.cache.flush()

    def _store(self, u: Unit, out: dict[str, Any]) -> GenerationResult:
        """Cache one answer, with one flush for every answer that lands in the same loop iteration."""
        # (a flush per result was the engine's largest CPU item at 64 in flight)
        self.cache.put(u.key, out, flush=False)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_cache)
        return _result(u, out)

    def _run_batched(self, pending: list[Unit], results: ResultSpool, progress: _Progress) -> None:
        # Greedy samples of one prompt are identical: decode each distinct greedy prompt once.
        groups: dict[str, list[Unit]] = {}
        for u in pending:
            gkey = u.key if not u.sampling.greedy else f"{u.request_id}\x00{_sampling_tuple(u.sampling)}"
            groups.setdefault(gkey, []).append(u)
        leaders = [g[0] for g in groups.values()]
        lengths = {u.position: self.backend.prompt_length(u.prompt) for u in leaders}
        # Same sampling settings share a batch; longest prompts first (padding waste is smallest
        # within a length-sorted batch, and an out-of-memory error shows up at once).
        leaders.sort(key=lambda u: (_sampling_tuple(u.sampling), -lengths[u.position]))
        followers = {id(g[0]): g for g in groups.values()}
        bs = self.config.batch_size
        i = 0
        while i < len(leaders):
            batch = [leaders[i]]
            while (
                len(batch) < bs
                and i + len(batch) < len(leaders)
                and _sampling_tuple(leaders[i + len(batch)].sampling) == _sampling_tuple(batch[0].sampling)
            ):
                batch.append(leaders[i + len(batch)])
            i += len(batch)
            try:
                outs = self.backend.generate_batch(batch)
            except Exception as exc:  # noqa: BLE001 - recorded per sample, the run goes on
                logger.exception("Batch of %d failed", len(batch))
                outs = [exc] * len(batch)
            for u, out in zip(batch, outs):
                for member in followers[id(u)]:
                    if isinstance(out, Exception):
                        res = self._fail(member, _describe(out, status_of(out), self._secrets))
                    else:
                        self.cache.put(member.key, out)
                        res = _result(member, out)
                    results[member.position] = res
                    progress.update(res.completion_tokens)

    def _fail(self, u: Unit, reason: str) -> GenerationResult:
        """A failed sample; its reason never holds a credential (servers echo keys in errors)."""
        return _failure(u, scrub_secrets(reason, self._secrets))

    def _summarise(self, out: GenerationResults, cached: int, wall: float) -> dict[str, Any]:
        failed = list(out.failures())
        generated = len(out) - cached - len(failed)
        reasons: dict[str, int] = {}
        for r in failed:
            kind = failure_cause(r.error)
            reasons[kind] = reasons.get(kind, 0) + 1
        new_tokens = max(0, self._progress_tokens)
        return {
            "backend": self.config.backend,
            "model": self.config.model,
            "samples": len(out),
            "cached": cached,
            "generated": generated,
            "failed": len(failed),
            "failure_reasons": reasons,
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "wall_s": round(wall, 3),
            "requests_per_s": round((generated + len(failed)) / wall, 2) if wall > 0 else 0.0,
            "tokens_per_s": round(new_tokens / wall, 2) if wall > 0 else 0.0,
            # Extra attempts sent for slow requests, and how many of those answered first.
            "hedges": self._hedges[0],
            "hedge_wins": self._hedges[1],
        }


class _Source:
    """The units not in the cache, drawn one at a time; cache hits are recorded on the way."""

    def __init__(
        self, engine: Engine, requests: Iterable[GenerationRequest], progress: _Progress, spool: ResultSpool
    ) -> None:
        self.engine = engine
        self.units = engine._expand(requests)
        self.progress = progress
        self.results = spool  # by position, filled as units resolve
        self.cached = 0
        self.exhausted = False
        self._head: Unit | None = None  # drawn by `peek`, not yet taken

    def peek(self) -> bool:
        """Whether any unit is left to generate (draws the next one, and keeps it for `next`)."""
        if self._head is None:
            self._head = self.next()
        return self._head is not None

    def next(self) -> Unit | None:
        """The next unit to generate, or None once every request has been drawn."""
        if self._head is not None:
            u, self._head = self._head, None
            return u
        if self.exhausted:
            return None
        for u in self.units:
            self.results.append(None)
            hit = self.engine.cache.get(u.key)
            if hit is None:
                self.progress.open(self.cached)
                return u
            self.results[u.position] = _result(u, hit)
            self.cached += 1
            self.progress.update(None)
        self.exhausted = True
        return None


@dataclass
class _Flight:
    """A unit without its final result: its attempts in flight and what it has cost so far."""

    unit: Unit
    tasks: set = field(default_factory=set)
    started: float = 0.0  # loop time of its latest attempt (a hedge waits from there)
    failures: int = 0
    hedges: int = 0
    reason: str = "no attempt made"
    done: bool = False


class _Dispatch:
    """At most `concurrency` attempts in flight; retries wait out their back-off without a slot.

    Each attempt is a task whose done-callback settles its unit: the first answer is cached and
    recorded (the unit's other attempts are cancelled, their answers never used), a retryable
    failure re-queues the unit after its back-off unless another attempt of it is still running.
    With hedging on, once nothing is ready to send, an idle slot re-sends the same unit (same
    key, payload and seed) whose latest attempt has run past the threshold.
    """

    MIN_SAMPLES = 20  # finished attempts before a quantile threshold is trusted

    def __init__(self, engine: Engine, source: _Source, progress: _Progress) -> None:
        self.engine = engine
        self.config = engine.config
        self.policy = engine.policy
        self.source = source  # new units are drawn from it as slots free up
        self.results = source.results
        self.progress = progress
        self.ready: deque[Unit] = deque()  # retries due, ahead of new units
        self.flights: dict[int, _Flight] = {}  # position -> state, in order of first attempt
        self.left = 0  # units drawn and not yet resolved
        self.in_flight = 0
        self.wake = asyncio.Event()
        self.crash: BaseException | None = None
        self.timers: dict[int, asyncio.TimerHandle] = {}  # position -> its retry's back-off
        self.hedges = 0
        self.hedge_wins = 0
        self.latencies: list[float] = []  # of the answers used (with hedge_quantile only)
        self._threshold: float | None = None
        self._threshold_n = 0
        self.closing = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.config.concurrency
        try:
            while self.left or not self.source.exhausted:
                if self.crash is not None:
                    raise self.crash
                timeout = None
                while self.in_flight < limit:
                    if self.ready:
                        self._launch(self.ready.popleft(), loop)
                        continue
                    u = self.source.next()
                    if u is not None:
                        self.left += 1
                        self._launch(u, loop)
                        continue
                    if not self.config.hedging:
                        break
                    flight, timeout = self._hedge_candidate(loop.time())
                    if flight is None:
                        break
                    self.hedges += 1
                    flight.hedges += 1
                    self._launch(flight.unit, loop, hedge=True)
                if not self.left and self.source.exhausted:
                    break  # the last draws were cache hits: nothing is left to land
                self.wake.clear()
                if timeout is None:
                    await self.wake.wait()
                else:  # the next attempt to pass the threshold, unless something lands first
                    try:
                        await asyncio.wait_for(self.wake.wait(), timeout)
                    except TimeoutError:
                        pass
            if self.crash is not None:
                raise self.crash
        finally:
            self.closing = True  # what lands from here on (cancelled attempts) settles nothing
            for handle in self.timers.values():
                handle.cancel()
            tasks = [t for f in self.flights.values() for t in f.tasks]
            for t in tasks:
                t.cancel()
            if tasks:  # let them close their connections before the backend stops
                await asyncio.gather(*tasks, return_exceptions=True)

    def _launch(self, u: Unit, loop: asyncio.AbstractEventLoop, hedge: bool = False) -> None:
        flight = self.flights.get(u.position)
        if flight is None:
            flight = self.flights[u.position] = _Flight(u)
        started = loop.time()
        flight.started = started
        task = loop.create_task(self.engine.backend.agenerate(u))
        flight.tasks.add(task)
        self.in_flight += 1
        task.add_done_callback(lambda t: self._landed(flight, t, started, hedge))

    def _landed(self, flight: _Flight, task: asyncio.Task, started: float, hedge: bool) -> None:
        self.in_flight -= 1
        flight.tasks.discard(task)
        self.wake.set()
        if flight.done or self.closing:  # another attempt answered first: this one is not used
            return
        try:
            self._settle(flight, task, started, hedge)
        except BaseException as exc:  # noqa: BLE001 - e.g. the cache's disk is full: run() raises it
            self.crash = exc

    def _settle(self, flight: _Flight, task: asyncio.Task, started: float, hedge: bool) -> None:
        u = flight.unit
        exc = asyncio.CancelledError() if task.cancelled() else task.exception()
        if exc is None:
            out = task.result()
            try:
                _validate(out)
            except MalformedResponse as bad:
                exc = bad
            else:
                if self.config.hedge_quantile is not None:
                    self.latencies.append(asyncio.get_running_loop().time() - started)
                self.hedge_wins += hedge
                self._resolve(flight, self.engine._store(u, out))
                return
        if isinstance(exc, PermanentError):
            self._resolve(flight, self.engine._fail(u, str(exc)))
            return
        status = status_of(exc)
        if is_permanent_status(status):
            text = _error_text(exc, secrets=self.engine._secrets)
            self._resolve(flight, self.engine._fail(u, f"HTTP {status}: {text}"))
            return
        flight.failures += 1
        flight.reason = _describe(exc, status, self.engine._secrets)
        if flight.tasks:  # another attempt of this unit is still running: it carries the unit
            return
        if flight.failures > self.policy.max_retries:
            reason = f"gave up after {flight.failures} attempts: {flight.reason}"
            self._resolve(flight, self.engine._fail(u, reason))
            return
        delay = self.policy.delay(flight.failures - 1, parse_retry_after(headers_of(exc)))
        self.timers[u.position] = asyncio.get_running_loop().call_later(delay, self._requeue, u)

    def _requeue(self, u: Unit) -> None:
        del self.timers[u.position]
        self.ready.appendleft(u)  # it was asked before the units still queued
        self.wake.set()

    def _resolve(self, flight: _Flight, res: GenerationResult) -> None:
        """The unit's final result: recorded once; its other attempts are cancelled."""
        flight.done = True
        for t in flight.tasks:
            t.cancel()
        del self.flights[flight.unit.position]
        self.results[flight.unit.position] = res
        self.progress.update(res.completion_tokens)
        self.left -= 1

    def _hedge_candidate(self, now: float) -> tuple[_Flight | None, float | None]:
        """The first running unit (by first attempt) past the threshold, else (None, seconds until one is)."""
        threshold = self._hedge_threshold()
        if threshold is None:
            return None, None  # not enough finished attempts yet: wait for the next one
        soonest = None
        for flight in self.flights.values():
            if not flight.tasks or flight.hedges >= self.config.max_hedges:
                continue  # waiting out a back-off, or hedged enough
            due = flight.started + threshold
            if due <= now:
                return flight, None
            soonest = due if soonest is None else min(soonest, due)
        return None, None if soonest is None else soonest - now

    def _hedge_threshold(self) -> float | None:
        q, floor = self.config.hedge_quantile, self.config.hedge_after_s
        if q is None:
            return floor
        n = len(self.latencies)
        if n < self.MIN_SAMPLES:
            return None
        if self._threshold is None or n >= self._threshold_n * 1.02 + 16:  # re-sorted now and then
            self._threshold = sorted(self.latencies)[min(n - 1, int(q * n))]
            self._threshold_n = n
        return max(self._threshold, floor or 0.0)


def make_engine(config: EngineConfig, cache_path: str | Path | None = None) -> Engine:
    """Build an `Engine` (the backend's model or clients are created lazily)."""
    return Engine(config, cache_path)


# --------------------------------------------------------------------- helpers
def _make_backend(config: EngineConfig):
    if config.backend == "openai":
        return OpenAIBackend(config)
    if config.backend == "tgi":
        return TGIBackend(config)
    if config.backend == "transformers":
        return TransformersBackend(config)

    return VLLMBackend(config)


def _resolve_prompt(prompt: str | list[dict], style: str, request_id: str) -> str | list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}] if style == "chat" else prompt
    if not isinstance(prompt, list) or not all(
        isinstance(m, dict) and "role" in m and "content" in m for m in prompt
    ):
        raise ValueError(
            f"Request {request_id!r}: prompt must be a string or a list of "
            "{'role': ..., 'content': ...} messages."
        )
    if style == "plain":
        raise ValueError(
            f"Request {request_id!r} has chat messages but the engine's prompt_style is 'plain'; "
            "pass a string, or use prompt_style 'chat'."
        )
    return prompt


def _check_id(request_id: str, seen: set[int]) -> None:
    # The ids' 64-bit hashes, not the ids: a call's bookkeeping stays small per request.
    h = hash(request_id)
    if h in seen:
        raise ValueError(f"Duplicate request_id {request_id!r}: request ids must be unique per call.")
    seen.add(h)


def _sampling_tuple(sp: SamplingParams) -> tuple:
    return (sp.temperature, sp.top_p, sp.max_tokens, tuple(sp.stop or ()), sp.seed)


def _validate(out: Any) -> None:
    if not isinstance(out, dict) or not isinstance(out.get("text"), str):
        raise MalformedResponse(f"no completion text in the response ({type(out).__name__})")


def _result(u: Unit, out: dict[str, Any]) -> GenerationResult:
    return GenerationResult(
        u.request_id,
        u.sample_index,
        out.get("text"),
        out.get("finish_reason"),
        out.get("prompt_tokens"),
        out.get("completion_tokens"),
        None,
    )


def _failure(u: Unit, reason: str) -> GenerationResult:
    return GenerationResult(u.request_id, u.sample_index, None, None, None, None, reason)


def _endpoint_secrets(config: EngineConfig) -> set[str]:
    """Credentials an error text must never carry: the endpoint key, URL passwords, env tokens."""
    from urllib.parse import unquote, urlsplit

    found = {api_key(config.api_key_env) or ""}
    for url in config.base_urls or ():
        try:
            parts = urlsplit(url)
            found |= {parts.password or "", unquote(parts.password or "")}
        except ValueError:
            continue
    for value in found:
        register_secret(value)  # the run record and the card scrub it too
    return {v for v in found if v} | set(secret_values())


def _error_text(exc: BaseException, limit: int = 200, secrets: Any = ()) -> str:
    # Scrubbed before the cut: a truncated key would no longer match its value.
    text = scrub_secrets(str(exc).replace("\n", " "), secrets)
    return text[:limit] + ("..." if len(text) > limit else "")


def _connection_error(exc: BaseException) -> BaseException | None:
    """The `ConnectionError` (refused, reset ...) in an exception's chain, if any."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ConnectionError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _describe(exc: BaseException, status: int | None, secrets: Any = ()) -> str:
    if status is not None:
        return f"HTTP {status}: {_error_text(exc, secrets=secrets)}"
    conn = _connection_error(exc)
    if conn is not None:  # the endpoint is down or dropped us (aiohttp's client calls it a timeout)
        return f"connection failed: {type(conn).__name__}: {_error_text(conn, secrets=secrets)}"
    if isinstance(exc, MalformedResponse | ValueError):
        return f"malformed response: {type(exc).__name__}: {_error_text(exc, secrets=secrets)}"
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return f"timeout: {name}"
    return f"{name}: {_error_text(exc, secrets=secrets)}"


def _run_coroutine(coro) -> Any:
    """Run `coro` to completion, also when called from a thread that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="lema-engine")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")
