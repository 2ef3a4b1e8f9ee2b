"""Data types shared by every backend of the generation engine."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from lema_hub.errors import InvalidInputError  # a ValueError: bad settings are the user's input
from lema_hub.schema import BACKENDS, EMBEDDED_MODEL
from lema_hub.schema import PROMPT_STYLE_CHOICES as PROMPT_STYLES  # an engine config may say `auto`

HTTP_TRANSPORTS = ("auto", "aiohttp", "httpx")


@dataclass
class SamplingParams:
    """How to sample: `temperature == 0` means greedy decoding."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    n: int = 1
    stop: list[str] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InvalidInputError(f"SamplingParams.n must be >= 1, got {self.n}.")
        if self.max_tokens < 1:
            raise InvalidInputError(f"SamplingParams.max_tokens must be >= 1, got {self.max_tokens}.")
        if self.temperature < 0:
            raise InvalidInputError(f"SamplingParams.temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise InvalidInputError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}.")
        if isinstance(self.stop, str):
            self.stop = [self.stop]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def sample_seed(self, sample_index: int) -> int | None:
        """Seed of one sample: distinct per sample index, reproducible across runs."""
        return None if self.seed is None else self.seed + sample_index

    def record(self) -> dict[str, Any]:
        """The Sample schema's `sampling` column."""
        return {
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "max_tokens": int(self.max_tokens),
            "seed": self.seed,
        }


@dataclass
class EngineConfig:
    """Which backend and model to generate with, and how hard to push it."""

    backend: str = "transformers"  # transformers | openai | tgi | vllm
    model: str = EMBEDDED_MODEL  # a lema_hub.models name, or the served model name
    base_urls: list[str] | None = None  # openai/tgi endpoints; several share the load
    api_key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key (never the key)
    prompt_style: str = "auto"  # plain | chat | auto
    concurrency: int = 16  # requests in flight (remote backends)
    batch_size: int = 8  # sequences per forward pass (local backends)
    max_retries: int = 6
    request_timeout: float = 600.0
    extra_body: dict | None = (
        None  # merged into every request body (e.g. transformers serve's generation_config)
    )
    retry_base_delay: float = 1.0  # first backoff, doubled per attempt, with jitter
    retry_max_delay: float = 60.0
    progress: bool = True  # tqdm progress bar with req/s, tok/s and ETA
    http_transport: str = "auto"  # openai backend: aiohttp | httpx | auto (aiohttp when installed)
    # Hedged requests (remote backends; off by default: every hedge is one more request, which a
    # paid API bills): once no request is left to send and a slot is idle, an attempt running
    # longer than the `hedge_quantile` of this call's finished attempts (and `hedge_after_s`) is
    # sent again; the first answer wins, the other is cancelled. Same key, seed and cache entry.
    hedge_quantile: float | None = None  # e.g. 0.75; None: no quantile threshold
    hedge_after_s: float | None = None  # a fixed threshold (with a quantile: never sooner than it)
    max_hedges: int = 2  # extra attempts per request at most

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InvalidInputError(
                f"EngineConfig.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}."
            )
        if self.prompt_style not in PROMPT_STYLES:
            raise InvalidInputError(
                f"EngineConfig.prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {self.prompt_style!r}."
            )
        if self.http_transport not in HTTP_TRANSPORTS:
            raise InvalidInputError(
                f"EngineConfig.http_transport must be one of {', '.join(HTTP_TRANSPORTS)}, got {self.http_transport!r}."
            )
        if isinstance(self.base_urls, str):
            self.base_urls = [self.base_urls]
        for url in self.base_urls or []:
            _check_url(url)
        if self.backend == "tgi" and not self.base_urls:
            raise InvalidInputError(
                "EngineConfig.base_urls is required for the tgi backend (the TGI endpoint URL)."
            )
        if self.concurrency < 1 or self.batch_size < 1:
            raise InvalidInputError("EngineConfig.concurrency and batch_size must be >= 1.")
        if self.max_retries < 0:
            raise InvalidInputError("EngineConfig.max_retries must be >= 0.")
        if self.hedge_quantile is not None and not 0 < self.hedge_quantile < 1:
            raise InvalidInputError(
                f"EngineConfig.hedge_quantile must be in (0, 1) or None, got {self.hedge_quantile}."
            )
        if self.hedge_after_s is not None and not (
            math.isfinite(self.hedge_after_s) and self.hedge_after_s >= 0
        ):
            raise InvalidInputError(
                f"EngineConfig.hedge_after_s must be a finite number >= 0 (seconds), got {self.hedge_after_s}."
            )
        if self.max_hedges < 1:
            raise InvalidInputError(f"EngineConfig.max_hedges must be >= 1, got {self.max_hedges}.")

    @property
    def hedging(self) -> bool:
        """Whether slow attempts are hedged (a quantile or a fixed threshold is set)."""
        return self.hedge_quantile is not None or self.hedge_after_s is not None


@dataclass
class GenerationRequest:
    """One prompt (plain text or chat messages); `sampling.n` samples are drawn from it."""

    request_id: str
    prompt: str | list[dict]
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class GenerationResult:
    """One sample of one request; `error` is set (and `text` None) when it failed for good."""

    request_id: str
    sample_index: int
    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@dataclass
class EndpointArgs:
    """Mixin: how a stage reaches its model servers (shared by collect, correct, evolve, evaluate)."""

    base_urls: list[str] | None = field(
        default=None, metadata={"help": "OpenAI-compatible / TGI endpoints (several share the load)."}
    )
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "Environment variable holding the endpoint's API key (never the key itself)."},
    )
    concurrency: int = field(default=16, metadata={"help": "Max concurrent requests to an endpoint."})
    batch_size: int = field(
        default=8, metadata={"help": "Batch size of the local transformers / vLLM backend."}
    )
    max_retries: int = field(
        default=6,
        metadata={
            "help": "Retries on 429 / 5xx / timeouts / malformed responses before a request is recorded as failed."
        },
    )
    request_timeout: float = field(
        default=600.0, metadata={"help": "Seconds before one endpoint request times out."}
    )
    extra_body: dict | None = field(
        default=None,
        metadata={
            "help": "Extra JSON fields sent with each endpoint request (e.g. {generation_config: "
            "'{\"do_sample\": true}'} for transformers serve)."
        },
    )

    hedge_quantile: float | None = field(
        default=None,
        metadata={
            "help": "Hedged requests (off by default; each hedge is an extra request a paid API bills): "
            "once nothing is left to send and a slot is idle, resend a request running longer than this "
            "quantile of the finished ones (e.g. 0.75); the first answer wins, the other is cancelled."
        },
    )
    hedge_after_s: float | None = field(
        default=None,
        metadata={"help": "Hedge a request running longer than this many seconds (with hedge_quantile: "
                  "never sooner than this)."},
    )  # fmt: skip
    max_hedges: int = field(default=2, metadata={"help": "Hedges per request at most."})

    def engine_config(
        self, backend: str, model: str, prompt_style: str = "auto", **more: Any
    ) -> EngineConfig:
        """The engine settings for `model` on `backend`, with every endpoint field of these args."""
        endpoint = {f.name: getattr(self, f.name) for f in fields(EndpointArgs)}
        return EngineConfig(backend=backend, model=model, prompt_style=prompt_style, **endpoint, **more)


def _check_url(url: object) -> None:
    """An endpoint URL the client can post to (`http(s)://host[:port]/...`), else one clear line:
    a typo would otherwise be retried as a failed request, `max_retries` times each."""
    text = str(url)
    parts = urlsplit(text) if isinstance(url, str) else None
    if parts is not None and parts.scheme in ("http", "https") and parts.netloc:
        return
    hint = (
        "; give several as separate values (--base_urls URL1 URL2) or a YAML list"
        if text.lstrip().startswith("[")
        else " (e.g. http://127.0.0.1:8000/v1)"
    )
    raise InvalidInputError(f"base_urls: {text!r} is not an http(s) URL{hint}.")
