"""Benchmark the generation engine.

1. Remote: a loopback OpenAI-compatible server (tests/fake_openai_server.py, asyncio, in its own
   process) answering every request after a fixed latency. Achieved requests/s at several
   concurrencies vs the ideal (concurrency / latency) and vs a plain `asyncio.gather` over
   `AsyncOpenAI` with a semaphore; the engine runs with its JSONL cache on and off, and on the
   SDK's default httpx transport; a bare aiohttp loop (no SDK) shows this machine's ceiling.
2. Local: tokens/s of the transformers backend at batch 1 vs larger batches (embedded model, greedy).

    python benchmarks/engine.py                       # both
    python benchmarks/engine.py --skip_local          # remote only (seconds)
    python benchmarks/engine.py --skip_local --concurrency 16 64 --reps 5   # the engine goal
    python benchmarks/engine.py --local_prompts 16 --local_tokens 64 --batch_sizes 1 8 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lema_hub.generation import EngineConfig, GenerationRequest, SamplingParams, make_engine  # noqa: E402
from lema_hub.schema import EMBEDDED_MODEL  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai_server", "--port", str(port), "--latency_s", str(latency)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = proc.stdout.readline()
    if "serving on" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line}")
    return proc, f"http://127.0.0.1:{port}/v1"


async def plain_loop(base_url: str, prompts: list[str], concurrency: int) -> float:
    """The baseline: what one would write by hand (AsyncOpenAI with its default client)."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(p: str) -> str:
        async with sem:
            r = await client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": p}], max_tokens=64, temperature=0.0
            )
            return r.choices[0].message.content

    start = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    elapsed = time.perf_counter() - start
    await client.close()
    return elapsed


async def bare_aiohttp_loop(base_url: str, prompts: list[str], concurrency: int) -> float:
    """No SDK at all: aiohttp posting JSON. The ceiling of a Python client on this machine."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(p: str) -> str:
            body = {"model": "fake", "messages": [{"role": "user", "content": p}], "max_tokens": 64}
            async with sem, session.post(f"{base_url}/chat/completions", json=body) as r:
                return (await r.json())["choices"][0]["message"]["content"]

        start = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        return time.perf_counter() - start


def engine_run(
    base_url: str,
    prompts: list[str],
    concurrency: int,
    cache_path: str | None,
    transport: str = "auto",
    hedge_quantile: float | None = None,
) -> float:
    cfg = EngineConfig(
        backend="openai",
        model="fake",
        base_urls=[base_url],
        prompt_style="chat",
        concurrency=concurrency,
        progress=False,
        http_transport=transport,
        hedge_quantile=hedge_quantile,
    )
    reqs = [GenerationRequest(f"r{i}", p, SamplingParams(max_tokens=64)) for i, p in enumerate(prompts)]
    with make_engine(cfg, cache_path) as engine:
        start = time.perf_counter()
        results = engine.generate(reqs)
        elapsed = time.perf_counter() - start
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return elapsed


def run_setting(name: str, url: str, prompts: list[str], c: int, cache: str | None) -> float:
    """Seconds for one setting of the remote table (each engine setting gets its own prompts)."""
    if name == "plain":
        return asyncio.run(plain_loop(url, prompts, c))
    if name == "bare":
        return asyncio.run(bare_aiohttp_loop(url, prompts, c))
    transport = "httpx" if name == "httpx" else "auto"
    hedge = 0.75 if name == "hedge" else None
    return engine_run(url, [f"{p} {name}" for p in prompts], c, cache, transport, hedge)


def bench_remote(latency: float, concurrencies: list[int], rounds: int, reps: int) -> None:
    proc, url = start_server(latency)
    try:
        asyncio.run(plain_loop(url, [f"warmup {i}" for i in range(32)], 16))  # connections, imports
        print(f"\n## Remote: loopback server, {latency * 1000:.0f} ms latency per request\n")
        print(
            "| concurrency | requests | ideal | plain AsyncOpenAI | engine (cache on) | engine (cache off) "
            "| engine, httpx transport | engine, hedging p75 | bare aiohttp | engine / ideal | engine / bare "
            "| hedging / bare | engine / plain | cache cost |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        with tempfile.TemporaryDirectory() as tmp:
            for c in concurrencies:
                n = max(40, c * rounds)
                ideal = c / latency
                names = ("plain", "cache", "nocache", "httpx", "hedge", "bare")
                rates: dict[str, list[float]] = {k: [] for k in names}
                for rep in range(reps):  # the median of `reps`: the machine is shared
                    tag = f"c{c}-rep{rep}"
                    prompts = [f"{tag} question {i}" for i in range(n)]
                    for name in rates:
                        cached = name in ("cache", "hedge")
                        cache = os.path.join(tmp, f"{tag}-{name}.jsonl") if cached else None
                        rates[name].append(n / run_setting(name, url, prompts, c, cache))
                best = {k: statistics.median(v) for k, v in rates.items()}
                print(
                    f"| {c} | {n} | {ideal:.0f} | {best['plain']:.0f} | {best['cache']:.0f} | "
                    f"{best['nocache']:.0f} | {best['httpx']:.0f} | {best['hedge']:.0f} | {best['bare']:.0f} | "
                    f"{best['cache'] / ideal:.0%} | {best['cache'] / best['bare']:.0%} | "
                    f"{best['hedge'] / best['bare']:.0%} | {best['cache'] / best['plain']:.2f}x | "
                    f"{1 - best['cache'] / best['nocache']:+.0%} |",
                    flush=True,
                )
    finally:
        proc.kill()
        proc.wait()


def bench_local(model: str, n_prompts: int, max_tokens: int, batch_sizes: list[int]) -> None:
    from lema_hub.formats import cot_prompt
    from lema_hub.problems import load_sample

    questions = [p.question for p in load_sample("train")][:n_prompts]
    print(
        f"\n## Local transformers backend: {model}, {len(questions)} prompts, {max_tokens} new tokens, greedy\n"
    )
    print("| batch size | wall s | completion tokens | tokens/s | speed-up vs batch 1 |")
    print("|---:|---:|---:|---:|---:|")
    base = None
    engine = make_engine(EngineConfig(model=model, progress=False))
    _ = engine.backend.model  # load once, outside the timing
    for bs in batch_sizes:
        engine.config.batch_size = bs
        engine.cache._data.clear()  # in-memory cache: every batch size decodes from scratch
        reqs = [
            GenerationRequest(f"b{bs}-{i}", cot_prompt(q), SamplingParams(max_tokens=max_tokens))
            for i, q in enumerate(questions)
        ]
        start = time.perf_counter()
        results = engine.generate(reqs)
        wall = time.perf_counter() - start
        toks = sum(r.completion_tokens or 0 for r in results)
        rate = toks / wall
        base = base or rate
        print(f"| {bs} | {wall:.1f} | {toks} | {rate:.1f} | {rate / base:.1f}x |", flush=True)
    engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--rounds", type=int, default=8, help="requests per concurrency slot")
    ap.add_argument("--reps", type=int, default=2, help="repetitions per setting; the median is reported")
    ap.add_argument("--skip_remote", action="store_true")
    ap.add_argument("--skip_local", action="store_true")
    ap.add_argument("--local_model", default=EMBEDDED_MODEL)
    ap.add_argument("--local_prompts", type=int, default=16)
    ap.add_argument("--local_tokens", type=int, default=64)
    ap.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8, 16])
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"# lema_hub engine benchmark ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})")
    if not args.skip_remote:
        bench_remote(args.latency, args.concurrency, args.rounds, args.reps)
    if not args.skip_local:
        bench_local(args.local_model, args.local_prompts, args.local_tokens, args.batch_sizes)


if __name__ == "__main__":
    main()
