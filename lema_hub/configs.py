"""One config system for every recipe: dataclasses parsed by `trl.TrlParser` from YAML + CLI.

`parse_config` adds what TrlParser leaves out: an unknown YAML key fails with a message naming the
key and the file, and YAML values are type-checked against the dataclass fields (TrlParser
installs YAML values as argparse defaults, which argparse never converts or checks).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
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
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must contain a YAML mapping, got {type(data).__name__}.")
    return data


def parse_config(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `--config file.yaml` plus CLI overrides into instances of `dataclass_types`."""
    from trl import TrlParser

    args = list(args) if args is not None else None
    if args is not None and "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ConfigError("--config needs a path to a YAML file.")
        path = args[i + 1]
        check_config_mapping(load_yaml(path), dataclass_types, path)
    parser = TrlParser(list(dataclass_types))
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
