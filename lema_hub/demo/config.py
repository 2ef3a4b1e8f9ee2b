"""The demo's settings: `DemoConfig`, read from arguments or `LEMA_DEMO_<FIELD>` variables."""

from __future__ import annotations

import logging
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from lema_hub.errors import InvalidInputError
from lema_hub.generation.types import BACKENDS, EndpointArgs
from lema_hub.schema import EMBEDDED_MODEL

logger = logging.getLogger(__name__)

ENV_PREFIX = "LEMA_DEMO_"
QUICKSTART_DIR = "outputs/quickstart"
NONE_VALUES = ("", "none", "null", "off")
# The engine's backends the demo serves (vLLM runs as a server: reach it with `openai`).
DEMO_BACKENDS = tuple(b for b in BACKENDS if b != "vllm")
OLD_BACKEND_NAMES = {"inference_client": "tgi"}
# The same default key variable as every stage's endpoint settings.
ENDPOINT_KEY_ENV = next(f.default for f in fields(EndpointArgs) if f.name == "api_key_env")


def _from_env(name: str, default: Any) -> Any:
    """`LEMA_DEMO_<NAME>` parsed to the type of `default` (a Space sets its options this way)."""
    raw = os.environ.get(ENV_PREFIX + name.upper())
    if raw is None:
        return default
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, list):
        return [x.strip() for x in raw.split(",") if x.strip()]
    return raw


@dataclass
class DemoConfig:
    """What the demo serves. Every field can be set as `--field` or as `LEMA_DEMO_<FIELD>`."""

    lema_model: str = field(
        default=f"{QUICKSTART_DIR}/models/lema-merged",
        metadata={
            "help": "The LeMa model: Hub id, local folder, `embedded:...`/`tiny:...`, or the served name on an endpoint."
        },
    )
    baseline_model: str | None = field(
        default=f"{QUICKSTART_DIR}/models/cot-merged",
        metadata={"help": "The CoT-only baseline; `none` hides it."},
    )
    fallback_model: str = field(
        default=EMBEDDED_MODEL,
        metadata={"help": "Used (and said so on the page) when a configured local model folder is absent."},
    )
    corrections: str | None = field(
        default=f"{QUICKSTART_DIR}/lema-corrections",
        metadata={
            "help": "Corrections dataset for Browse: Hub id or Hub-layout folder; `none` hides the tab's data."
        },
    )
    mistakes: str | None = field(
        default=f"{QUICKSTART_DIR}/lema-mistakes",
        metadata={"help": "Mistakes dataset whose wrong paths are the Correct tab's examples."},
    )
    eval_dir: str | None = field(
        default=f"{QUICKSTART_DIR}/eval",
        metadata={
            "help": "An evaluation folder (`lema-hub evaluate`): its comparison table is shown on the page."
        },
    )
    examples: list[str] = field(
        default_factory=lambda: ["sample"],
        metadata={
            "help": "Solve examples: sample, gsm8k, math, math500 (test splits, from the Hub), or `gsm8k=FILE` for a local file."
        },
    )
    examples_per_source: int = field(
        default=20, metadata={"help": "Examples listed per source in the Solve tab."}
    )

    backend: str = field(
        default="transformers",
        metadata={
            "help": "transformers (local) | openai (OpenAI-compatible endpoint: vLLM, TGI, HF router) | tgi "
            "(huggingface_hub's InferenceClient: TGI, Inference Endpoints); the generation engine's names."
        },
    )
    base_urls: list[str] | None = field(
        default=None,
        metadata={"help": "Endpoint for the LeMa model (openai / tgi backends); the demo uses the first."},
    )
    baseline_base_urls: list[str] | None = field(
        default=None, metadata={"help": "Endpoint for the baseline; defaults to `base_urls`."}
    )
    api_key_env: str = field(
        default=ENDPOINT_KEY_ENV,
        metadata={
            "help": "Name of the environment variable holding the endpoint key (never the key itself); "
            "the tgi backend also finds `HF_TOKEN` / a saved Hub login by itself."
        },
    )
    base_url: str | None = field(
        default=None, metadata={"help": "Deprecated: use `base_urls` (still accepted)."}
    )
    baseline_base_url: str | None = field(
        default=None, metadata={"help": "Deprecated: use `baseline_base_urls` (still accepted)."}
    )
    prompt_style: str = field(
        default="auto",
        metadata={
            "help": "chat | plain | auto (a model's recorded style, else chat when it has a chat template)."
        },
    )
    endpoint_stream: bool = field(
        default=True, metadata={"help": "Stream tokens from the endpoint (server-sent events)."}
    )

    max_question_chars: int = field(
        default=1500,
        metadata={"help": "Longest question accepted (longer input gets a message, not a crash)."},
    )
    max_solution_chars: int = field(
        default=4000, metadata={"help": "Longest solution accepted in the Correct tab."}
    )
    max_new_tokens: int = field(default=384, metadata={"help": "Max new tokens for a Solve answer."})
    correction_max_new_tokens: int = field(default=512, metadata={"help": "Max new tokens for a correction."})
    generation_timeout_s: float = field(
        default=90.0, metadata={"help": "Wall-clock bound on one generation, in seconds."}
    )
    concurrency_limit: int = field(
        default=2,
        metadata={
            "help": "Generations running at once (Solve and Correct share it); the rest wait in the queue."
        },
    )
    queue_size: int = field(
        default=32, metadata={"help": "Requests waiting in the queue at most; more are refused politely."}
    )
    preload: bool = field(
        default=True,
        metadata={"help": "Load local models when the app starts instead of at the first request."},
    )

    host: str = field(default="127.0.0.1", metadata={"help": "Interface to serve on (0.0.0.0 on a Space)."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    share: bool = field(default=False, metadata={"help": "Create a public gradio.live link."})
    title: str = field(default="LeMa: Learning From Mistakes", metadata={"help": "Page title."})

    def __post_init__(self) -> None:
        # Precedence: explicit argument > LEMA_DEMO_<FIELD> > built-in default.
        for f in fields(self):
            builtin = f.default_factory() if f.default_factory is not MISSING else f.default
            if getattr(self, f.name) == builtin:
                setattr(self, f.name, _from_env(f.name, builtin))
        self._accept_old_names()
        if self.backend not in DEMO_BACKENDS:
            raise InvalidInputError(
                f"DemoConfig.backend must be one of {', '.join(DEMO_BACKENDS)}, got {self.backend!r}."
            )

    def _accept_old_names(self) -> None:
        """The names the demo used before it spoke the generation engine's: `inference_client`
        (now `tgi`), `base_url` / `baseline_base_url` (now `base_urls` / `baseline_base_urls`)."""
        if self.backend in OLD_BACKEND_NAMES:
            new = OLD_BACKEND_NAMES[self.backend]
            logger.warning("backend %r is deprecated: use %r", self.backend, new)
            self.backend = new
        for old, new in (("base_url", "base_urls"), ("baseline_base_url", "baseline_base_urls")):
            value = getattr(self, new)
            if isinstance(value, str):  # from a LEMA_DEMO_ variable: comma-separated
                setattr(self, new, [u.strip() for u in value.split(",") if u.strip()] or None)
            if getattr(self, old):
                logger.warning("%s is deprecated: use %s", old, new)
                if not getattr(self, new):
                    setattr(self, new, [getattr(self, old)])

    @property
    def endpoint(self) -> str | None:
        """The LeMa model's endpoint URL (the first of `base_urls`)."""
        return self.base_urls[0] if self.base_urls else None

    @property
    def baseline_endpoint(self) -> str | None:
        """The baseline's endpoint URL: the first of `baseline_base_urls`, else the LeMa model's."""
        return self.baseline_base_urls[0] if self.baseline_base_urls else self.endpoint


def _none(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() in NONE_VALUES else value


def _is_local_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.startswith(f"{QUICKSTART_DIR}/") or Path(name).exists()


def config_fields() -> list[str]:
    return [f.name for f in fields(DemoConfig)]
