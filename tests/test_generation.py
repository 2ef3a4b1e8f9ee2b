"""The generation engine against real servers on 127.0.0.1 and the tiny local model."""

from __future__ import annotations

import json
import logging

import pytest

from lema_hub.generation import (
    EngineConfig,
    GenerationRequest,
    RequestCache,
    SamplingParams,
    make_engine,
    request_key,
)
from lema_hub.generation.retry import RetryPolicy, parse_retry_after
from tests.fake_openai_server import FakeOpenAIServer

TINY = "tiny:smollm2"


def _fast(srv_urls, **kw) -> EngineConfig:
    """An openai-backend config with test-sized timeouts and backoff."""
    base = dict(
        backend="openai",
        model="fake-model",
        base_urls=list(srv_urls),
        concurrency=8,
        request_timeout=0.5,
        max_retries=12,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        progress=False,
    )
    base.update(kw)
    return EngineConfig(**base)


def _requests(k: int, n: int = 1, **sp) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            f"q{i}",
            f"Question {i}: what is {i} + {i}?",
            SamplingParams(n=n, max_tokens=64, temperature=0.7, seed=0, **sp),
        )
        for i in range(k)
    ]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_faults_every_request_finishes_exactly_once(tmp_path, transport, monkeypatch):
    import openai

    made = []  # the http_client each AsyncOpenAI got (httpx: None); aiohttp posts without the SDK
    real = openai.AsyncOpenAI

    def recording(**kwargs):
        made.append(kwargs.get("http_client"))
        return real(**kwargs)

    monkeypatch.setattr(openai, "AsyncOpenAI", recording)
    with FakeOpenAIServer(fault_rate=0.3, seed=3, hang_s=1.5) as srv:
        cache = tmp_path / "requests.jsonl"
        with make_engine(_fast([srv.base_url], http_transport=transport), cache) as engine:
            results = engine.generate(_requests(30, n=2))
        assert [(r.request_id, r.sample_index) for r in results] == [
            (f"q{i}", j) for i in range(30) for j in range(2)
        ]
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert all(r.finish_reason == "stop" and r.completion_tokens for r in results)
        # Every fault kind was injected, every sample reached the server until it succeeded, once.
        assert set(srv.fault_counts) == {"429", "500", "hang", "drop", "malformed"}
        assert len(srv.success_counts) == 60 and set(srv.success_counts.values()) == {1}
        assert srv.total_requests == 60 + sum(srv.fault_counts.values())
        if transport == "aiohttp":
            assert made == []  # no AsyncOpenAI client was built: one aiohttp session did the work
        else:
            assert made and all(c is None for c in made), made
        # A rerun is served from the cache: no request reaches the server.
        before = srv.total_requests
        with make_engine(_fast([srv.base_url]), cache) as engine:
            again = engine.generate(_requests(30, n=2))
            assert engine.last_summary["cached"] == 60
        assert srv.total_requests == before
        assert [r.text for r in again] == [r.text for r in results]


def test_malformed_responses_are_retried_then_recorded_failed(tmp_path):
    with FakeOpenAIServer(fault_rate=1.0, faults=("malformed",)) as srv:
        with make_engine(_fast([srv.base_url], max_retries=2), tmp_path / "c.jsonl") as engine:
            results = engine.generate(_requests(3))
            assert engine.last_summary["failed"] == 3
        assert all(r.text is None and "malformed" in r.error and "3 attempts" in r.error for r in results)
        assert set(srv.request_counts.values()) == {3}  # 1 try + 2 retries each
        # Failures are not cached: the next run asks again.
        assert (tmp_path / "c.jsonl").read_text() == ""


def test_client_errors_fail_without_retry(tmp_path):
    with FakeOpenAIServer() as srv:
        cfg = _fast([srv.base_url.replace("/v1", "/nope")])
        with make_engine(cfg) as engine:
            (res,) = engine.generate(_requests(1))
        assert res.error.startswith("HTTP 404")
        assert srv.total_requests == 0  # unknown paths are not counted as completions
        assert srv.not_found == 1  # a 404 is final: one attempt, no retry


def test_several_base_urls_share_the_load():
    with FakeOpenAIServer(latency_s=0.02) as a, FakeOpenAIServer(latency_s=0.02) as b:
        with make_engine(_fast([a.base_url, b.base_url])) as engine:
            results = engine.generate(_requests(40))
        assert all(r.ok for r in results)
        assert a.total_requests + b.total_requests == 40
        assert a.total_requests >= 10 and b.total_requests >= 10


def test_prompt_styles_pick_the_endpoint():
    with FakeOpenAIServer(responder=lambda p: "plain" if "prompt" in p else "chat") as srv:
        with make_engine(_fast([srv.base_url], prompt_style="plain")) as engine:
            assert engine.generate(_requests(1))[0].text == "plain"
            msgs = [GenerationRequest("m", [{"role": "user", "content": "hi"}])]
            with pytest.raises(ValueError, match="prompt_style is 'plain'"):
                engine.generate(msgs)
        with make_engine(_fast([srv.base_url], prompt_style="chat")) as engine:
            assert engine.generate(_requests(1))[0].text == "chat"
        seeds = sorted(p["seed"] for p in srv.payloads)
        assert seeds == [0, 0]


def test_n_samples_are_separate_requests_with_distinct_seeds():
    with FakeOpenAIServer(responder=lambda p: f"seed {p.get('seed')} n {p.get('n')}") as srv:
        with make_engine(_fast([srv.base_url])) as engine:
            results = engine.generate(_requests(1, n=3))
    assert [r.text for r in results] == ["seed 0 n 1", "seed 1 n 1", "seed 2 n 1"]


def test_stop_and_max_tokens_are_sent_and_truncation_reported():
    with FakeOpenAIServer(responder=lambda p: " ".join(["word"] * 50)) as srv:
        with make_engine(_fast([srv.base_url])) as engine:
            (res,) = engine.generate(
                [GenerationRequest("x", "hi", SamplingParams(max_tokens=5, stop=["\n\n"]))]
            )
    assert res.finish_reason == "length" and res.completion_tokens == 5
    assert srv.payloads[0]["stop"] == ["\n\n"] and srv.payloads[0]["max_tokens"] == 5


def test_api_key_comes_from_env_and_is_never_written(tmp_path, monkeypatch, caplog):
    secret = "sk-test-0123456789abcdefghijklmnop"
    monkeypatch.setenv("LEMA_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(fault_rate=0.5, faults=("500",), seed=1) as srv:
        with make_engine(_fast([srv.base_url], api_key_env="LEMA_TEST_KEY"), tmp_path / "c.jsonl") as engine:
            results = engine.generate(_requests(4))
    assert all(r.ok for r in results)
    assert set(srv.auth_headers) == {f"Bearer {secret}"}  # the key was read and sent, on every attempt
    assert secret not in (tmp_path / "c.jsonl").read_text()
    assert secret not in caplog.text and secret not in json.dumps(engine.last_summary)


def test_tgi_backend_chat_and_plain():
    with FakeOpenAIServer(responder=lambda p: "The answer is 4.") as srv:
        for style in ("chat", "plain"):
            cfg = EngineConfig(
                backend="tgi",
                model="tgi",
                base_urls=[srv.base_url if style == "chat" else srv.root_url],
                prompt_style=style,
                max_retries=2,
                retry_base_delay=0.01,
                progress=False,
            )
            with make_engine(cfg) as engine:
                (res,) = engine.generate(_requests(1))
            assert res.ok, res.error
            assert res.text == "The answer is 4." and res.completion_tokens == 4


def test_cache_drops_a_torn_last_line_and_keeps_the_rest(tmp_path):
    path = tmp_path / "c.jsonl"
    with RequestCache(path) as cache:
        for i in range(3):
            cache.put(f"k{i}", {"text": str(i)})
    with path.open("a") as fh:
        fh.write('{"key": "k3", "result": {"te')  # killed mid-write
    cache = RequestCache(path)
    assert len(cache) == 3 and cache.dropped_lines == 1 and "k3" not in cache
    cache.put("k3", {"text": "3"})
    cache.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line) for line in lines)


def test_request_key_is_stable_and_sensitive():
    sp = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 8, "stop": None, "seed": 0}
    k = request_key("m", "p", sp, 0)
    assert k == request_key("m", "p", dict(reversed(list(sp.items()))), 0)
    assert (
        len(
            {
                k,
                request_key("m", "p", sp, 1),
                request_key("m2", "p", sp, 0),
                request_key("m", "p", {**sp, "temperature": 0.8}, 0),
                request_key("m", [{"role": "user", "content": "p"}], sp, 0),
            }
        )
        == 5
    )


def test_retry_after_parsing_and_backoff():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({}) is None
    policy = RetryPolicy(max_retries=5, base_delay=1.0, max_delay=8.0)
    assert policy.delay(0, retry_after=30.0) == 30.0
    assert all(0.5 <= policy.delay(0) <= 1.0 for _ in range(50))
    assert all(4.0 <= policy.delay(10) <= 8.0 for _ in range(50))


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="backend must be one of"):
        EngineConfig(backend="nope")
    with pytest.raises(ValueError, match="base_urls is required"):
        EngineConfig(backend="tgi")
    with pytest.raises(ValueError, match="n must be >= 1"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="http_transport must be one of"):
        EngineConfig(backend="openai", http_transport="requests")
    # A typo in an endpoint is refused before any request, not retried as a failure.
    for bad in ("not-a-url", "ftp://host/v1", "http://", '["http://127.0.0.1:8000/v1"]'):
        with pytest.raises(ValueError, match=r"base_urls: .* is not an http\(s\) URL"):
            EngineConfig(backend="openai", base_urls=[bad])
    with pytest.raises(ValueError, match=r"separate values \(--base_urls URL1 URL2\)"):
        EngineConfig(backend="openai", base_urls='["http://a:1/v1", "http://b:1/v1"]')
    assert EngineConfig(backend="openai", base_urls="https://api.example.com/v1").base_urls == [
        "https://api.example.com/v1"
    ]
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="hedge_after_s must be a finite number >= 0"):
            EngineConfig(backend="openai", hedge_after_s=bad)


def test_transformers_batched_greedy_equals_one_by_one(tiny_model, tmp_path):
    prompts = [
        "What is 2 + 3?",
        "Natalia sold clips to 48 of her friends in April. How many in May?",
        "A",
        "Compute 7 * 8 and explain each step carefully, please.",
    ]
    reqs = [GenerationRequest(f"p{i}", p, SamplingParams(max_tokens=12, n=2)) for i, p in enumerate(prompts)]
    with make_engine(
        EngineConfig(model=tiny_model, batch_size=4, progress=False), tmp_path / "b.jsonl"
    ) as eng:
        batched = eng.generate(reqs)
    with make_engine(EngineConfig(model=tiny_model, batch_size=1, progress=False)) as eng:
        single = eng.generate(reqs)
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in single]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in single]
    assert all(r.ok and r.finish_reason in ("stop", "length") for r in batched)
    # Greedy samples of one prompt are identical (decoded once, cached per sample index).
    assert batched[0].text == batched[1].text
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 8


def test_transformers_sampling_is_reproducible_and_resumes(tiny_model, tmp_path):
    reqs = [
        GenerationRequest(
            f"p{i}", f"Say something about {i}.", SamplingParams(max_tokens=8, n=2, temperature=1.0, seed=0)
        )
        for i in range(3)
    ]
    cfg = EngineConfig(model=tiny_model, batch_size=8, progress=False)
    with make_engine(cfg) as eng:
        a = [r.text for r in eng.generate(reqs)]
    with make_engine(cfg) as eng:
        b = [r.text for r in eng.generate(reqs)]
    assert a == b
    assert len(set(a)) > 1  # it sampled (greedy would give each prompt's two samples the same text)
    assert all(a[2 * i] != a[2 * i + 1] for i in range(3)), a  # and each sample has its own seed
    with make_engine(cfg, tmp_path / "s.jsonl") as eng:
        first = [r.text for r in eng.generate(reqs[:2])]
    with make_engine(cfg, tmp_path / "s.jsonl") as eng:
        allr = eng.generate(reqs)
        assert eng.last_summary["cached"] == 4 and eng.last_summary["generated"] == 2
    assert [r.text for r in allr[:4]] == first


def test_vllm_backend_needs_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="vllm"):
            make_engine(EngineConfig(backend="vllm", model=TINY))
        return
    pytest.skip("vllm is installed: exercised by the GPU job")


@pytest.mark.slow
def test_transformers_batched_greedy_equals_one_by_one_on_the_embedded_model(embedded_model):
    """The tiny random model mostly emits newlines; the real model checks padding on real text."""
    prompts = ["What is 12 * 7? Explain briefly.", "Name three prime numbers.", "Why is the sky blue?"]
    reqs = [GenerationRequest(f"p{i}", p, SamplingParams(max_tokens=16)) for i, p in enumerate(prompts)]
    with make_engine(EngineConfig(model=embedded_model, batch_size=3, progress=False)) as eng:
        batched = eng.generate(reqs)
        eng.config.batch_size = 1
        eng.cache = RequestCache()  # decode again, one by one
        single = eng.generate(reqs)
    assert [r.text for r in batched] == [r.text for r in single]
    assert len({r.text for r in batched}) == 3 and all(r.completion_tokens for r in batched)


@pytest.mark.slow
def test_against_real_transformers_serve(tiny_model):
    """`transformers serve` ignores `n` and samples only with generation_config: the engine copes."""
    import shutil
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from lema_hub.models import resolve_model

    # `make test` runs .venv/bin/python without activating the venv: look beside the interpreter first.
    beside = Path(sys.executable).parent / "transformers"
    exe = str(beside) if beside.is_file() else shutil.which("transformers")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    if exe is None:
        pytest.skip("the transformers CLI is not on PATH")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = resolve_model(tiny_model)
    proc = subprocess.Popen([exe, "serve", path, "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("transformers serve did not start")
                time.sleep(1)
        url = [f"http://127.0.0.1:{port}/v1"]
        prompt = [GenerationRequest("a", "What is 2 + 2?", SamplingParams(max_tokens=8, n=2))]
        with make_engine(EngineConfig(backend="openai", model=path, base_urls=url, prompt_style="chat",
                                      request_timeout=120, progress=False)) as eng:  # fmt: skip
            served = eng.generate(prompt)
        with make_engine(EngineConfig(model=tiny_model, prompt_style="chat", progress=False)) as eng:
            local = eng.generate(prompt)
        assert all(r.ok for r in served), [r.error for r in served]
        assert [r.text for r in served] == [r.text for r in local]  # same greedy decoding, two ways
        assert [r.prompt_tokens for r in served] == [r.prompt_tokens for r in local]
        sampling = [
            GenerationRequest("s", "Tell me a story.", SamplingParams(max_tokens=8, n=2, temperature=1.0))
        ]
        extra = {"generation_config": '{"do_sample": true}'}
        with make_engine(EngineConfig(backend="openai", model=path, base_urls=url, prompt_style="plain",
                                      request_timeout=120, progress=False, extra_body=extra)) as eng:  # fmt: skip
            sampled = eng.generate(sampling)
        assert all(r.ok for r in sampled) and sampled[0].text != sampled[1].text
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_without_base_urls_the_sdk_environment_is_used(monkeypatch, transport):
    """No `base_urls`: OPENAI_BASE_URL (else api.openai.com), as the SDK does, on both transports."""
    with FakeOpenAIServer() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        with make_engine(_fast([], base_urls=None, http_transport=transport)) as engine:
            results = engine.generate(_requests(3))
        assert all(r.ok for r in results)
        assert srv.total_requests == 3 and set(srv.auth_headers) == {"Bearer sk-env"}


def test_results_finishing_together_share_one_flush(tmp_path):
    """Every result is on disk when `generate` returns, with fewer writes to the OS than results."""
    cache = tmp_path / "c.jsonl"
    with FakeOpenAIServer(latency_s=0.02) as srv:
        with make_engine(_fast([srv.base_url], concurrency=16), cache) as engine:
            results = engine.generate(_requests(64))
            flushes = engine.cache.flushes
        assert all(r.ok for r in results)
        assert len(cache.read_text().splitlines()) == 64
        assert flushes < 64  # the answers of a round arrive together: one flush per loop iteration
        with make_engine(_fast([srv.base_url]), cache) as engine:
            engine.generate(_requests(64))
            assert engine.last_summary["cached"] == 64
        assert srv.total_requests == 64


def test_the_proxy_comes_from_the_environment_once_per_url(monkeypatch):
    from lema_hub.generation.backends.openai_backend import _env_proxy

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert _env_proxy("http://example.com/v1") is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.local:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert _env_proxy("http://example.com/v1") == "http://proxy.local:3128"
    assert _env_proxy("http://127.0.0.1:8000/v1") is None  # NO_PROXY wins
    assert _env_proxy("https://example.com/v1") is None  # no HTTPS_PROXY set


class _Messages(list):
    """A chat prompt that a weak reference can watch."""


def test_a_generator_of_requests_is_drawn_lazily_and_each_prompt_released_once_answered(tmp_path):
    """At most about `concurrency` prompts are alive at once, also through retries and on resume."""
    import weakref

    alive: list[weakref.ref] = []
    peak = [0]

    def requests(ids):
        for i in ids:
            peak[0] = max(peak[0], sum(ref() is not None for ref in alive))
            msgs = _Messages([{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}])
            alive.append(weakref.ref(msgs))
            yield GenerationRequest(
                f"q{i}", msgs, SamplingParams(n=2, max_tokens=64, temperature=0.7, seed=0)
            )

    cache = tmp_path / "c.jsonl"
    expected = [(f"q{i}", s) for i in range(60) for s in range(2)]
    with FakeOpenAIServer(latency_s=0.005, fault_rate=0.2, faults=("429", "500")) as srv:
        with make_engine(_fast([srv.base_url], concurrency=4, prompt_style="chat"), cache) as engine:
            results = engine.generate(requests(range(40)))
        assert [(r.request_id, r.sample_index) for r in results] == expected[:80]
        assert all(r.ok for r in results)
        assert sum(srv.fault_counts.values()) > 0  # some units were retried while others were drawn
        # 4 units in flight are at most 4 requests, plus the one being drawn (a list would hold all 40)
        assert 2 <= peak[0] <= 4 + 2
        assert sum(ref() is not None for ref in alive) == 0  # the results hold no prompt

        srv.reset_counts()
        srv.fault_rate = 0.0
        alive.clear()
        peak[0] = 0
        with make_engine(_fast([srv.base_url], concurrency=4, prompt_style="chat"), cache) as engine:
            results = engine.generate(requests(range(60)))
            summary = engine.last_summary
        assert [(r.request_id, r.sample_index) for r in results] == expected
        assert summary["cached"] == 80 and summary["generated"] == 40
        assert srv.total_requests == 40 and max(srv.request_counts.values()) == 1  # only the new ones
        assert peak[0] <= 4 + 2  # the cached requests' prompts were dropped as they were drawn

        # New requests first, then only cached ones: the run ends once the last one is drawn.
        with make_engine(_fast([srv.base_url], concurrency=4, prompt_style="chat"), cache) as engine:
            results = engine.generate(requests([60, 61, *range(60)]))
            assert engine.last_summary["cached"] == 120 and engine.last_summary["generated"] == 4
        assert [r.request_id for r in results][:5] == ["q60", "q60", "q61", "q61", "q0"]
        assert srv.total_requests == 44
