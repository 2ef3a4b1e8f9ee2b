"""One config system for every recipe: dataclasses parsed by `trl.TrlParser` from YAML + CLI.

`parse_config` adds what TrlParser leaves out: an unknown YAML key fails with a message naming the
key and the file, and YAML values are type-checked against the dataclass fields (TrlParser
installs YAML values as argparse defaults, which argparse never converts or checks).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lema_hub.errors import InvalidInputError


class ConfigError(InvalidInputError):
    """A recipe configuration is invalid; the message names the key and the file."""


def _field_types(dataclass_types: Sequence[type]) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for dc in dataclass_types:
        resolved = typing.get_type_hints(dc)
        for f in dataclasses.fields(dc):
            if f.init:
                hints[f.name] = resolved.get(f.name, f.type)
    return hints


def _matches(value: Any, tp: Any) -> bool:
    """Loose runtime check of a YAML value against a dataclass annotation."""
    if tp is Any or value is None and _is_optional(tp):
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if origin in (list, tuple, Sequence, Iterable):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, (str, int, float))
    if isinstance(tp, type) and issubclass(tp, os.PathLike):
        return isinstance(value, str)
    return True  # enums and library-specific types: left to the dataclass itself


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def check_config_mapping(config: dict[str, Any], dataclass_types: Sequence[type], source: str) -> None:
    """Raise `ConfigError` for unknown keys or mistyped values in a YAML mapping."""
    hints = _field_types(dataclass_types)
    unknown = sorted(k for k in config if k not in hints and k != "env")
    if unknown:
        raise ConfigError(
            f"Unknown key(s) {', '.join(repr(k) for k in unknown)} in {source}. "
            f"Valid keys: {', '.join(sorted(hints))}."
        )
    for key, value in config.items():
        if key in hints and not _matches(value, hints[key]):
            raise ConfigError(
                f"Key {key!r} in {source} has value {value!r} ({type(value).__name__}), "
                f"which does not fit its type {hints[key]}."
            )


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        with path.open() as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"Config file {path} is not valid YAML: {what}{where}.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}.") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must contain a YAML mapping, got {type(data).__name__}.")
    return data


def parse_config(
    dataclass_types: Sequence[type], args: Sequence[str] | None = None, prog: str | None = None
) -> tuple[Any, ...]:
    """Parse `--config file.yaml` plus CLI overrides into instances of `dataclass_types`.

    `prog` names the command in `--help` and in errors (e.g. "lema-hub collect"); a bad flag value
    raises `ConfigError` with argparse's one-line message instead of printing the usage block.
    """
    from trl import TrlParser

    args = list(args) if args is not None else None
    if args is not None and "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ConfigError("--config needs a path to a YAML file.")
        path = args[i + 1]
        check_config_mapping(load_yaml(path), dataclass_types, path)
    parser = TrlParser(list(dataclass_types), prog=prog) if prog else TrlParser(list(dataclass_types))

    def error(message: str) -> typing.NoReturn:
        hint = f" (see `{parser.prog} --help`)"
        raise ConfigError(f"{message}{hint}")

    parser.error = error  # argparse calls self.error on a bad value or a missing required flag
    try:
        return tuple(parser.parse_args_and_config(args=args))
    except ValueError as exc:  # TrlParser's own unknown-argument error, re-raised with our type
        raise ConfigError(str(exc)) from exc


def config_to_dict(*configs: Any) -> dict[str, Any]:
    """Flatten parsed config dataclasses into one YAML-safe mapping (for run records)."""
    out: dict[str, Any] = {}
    for cfg in configs:
        if hasattr(cfg, "to_dict"):  # e.g. TrainingArguments, which also masks its tokens
            out.update(cfg.to_dict())
            continue
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            out[f.name] = _yaml_safe(value)
    return out


_SECRET_WORDS = ("token", "api_key", "apikey", "password", "secret")


def is_secret(key: str, value: Any) -> bool:
    """Whether `key: value` looks like a credential: a non-empty string under a credential-like name.

    Numbers are never secrets (`max_tokens: 512`), and `*_env` keys name a variable, not its value.
    """
    k = key.lower()
    return (
        isinstance(value, str)
        and value != ""
        and any(w in k for w in _SECRET_WORDS)
        and not k.endswith("_env")
    )


def _yaml_safe(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {f.name: _yaml_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


def redact(mapping: dict[str, Any]) -> dict[str, Any]:
    """Replace credential values (see `is_secret`) by "<redacted>"; never write a token anywhere."""
    return {k: ("<redacted>" if is_secret(k, v) else v) for k, v in mapping.items()}


# --------------------------------------------------------------------------------------------------
# Secrets in free text: error messages, URLs, cards. Nothing here ever logs the value it hides.
# --------------------------------------------------------------------------------------------------

REDACTED = "<redacted>"
_REGISTERED_SECRETS: set[str] = set()
_MIN_GIVEN = 4  # a value passed to `scrub_secrets` (an engine's own key), scrubbed in its error text
_MIN_KNOWN = 8  # registered and env credentials, scrubbed everywhere: shorter ones hit ordinary text
# Env var names that hold credentials: HF_TOKEN, OPENAI_API_KEY, MY_ENDPOINT_KEY, DB_PASSWORD ...
_SECRET_ENV_NAME_RE = re.compile(
    r"(?:^|_)(?:KEY|API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)(?:_|$)", re.I
)
# Tokens with a well-known prefix (Hugging Face, OpenAI, GitHub, Slack, AWS, JWTs).
TOKEN_RE = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|api_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|github_pat_[A-Za-z0-9_]{30,}|xox[abprs]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})"
)
# scheme://user:password@host -> scheme://<redacted>@host
URL_USERINFO_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]{0,30}://)[^\s/?#@'\"<>]{1,512}@")
# ?api_key=...&sig=... in a URL query
_QUERY_SECRET_RE = re.compile(
    r"([?&][\w.\-]{0,64}?(?:key|token|sig|signature|secret|password|passwd|credential)[\w.\-]{0,64}=)"
    r"[^&#\s'\"<>]+",
    re.I,
)
# Authorization: <anything>, and "Bearer <token>" anywhere
_AUTH_HEADER_RE = re.compile(
    r"(\bauthorization[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|token)\s+)?[^\s\"',;}]+", re.I
)
_BEARER_RE = re.compile(r"\b([Bb]earer|BEARER)\s+([A-Za-z0-9._~+/=\-]{8,})")
# api_key=..., "password": "...", access_token: ... (not max_tokens=512: the name must END in the word)
_KV_SECRET_RE = re.compile(
    r"((?:\b|(?<=[_\-]))(?:api[_\-]?key|apikey|access[_\-]?key|secret[_\-]?key|token|password|passwd|secret)\b"
    r"[\"']?\s*[:=]\s*[\"']?)(?!\d+\b)(?!<redacted>)([^\s\"'&,;})\]]{4,})",
    re.I,
)
# Candidates for a random credential without a known prefix: long runs of token characters.
_RUN_RE = re.compile(r"[A-Za-z0-9_\-+/=.]{20,}")
_SEGMENT_SPLIT_RE = re.compile(r"[_\-./]")


def register_secret(value: str | None) -> None:
    """Remember a credential this process uses, so every later scrub hides it (never stored)."""
    if value and len(value) >= _MIN_KNOWN:
        _REGISTERED_SECRETS.add(value)


def _env_names_in(config: Any) -> set[str]:
    """Env var names a config names under credential-like `*_env` keys (e.g. `api_key_env`)."""
    names: set[str] = set()
    if isinstance(config, dict):
        for k, v in config.items():
            key = str(k).lower()
            if key.endswith("_env") and isinstance(v, str) and any(w in key for w in _SECRET_WORDS):
                names.add(v)
            else:
                names |= _env_names_in(v)
    elif isinstance(config, (list, tuple)):
        for v in config:
            names |= _env_names_in(v)
    return names


def secret_values(config: Any = None) -> dict[str, str]:
    """Credential values to hide, each with where it came from (an env var name, or "configured").

    Registered credentials, the values of env vars with credential-like names (HF_TOKEN,
    OPENAI_API_KEY, ..._KEY, ..._PASSWORD), and of the env vars `config` names in its `*_env` keys.
    """
    found: dict[str, str] = {v: "configured" for v in _REGISTERED_SECRETS}
    named = _env_names_in(config) if config is not None else set()
    for name, value in os.environ.items():
        if len(value) >= _MIN_KNOWN and (name in named or _SECRET_ENV_NAME_RE.search(name)):
            found.setdefault(value, f"${name}")
    return found


def _looks_random(segment: str) -> bool:
    """Upper, lower and digits mixed at high entropy: a generated credential, not a word or a number."""
    if len(segment) < 20 or segment.isdigit():
        return False
    if not (any(c.isupper() for c in segment) and any(c.islower() for c in segment)):
        return False
    if sum(c.isdigit() for c in segment) < 2:
        return False
    counts: dict[str, int] = {}
    for c in segment:
        counts[c] = counts.get(c, 0) + 1
    n = len(segment)
    entropy = -sum(k / n * math.log2(k / n) for k in counts.values())
    return entropy >= 3.5


def _scrub_random(m: re.Match) -> str:
    run = m.group(0)
    return REDACTED if any(_looks_random(seg) for seg in _SEGMENT_SPLIT_RE.split(run)) else run


def _scrub_bearer(m: re.Match) -> str:
    value = m.group(2)
    if any(c.isdigit() for c in value) or len(value) >= 20:
        return f"{m.group(1)} {REDACTED}"
    return m.group(0)


def scrub_secrets(text: str, values: Iterable[str] = ()) -> str:
    """`text` without credentials: the given and registered values (whatever their shape),
    prefixed tokens, URL userinfo and query tokens, Authorization/Bearer values, `api_key=...`
    pairs and long random-looking strings. Ordinary prose and math are left as they are."""
    if not text:
        return text
    text = URL_USERINFO_RE.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)  # first: all of user:pw@
    known = {v for v in values if v and len(v) >= _MIN_GIVEN} | _REGISTERED_SECRETS
    for value in sorted(known, key=len, reverse=True):  # longest first: a key containing another
        if value in text:
            text = text.replace(value, REDACTED)
    text = TOKEN_RE.sub(REDACTED, text)
    text = _QUERY_SECRET_RE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    text = _AUTH_HEADER_RE.sub(
        lambda m: f"{m.group(1)}{(m.group(2) + ' ') if m.group(2) else ''}{REDACTED}", text
    )
    text = _BEARER_RE.sub(_scrub_bearer, text)
    text = _KV_SECRET_RE.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return _RUN_RE.sub(_scrub_random, text)
