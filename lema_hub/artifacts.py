"""Hub-layout artifact folders: write/discover/load configs, run records, and sanitising.

Every artifact (mistakes, corrections, CoT rows, mixtures, evolved problems, eval details, models)
is a folder laid out exactly as its Hub repository: a `README.md` card whose YAML `configs:` lists
each config's parquet files by name, `data/<config>/<split>-NNNNN-of-NNNNN-<hash>.parquet` (the hash is
of the file's bytes, so the YAML changes whenever the rows do and `datasets`' cache, keyed on the
folder name and the YAML, never serves another folder's or an earlier run's rows), the recipe's
resolved config (`lema_hub_config.yaml`) and run summary (`run_summary.json`).
`datasets.load_dataset(folder, config)` reads it offline; `lema_hub.push.push_folder` sends it to the
Hub in a single commit, and `lema_hub.cards` renders its card.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lema_hub.configs import TOKEN_RE, is_secret, scrub_secrets, secret_values
from lema_hub.errors import InvalidInputError, MissingInputError
from lema_hub.filemodes import honour_umask
from lema_hub.models import is_hub_id
from lema_hub.schema import CONFIG_FILE, DATA_DIR, README, SUMMARY_FILE

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

_SHARD_BYTES = 256 * 1024 * 1024
_CONFIG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SPLIT_RE = re.compile(r"^\w+(\.\w+)*$")

# Hidden work folders of `save_dataset_config`: `.lema-staging-<pid>-<config>.<rand>/` (new rows
# being written) and, from older versions' folder swap, `.lema-old-<pid>-<config>/` (rows replaced).
_STAGING_PREFIX = ".lema-staging-"
_OLD_PREFIX = ".lema-old-"
_WORK_DIR_RE = re.compile(r"^\.lema-(staging|old)-(\d+)-(.+?)(\.[^.]+)?$")
# The same folders as older versions named them: `.<config>.<rand>/` and `.<config>.old-<pid>/`.
_LEGACY_WORK_DIR_RE = re.compile(r"^\.([A-Za-z0-9][A-Za-z0-9_.\-]*?)\.(old-(\d+)|[A-Za-z0-9_]{8})$")
# A data file: `<split>-NNNNN-of-NNNNN[-<content hash>].parquet`.
_DATA_FILE_RE = re.compile(r"^(\w+(?:\.\w+)*)-(\d{5})-of-(\d{5})(?:-([0-9a-f]{8,64}))?\.parquet$")
_HASH_CHARS = 16
# The temp file of `_atomic_write_text` (README.md, run records) a kill left behind.
_TEMP_FILE_RE = re.compile(r"^(README\.md|lema_hub_config\.yaml|run_summary\.json)\.[A-Za-z0-9_]{8}\.tmp$")
# Staging folders of this process's open `DatasetConfigWriter`s: not leftovers while they write.
_OPEN_STAGING: set[Path] = set()


@dataclass
class HubArgs:
    """Mixin for every recipe config that writes an artifact."""

    push_to_hub: bool = field(
        default=False,
        metadata={"help": "Push the output folder to the Hub in one commit when the stage finishes."},
    )
    hub_repo_id: str | None = field(default=None, metadata={"help": 'E.g. "<ns>/lema-corrections"'})
    hub_private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    hub_revision: str | None = field(
        default=None, metadata={"help": "Branch to push to (created when missing)"}
    )


# --------------------------------------------------------------------------------------------------
# Sanitising: no tokens, no absolute local paths in anything we write
# --------------------------------------------------------------------------------------------------

_TOKEN_RE = TOKEN_RE  # prefixed tokens (hf_, sk-, ghp_, JWTs ...); see lema_hub.configs
# What the push guard refuses besides prefixed tokens and known credential values: an
# Authorization header value, a Bearer token, a URL with a password in its userinfo.
_LEAK_RE = re.compile(
    r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?:(?i:bearer|basic|token)\s+)?[A-Za-z0-9._~+/=\-]{8,}"
    r"|\bBearer\s+(?=[A-Za-z0-9._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{8,}"
    r"|\b[A-Za-z][A-Za-z0-9+.\-]{0,30}://[^\s/?#@:'\"<>]{1,256}:[^\s/?#@'\"<>]{1,256}@"
)
# An absolute POSIX path (2+ components) or a Windows drive path, not part of a URL ("http://h/x").
_ABS_PATH_RE = re.compile(
    r"(?<![\w.:/~-])(?:/(?:[\w.@+\-]+/)+[\w.@+\-]*|/(?:home|root|tmp|Users|work)\b[\w./@+\-]*|~/[\w./@+\-]+|[A-Za-z]:\\[\w.\\\-]+)"
)


def _scrub_string(text: str, folder: Path | None = None, secrets: Any = None) -> str:
    """Replace credentials by <redacted> and absolute local paths by a relative or shortened form.

    Credentials: `secrets` (default: `configs.secret_values()`, the configured and env credential
    values) and whatever `configs.scrub_secrets` recognises (tokens, URL userinfo, Bearer ...).
    """
    text = scrub_secrets(text, secret_values() if secrets is None else secrets)

    def repl(m: re.Match) -> str:
        raw = m.group(0)
        p = Path(os.path.expanduser(raw))
        cwd = Path.cwd()
        for base in [folder, cwd if len(cwd.parts) > 2 and cwd != Path.home() else None]:
            if base is None:
                continue
            try:
                rel = p.resolve().relative_to(Path(base).resolve())
                return rel.as_posix() or "."
            except (ValueError, OSError):
                pass
        return f"<local>/{p.name}" if p.name else "<local>"

    return _ABS_PATH_RE.sub(repl, text)


def sanitize(value: Any, folder: Path | None = None, secrets: Any = None) -> Any:
    """A YAML/JSON-safe copy of `value` with credentials redacted and local paths shortened.

    Besides credential-named keys, the values of the env vars it names in `*_env` keys
    (`api_key_env: MY_KEY` -> $MY_KEY's value) are scrubbed wherever they appear.
    """
    if secrets is None:
        secrets = set(secret_values(value))
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = str(k)
            if is_secret(key, v):
                out[key] = "<redacted>"
            else:
                out[key] = sanitize(v, folder, secrets)
        return out
    if isinstance(value, (list, tuple)):
        return [sanitize(v, folder, secrets) for v in value]
    if isinstance(value, str):
        return _scrub_string(value, folder, secrets)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return _scrub_string(os.fspath(value), folder, secrets)
    return _scrub_string(str(value), folder, secrets)


def _folder_credentials(folder: Path) -> dict[str, str]:
    """Credential values to look for in `folder`: `secret_values` of its recorded configs."""
    path = folder / CONFIG_FILE
    try:
        configs = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        configs = None
    return secret_values(configs)


def _parquet_text(path: Path) -> str:
    """The decoded rows of a parquet file (compression can split a string in the raw bytes)."""
    try:
        import pyarrow.parquet as pq

        return json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False)
    except Exception:  # noqa: BLE001 - not readable as parquet: the raw bytes are still scanned
        return ""


def find_leaks(folder: str | os.PathLike, max_bytes: int = 20_000_000) -> list[str]:
    """Files under `folder` that contain something looking like a token or an absolute local path.

    Scans every file (parquet and safetensors included, as bytes; parquet also as decoded rows) up
    to `max_bytes` each for prefixed tokens, Authorization/Bearer values, URL passwords and the
    values of the credentials this process or the folder's recorded configs name (`api_key_env`,
    HF_TOKEN, ..._KEY env vars); returns "path: what" lines (never the value), empty when clean.
    """
    folder = Path(folder)
    home = os.path.expanduser("~")
    needles = {os.fspath(folder.resolve()), home} | {p for p in (tempfile.gettempdir(),) if p}
    credentials = _folder_credentials(folder)
    problems = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.stat().st_size > max_bytes:
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        if path.suffix == ".parquet":
            text += "\n" + _parquet_text(path)
        rel = path.relative_to(folder).as_posix()
        if m := _TOKEN_RE.search(text):
            problems.append(f"{rel}: token-like string {m.group(0)[:6]}...")
        elif m := _LEAK_RE.search(text):
            problems.append(f"{rel}: token-like string {m.group(0)[:6]}...")
        for value, where in credentials.items():
            if value in text:
                problems.append(f"{rel}: token-like string (the value of {where})")
        for needle in needles:
            if len(needle) > 4 and needle in text:
                problems.append(f"{rel}: local path {needle!r}")
    return problems


# --------------------------------------------------------------------------------------------------
# Hub-layout dataset folders
# --------------------------------------------------------------------------------------------------


def _read_card(folder: Path) -> tuple[dict[str, Any], str]:
    """(YAML metadata, body) of folder/README.md; empty when absent."""
    path = folder / README
    if not path.is_file():
        return {}, ""
    text = path.read_text(encoding="utf-8")
    m = re.match(r"^---\s*\n(.*?\n)---\s*\n?(.*)$", text, re.S)
    if not m:
        return {}, text
    meta = yaml.safe_load(m.group(1)) or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: the YAML header is not a mapping.")
    return meta, m.group(2)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)


def _write_card(folder: Path, meta: dict[str, Any], body: str) -> None:
    text = f"---\n{_dump_yaml(meta)}---\n{body.lstrip(chr(10)) if body else ''}"
    _atomic_write_text(folder / README, text)


def _is_main_config(name: str) -> bool:
    return not name.endswith(("-samples", "-rejected"))


def _listed_files(folder: Path) -> dict[str, dict[str, list[str]]] | None:
    """{config: {split: [relative paths]}} README.md's `configs:` lists; None when it lists none.

    A config whose `data_files` cannot be read as files of `data/<config>/` maps to {}.
    """
    try:
        meta, _ = _read_card(folder)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    configs = meta.get("configs")
    if not isinstance(configs, list):
        return None
    out: dict[str, dict[str, list[str]]] = {}
    for entry in configs:
        if not isinstance(entry, dict) or not isinstance(entry.get("config_name"), str):
            continue
        name = entry["config_name"]
        splits: dict[str, list[str]] = {}
        data_files = entry.get("data_files")
        for item in data_files if isinstance(data_files, list) else []:
            paths = item.get("path") if isinstance(item, dict) else None
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
                splits = {}
                break
            for rel in paths:
                if any(ch in rel for ch in "*?["):  # a glob (older versions): the files it matches
                    found = sorted(folder.glob(rel), key=_shard_order)
                    rels = [f.relative_to(folder).as_posix() for f in found]
                else:
                    rels = [rel]
                splits.setdefault(str(item.get("split", "train")), []).extend(rels)
        out[name] = splits
    return out


def _disk_configs(folder: Path) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [relative parquet paths]}} of every data file under folder/data/."""
    out: dict[str, dict[str, list[str]]] = {}
    data = folder / DATA_DIR
    if not data.is_dir():
        return out
    for cdir in sorted(p for p in data.iterdir() if p.is_dir()):
        splits: dict[str, list[str]] = {}
        for f in sorted(cdir.glob("*.parquet"), key=_shard_order):
            m = _DATA_FILE_RE.match(f.name)
            if m:
                splits.setdefault(m.group(1), []).append(f.relative_to(folder).as_posix())
        if splits:
            out[cdir.name] = splits
    return out


def _committed(
    folder: Path, listed: dict[str, dict[str, list[str]]] | None, name: str, on_disk: dict[str, list[str]]
) -> dict[str, list[str]] | None:
    """A config's files as README.md lists them (None: README does not list the config).

    README.md is the commit point of a write: files beside the listed ones are a write that did
    not finish (or old files not yet deleted). A config whose listed files are not all there (a
    folder an older version left mid-write) reads what is on disk, as before.
    """
    if listed is None:
        return on_disk
    if name not in listed:
        return None
    files = listed[name]
    if files and all(
        (folder / f).is_file() and f.startswith(f"{DATA_DIR}/{name}/") for fs in files.values() for f in fs
    ):
        return files
    return on_disk


def discover_configs(folder: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [relative parquet paths]}} of the data under folder/data/ README.md lists.

    When README.md has a `configs:` list, only the configs and files it names count (files of an
    interrupted write beside them do not); without one, every data file under data/ does.
    """
    folder = Path(folder)
    listed = _listed_files(folder)
    out: dict[str, dict[str, list[str]]] = {}
    for name, on_disk in _disk_configs(folder).items():
        files = _committed(folder, listed, name, on_disk)
        if files:
            out[name] = files
    return out


def _shard_order(path: Path) -> tuple:
    m = _DATA_FILE_RE.match(path.name)
    return (m.group(1), int(m.group(2)), path.name) if m else ("", 0, path.name)


def _configs_metadata(
    folder: Path, previous: list[dict] | None, found: dict[str, dict[str, list[str]]] | None = None
) -> list[dict[str, Any]]:
    """The `configs:` YAML for `found` (default: the folder's data), keeping the order (and default
    flag) of `previous`; configs new to it follow in `found`'s order."""
    found = discover_configs(folder) if found is None else found
    order = [c.get("config_name") for c in previous or [] if c.get("config_name") in found]
    order += [c for c in found if c not in order]
    defaults = [
        c.get("config_name") for c in previous or [] if c.get("default") and c.get("config_name") in found
    ]
    default = defaults[0] if defaults else next((c for c in order if _is_main_config(c)), None)
    configs = []
    for name in order:
        entry: dict[str, Any] = {"config_name": name}
        if name == default and len(order) > 1:
            entry["default"] = True
        # The files by name (not a `<split>-*` glob): the names carry a content hash, so the YAML -
        # and with it `datasets`' cache key - changes whenever the rows on disk do.
        entry["data_files"] = [
            {"split": split, "path": files[0] if len(files) == 1 else files}
            for split, files in sorted(found[name].items())
        ]
        configs.append(entry)
    return configs


def _to_dataset(
    rows: datasets.Dataset | list[dict], features: datasets.Features | None, config: str
) -> datasets.Dataset:
    import datasets

    if isinstance(rows, datasets.Dataset):
        return rows
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TypeError(
            f"save_dataset_config({config!r}): a split must be a datasets.Dataset or a list of dicts, "
            f"got {type(rows).__name__}."
        )
    if not rows:  # not written; `from_list([], features=...)` fails on the features' keys
        return datasets.Dataset.from_list([])
    return datasets.Dataset.from_list(rows, features=features)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers are from an earlier call that failed: never in use
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, owned by someone else
        return True
    return True


def _only_parquet(path: Path) -> bool:
    return all(f.is_file() and f.suffix == ".parquet" for f in path.iterdir())


def leftover_work_dirs(folder: str | os.PathLike, live_too: bool = False) -> list[tuple[Path, str, str]]:
    """(path, "staging" | "old", config) of the hidden swap folders an interrupted write left behind.

    Folders of a writer that is still running (its pid alive) are not leftovers unless `live_too`.
    The names older versions used (`.<config>.<rand>/`, `.<config>.old-<pid>/`) count when they hold
    only parquet files.
    """
    folder = Path(folder)
    out: list[tuple[Path, str, str]] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.iterdir()):
        if not path.is_dir() or not path.name.startswith("."):
            continue
        if m := _WORK_DIR_RE.match(path.name):
            kind, pid, config = m.group(1), int(m.group(2)), m.group(3)
            if kind == "old":
                config = path.name[len(_OLD_PREFIX) + len(m.group(2)) + 1 :]
        elif (m := _LEGACY_WORK_DIR_RE.match(path.name)) and _only_parquet(path):
            kind = "old" if m.group(3) else "staging"
            pid, config = int(m.group(3) or 0), m.group(1)
        else:
            continue
        if pid and not live_too and _pid_alive(pid):
            continue
        if path.resolve() in _OPEN_STAGING:  # a `DatasetConfigWriter` of this process is writing it
            continue
        out.append((path, kind, config))
    return out


def clean_leftovers(folder: str | os.PathLike) -> list[str]:
    """Remove (or restore) what an interrupted `save_dataset_config` left; returns what was done.

    A half-written staging folder is deleted. A config's old rows are put back when the kill came
    between moving them aside and moving the new rows in (the config's folder is missing), else
    deleted.
    """
    folder = Path(folder)
    done = []
    for path, kind, config in leftover_work_dirs(folder):
        target = folder / DATA_DIR / config
        if kind == "old" and not target.exists() and _CONFIG_NAME_RE.match(config) and any(path.iterdir()):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            done.append(f"restored {DATA_DIR}/{config} from {path.name}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}")
    done += _remove_uncommitted(folder)
    for line in done:
        logger.warning("%s: %s (left by an interrupted write)", folder.name, line)
    return done


def uncommitted_files(folder: str | os.PathLike) -> list[Path]:
    """Files an interrupted write left that README.md does not list: data files beside a config's
    listed ones, the folders of configs it does not list, temp files of an atomic write."""
    folder = Path(folder)
    out: list[Path] = []
    if not folder.is_dir():
        return out
    out += [p for p in sorted(folder.iterdir()) if p.is_file() and _TEMP_FILE_RE.match(p.name)]
    listed = _listed_files(folder)
    if listed is None:
        return out
    for name, on_disk in _disk_configs(folder).items():
        files = _committed(folder, listed, name, on_disk)
        cdir = folder / DATA_DIR / name
        if files is None:  # a config README.md never listed: a first write that did not finish
            if all(_hashed(f) for f in cdir.iterdir()):
                out.append(cdir)
            continue
        keep = {f for fs in files.values() for f in fs}
        out += [f for f in sorted(cdir.glob("*.parquet")) if f.relative_to(folder).as_posix() not in keep]
    return out


def _hashed(path: Path) -> bool:
    m = _DATA_FILE_RE.match(path.name)
    return bool(path.is_file() and m and m.group(4))


def _remove_uncommitted(folder: Path) -> list[str]:
    done = []
    for path in uncommitted_files(folder):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        done.append(f"removed {path.relative_to(folder).as_posix()}")
    return done


def _content_name(path: Path, split: str, index: int, count: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{split}-{index:05d}-of-{count:05d}-{digest.hexdigest()[:_HASH_CHARS]}.parquet"


def save_dataset_config(
    folder: str | os.PathLike,
    config_name: str,
    splits: dict[str, datasets.Dataset | list[dict]],
    max_shard_rows: int | None = None,
    features: datasets.Features | None = None,
    group: ConfigGroup | None = None,
) -> None:
    """Write `data/<config_name>/<split>-NNNNN-of-NNNNN-<hash>.parquet` and list them in README.md `configs:`.

    Only this config's old files are replaced; other configs, the rest of the YAML and the card
    body are kept. `datasets` cannot load a zero-row split, so empty splits are not written; a
    config whose splits are all empty is removed from the folder (its old files included). What
    an interrupted earlier write left behind (hidden swap folders) is cleaned up first. Within a
    `ConfigGroup` the config is committed with the group's others when the group closes.
    """
    import datasets.utils as hf_tqdm

    if not isinstance(config_name, str) or not _CONFIG_NAME_RE.match(config_name):
        raise ValueError(f"Invalid config name {config_name!r}: use letters, digits, '-', '_' or '.'.")
    if not splits:
        raise ValueError(f"save_dataset_config({config_name!r}): no splits given.")
    for split in splits:
        if not _SPLIT_RE.match(split):
            raise ValueError(f"Invalid split name {split!r} for config {config_name!r}.")
    if max_shard_rows is not None and max_shard_rows < 1:
        raise ValueError(f"max_shard_rows must be >= 1, got {max_shard_rows}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_leftovers(folder)
    pid = os.getpid()
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{pid}-{config_name}.", dir=folder))
    honour_umask(staging)
    _OPEN_STAGING.add(staging.resolve())
    bars_were_off = hf_tqdm.are_progress_bars_disabled()
    hf_tqdm.disable_progress_bars()
    try:
        for split, rows in splits.items():
            ds = _to_dataset(rows, features, config_name)
            n = len(ds)
            if n == 0:
                logger.info("%s: config %s split %s is empty; not written", folder.name, config_name, split)
                continue
            if max_shard_rows is not None:
                num_shards = max(1, math.ceil(n / max_shard_rows))
            else:
                nbytes = ds.data.nbytes if n else 0
                num_shards = max(1, min(n, math.ceil(nbytes / _SHARD_BYTES)))
            for i in range(num_shards):
                shard = ds.shard(num_shards, i, contiguous=True) if num_shards > 1 else ds
                tmp = staging / f".{split}-{i:05d}.parquet.tmp"
                shard.to_parquet(str(tmp))
                os.replace(tmp, staging / _content_name(tmp, split, i, num_shards))
        if group is not None:
            group._add(config_name, staging)
            staging = None  # the group's now
        else:
            _commit(folder, [(config_name, staging)])
    finally:
        if not bars_were_off:
            hf_tqdm.enable_progress_bars()
        if staging is not None:
            _OPEN_STAGING.discard(staging.resolve())
            shutil.rmtree(staging, ignore_errors=True)


def _commit(folder: Path, staged: list[tuple[str, Path]]) -> None:
    """Replace the rows of each (config, finished staging folder) at once (an empty one removes it).

    README.md is the commit point: the new (content-named) files are moved in beside the old
    ones, README.md is replaced in one `os.replace` listing them, and only then are the old files
    deleted. A kill before the replace leaves the old README.md naming old files that are all
    still there; after it, the new one naming the new files; `clean_leftovers` removes the rest.
    """
    found = discover_configs(folder)  # what README.md lists now
    old = {config: found.get(config, {}) for config, _ in staged}
    for config, staging in staged:
        files = sorted(staging.glob("*.parquet"), key=_shard_order)
        if not files:
            found.pop(config, None)
            continue
        target = folder / DATA_DIR / config
        target.mkdir(parents=True, exist_ok=True)
        splits: dict[str, list[str]] = {}
        for f in files:  # an equal name is equal bytes: replacing a listed file changes nothing
            os.replace(f, target / f.name)
            split = _DATA_FILE_RE.match(f.name).group(1)
            splits.setdefault(split, []).append(f"{DATA_DIR}/{config}/{f.name}")
        found[config] = splits  # a config new to the folder goes last
    _update_card_configs(folder, found)
    for config, files in old.items():
        target = folder / DATA_DIR / config
        if config not in found:
            shutil.rmtree(target, ignore_errors=True)
            continue
        keep = {f for fs in found[config].values() for f in fs}
        for f in [f for fs in files.values() for f in fs if f not in keep]:
            (folder / f).unlink(missing_ok=True)


def _update_card_configs(folder: Path, found: dict[str, dict[str, list[str]]] | None = None) -> None:
    """List `found` (default: the folder's data) in README.md's `configs:` YAML (the body is kept)."""
    meta, body = _read_card(folder)
    meta["configs"] = _configs_metadata(folder, meta.get("configs"), found)
    if not body.strip():
        body = f"\n# {folder.name}\n\nLeMa artifact written by lema_hub; the full card is rendered by `write_dataset_card`.\n"
    _write_card(folder, meta, body)


class DatasetConfigWriter:
    """`save_dataset_config` for rows that arrive in batches: memory holds one batch, not the dataset.

    ``with DatasetConfigWriter(folder, config, features) as w: w.write(rows)`` appends each batch
    (a list of dicts, conformed to `features`' columns) to `<split>` parquet files in a hidden
    staging folder with the schema and writer options `Dataset.to_parquet` uses (one row group per
    batch); a new shard starts once a file holds `max_shard_bytes` of Arrow data. On a clean exit
    the files get their content-hashed names, replace the config's old files in one swap and are
    listed in README.md `configs:`; on an exception nothing of the folder changes (the staging
    folder is removed). A config that received no rows is removed, as `save_dataset_config` does.
    Within a `ConfigGroup` (`group=`) the finished files wait for the group's commit.
    `batches_written` records the size of every batch, in order.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        config_name: str,
        features: datasets.Features,
        max_shard_bytes: int = _SHARD_BYTES,
        group: ConfigGroup | None = None,
    ) -> None:
        if not isinstance(config_name, str) or not _CONFIG_NAME_RE.match(config_name):
            raise ValueError(f"Invalid config name {config_name!r}: use letters, digits, '-', '_' or '.'.")
        if features is None:
            raise ValueError(f"DatasetConfigWriter({config_name!r}): features are required.")
        self.folder = Path(folder)
        self.config_name = config_name
        self.features = features
        self.max_shard_bytes = max_shard_bytes
        self.group = group
        self.batches_written: list[int] = []
        self.num_rows = 0
        self._staging: Path | None = None
        self._writers: dict[str, Any] = {}  # split -> (ParquetWriter, its path, Arrow bytes written)
        self._files: dict[str, list[Path]] = {}

    def __enter__(self) -> DatasetConfigWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        clean_leftovers(self.folder)
        prefix = f"{_STAGING_PREFIX}{os.getpid()}-{self.config_name}."
        self._staging = Path(tempfile.mkdtemp(prefix=prefix, dir=self.folder))
        honour_umask(self._staging)
        _OPEN_STAGING.add(self._staging.resolve())
        return self

    def _open(self, split: str) -> list:
        import pyarrow.parquet as pq
        from datasets import config
        from datasets.arrow_writer import get_parquet_column_options

        assert self._staging is not None, "use DatasetConfigWriter as a context manager"
        files = self._files.setdefault(split, [])
        path = self._staging / f".{split}-{len(files):05d}.parquet.tmp"
        files.append(path)
        schema = self.features.arrow_schema
        writer = pq.ParquetWriter(
            path,
            schema=schema,
            use_content_defined_chunking=config.DEFAULT_CDC_OPTIONS,
            write_page_index=True,
            **get_parquet_column_options(self.features, schema),
        )
        return [writer, path, 0]

    @staticmethod
    def _close(state: list) -> None:
        from datasets import config

        writer = state[0]
        writer.add_key_value_metadata({"content_defined_chunking": json.dumps(config.DEFAULT_CDC_OPTIONS)})
        writer.close()

    def write(self, rows: list[dict], split: str = "train") -> None:
        """Append one batch of rows to `split` (an empty batch writes nothing)."""
        import datasets

        if not _SPLIT_RE.match(split):
            raise ValueError(f"Invalid split name {split!r} for config {self.config_name!r}.")
        if not rows:
            return
        batch = [{name: r.get(name) for name in self.features} for r in rows]
        table = datasets.Dataset.from_list(batch, features=self.features).data.table
        del batch
        state = self._writers.get(split)
        if state is not None and state[2] >= self.max_shard_bytes:
            self._close(state)
            state = None
        if state is None:
            state = self._writers[split] = self._open(split)
        state[0].write_table(table)
        state[2] += table.nbytes
        self.batches_written.append(len(rows))
        self.num_rows += len(rows)

    def __exit__(self, exc_type, exc, tb) -> None:
        staging = self._staging
        assert staging is not None
        handed = False  # to the group, which commits or removes it
        try:
            if exc_type is None:
                for state in self._writers.values():
                    self._close(state)
                self._writers.clear()
                for split, files in self._files.items():
                    for i, tmp in enumerate(files):
                        os.replace(tmp, staging / _content_name(tmp, split, i, len(files)))
                if self.group is not None:
                    self.group._add(self.config_name, staging)
                    handed = True
                    return
                _commit(self.folder, [(self.config_name, staging)])
        finally:
            for state in self._writers.values():  # an exception: close what is open, keep nothing
                try:
                    state[0].close()
                except Exception:  # noqa: BLE001 - the staging folder is removed either way
                    pass
            if not handed:
                _OPEN_STAGING.discard(staging.resolve())
                shutil.rmtree(staging, ignore_errors=True)


class ConfigGroup:
    """Several configs written as one: all of their new rows are listed at once, or none is.

    ``with ConfigGroup(folder) as g:`` then ``DatasetConfigWriter(folder, c, f, group=g)`` /
    ``save_dataset_config(folder, c, splits, group=g)`` for each config: each stages its files on
    its own; when the group exits cleanly, they are all moved in and README.md is written once
    (its `configs:` lists new configs in the order their writers finished), then the old files are
    deleted. On an exception (or a kill) the folder keeps every config's old rows.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.staged: dict[str, Path] = {}  # config -> its finished staging folder, in commit order

    def __enter__(self) -> ConfigGroup:
        self.folder.mkdir(parents=True, exist_ok=True)
        clean_leftovers(self.folder)
        return self

    def _add(self, config: str, staging: Path) -> None:
        if (earlier := self.staged.pop(config, None)) is not None:  # written twice: the last one wins
            _OPEN_STAGING.discard(earlier.resolve())
            shutil.rmtree(earlier, ignore_errors=True)
        self.staged[config] = staging

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.staged:
                _commit(self.folder, list(self.staged.items()))
        finally:
            for staging in self.staged.values():
                _OPEN_STAGING.discard(staging.resolve())
                shutil.rmtree(staging, ignore_errors=True)
            self.staged.clear()


def save_dataset_config_stream(
    folder: str | os.PathLike,
    config_name: str,
    batches: Iterable[list[dict]],
    features: datasets.Features,
    split: str = "train",
    group: ConfigGroup | None = None,
) -> int:
    """`save_dataset_config` of one split whose rows come in batches (see `DatasetConfigWriter`).

    Returns the number of rows written. An exception raised while the batches are produced leaves
    the folder as it was.
    """
    with DatasetConfigWriter(folder, config_name, features, group=group) as writer:
        for batch in batches:
            writer.write(batch, split)
    return writer.num_rows


def _files_fingerprint(folder: Path, files: list[str], skip_columns: Sequence[str] = ()) -> str:
    """A `datasets` fingerprint of a split read from parquet shards: their paths, sizes and mtimes."""
    parts = [repr(sorted(skip_columns))]
    for f in files:
        st = (folder / f).stat()
        parts.append(f"{(folder / f).resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _concat_parquet(folder: Path, files: list[str], skip_columns: Sequence[str] = ()):
    """One pyarrow.Table from a split's parquet shards (paths relative to `folder`), without
    `skip_columns` (never read from disk)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = None
    if skip_columns and files:
        columns = [c for c in pq.read_schema(folder / files[0]).names if c not in set(skip_columns)]
    return pa.concat_tables([pq.read_table(folder / f, columns=columns) for f in files])


class _ColumnChunks:
    """One column of a split as Arrow arrays of at most `step` rows, read one row group at a time
    each time it is iterated: the column of every row is never in memory at once."""

    def __init__(self, paths: list[Path], name: str, step: int = 4096) -> None:
        self.paths, self.name, self.step = paths, name, step

    def __iter__(self) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pool = pa.default_memory_pool()
        for p in self.paths:
            f = pq.ParquetFile(p)
            for g in range(f.num_row_groups):
                # One column decodes on one thread anyway; more threads only spread the allocator's
                # per-thread caches, which the process then keeps.
                chunks = f.read_row_group(g, columns=[self.name], use_threads=False).column(0).chunks
                while chunks:
                    part = chunks.pop(0)  # not referenced here once consumed
                    for lo in range(0, len(part), self.step):
                        yield part.slice(lo, self.step)
                    del part
                pool.release_unused()  # the allocator hands the row group's pages back to the system


class _ParquetColumns:
    """A split's parquet shards for the card's statistics, read one column at a time.

    The card needs a few columns of every row (verdicts, ids, token counts); reading whole tables
    held every text column of every row in memory at once, and a whole column still grew with the
    rows, so `column` hands the column back a row group at a time. `columns_read` counts the
    columns actually read.
    """

    def __init__(self, paths: list[Path]) -> None:
        import pyarrow.parquet as pq

        self.paths = paths
        files = [pq.ParquetFile(p) for p in paths]
        self.schema = files[0].schema_arrow if files else None
        self.column_names = list(self.schema.names) if files else []
        self.num_rows = sum(f.metadata.num_rows for f in files)
        self.columns_read: list[str] = []

    def column(self, name: str) -> _ColumnChunks:
        """The column `name` as its chunks (Arrow arrays), read from disk as they are iterated."""
        self.columns_read.append(name)
        return _ColumnChunks(self.paths, name)

    def slice(self, offset: int, length: int):
        """Rows [offset, offset + length) with every column (the card's example row), read from
        the row groups that hold them only."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts, start, stop = [], 0, offset + length
        for p in self.paths:
            f = pq.ParquetFile(p)
            for g in range(f.num_row_groups):
                n = f.metadata.row_group(g).num_rows
                lo, hi = max(offset, start), min(stop, start + n)
                if lo < hi:  # decoded a batch at a time: the group's other rows are skipped, not kept
                    pos = start
                    size = max(1, min(length, 1024))
                    for batch in f.iter_batches(batch_size=size, row_groups=[g], use_threads=False):
                        if pos + batch.num_rows > lo:
                            parts.append(
                                pa.Table.from_batches([batch]).slice(max(0, lo - pos), hi - max(lo, pos))
                            )
                        pos += batch.num_rows
                        if pos >= hi:
                            break
                start += n
                if start >= stop and parts:
                    return pa.concat_tables(parts)
        return pa.concat_tables(parts) if parts else self.schema.empty_table()


def _read_tables(folder: Path) -> dict[str, dict[str, Any]]:
    """{config: {split: table}} for every parquet config in the folder (columns read on demand)."""
    return {
        config: {split: _ParquetColumns([folder / f for f in files]) for split, files in splits.items()}
        for config, splits in discover_configs(folder).items()
    }


# --------------------------------------------------------------------------------------------------
# Run records
# --------------------------------------------------------------------------------------------------


def write_run_record(folder: str | os.PathLike, config: dict, summary: dict, recipe: str) -> None:
    """Ship the resolved recipe config and the run summary inside the artifact folder.

    Both files are keyed by recipe (`collect:`, `correct:` ...), so two stages writing into one folder
    keep each other's records. Credentials are redacted and local absolute paths shortened.
    """
    if not recipe:
        raise ValueError("write_run_record: recipe must be a non-empty name, e.g. 'collect'.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = folder / CONFIG_FILE
    configs = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    configs = configs if isinstance(configs, dict) else {}
    configs[recipe] = sanitize(dict(config), folder)
    header = "# Resolved lema_hub recipe configs (credentials redacted), one entry per recipe.\n"
    _atomic_write_text(cfg_path, header + _dump_yaml(configs))

    sum_path = folder / SUMMARY_FILE
    summaries = json.loads(sum_path.read_text()) if sum_path.is_file() else {}
    summaries = summaries if isinstance(summaries, dict) else {}
    summaries[recipe] = sanitize(dict(summary), folder)
    _atomic_write_text(sum_path, json.dumps(summaries, indent=2, sort_keys=False, default=str) + "\n")


def read_run_record(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(configs by recipe, summaries by recipe) of a folder; empty dicts when absent."""
    folder = Path(folder)
    cfg = yaml.safe_load((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).is_file() else {}
    summ = json.loads((folder / SUMMARY_FILE).read_text()) if (folder / SUMMARY_FILE).is_file() else {}
    return (cfg if isinstance(cfg, dict) else {}), (summ if isinstance(summ, dict) else {})


# --------------------------------------------------------------------------------------------------
# Reading artifacts (a local folder or a Hub dataset)
# --------------------------------------------------------------------------------------------------


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-") or "results"


def load_artifact(
    folder_or_repo: str, config: str = "default", split: str = "train", skip_columns: Sequence[str] = ()
) -> datasets.Dataset:
    """Load one config/split of an artifact folder or Hub repo (without `skip_columns`).

    `config="default"` means the folder's default (main) config when no config is literally named so.
    """
    import datasets

    name: str | None = config
    path = Path(folder_or_repo)
    if path.is_dir():
        found = discover_configs(path)
        if not found:
            raise FileNotFoundError(f"{path} has no data/<config>/*.parquet files.")
        if config not in found:
            if config == "default":
                meta, _ = _read_card(path)
                cfgs = _configs_metadata(path, meta.get("configs"))
                name = next((c["config_name"] for c in cfgs if c.get("default")), cfgs[0]["config_name"])
            else:
                raise ValueError(f"{path} has no config {config!r}; configs: {', '.join(found)}.")
        if split not in found[name]:
            raise ValueError(
                f"{path} config {name!r} has no split {split!r}; splits: {', '.join(found[name])}."
            )
        # Read the parquet files directly (no `datasets` cache to build): also right for folders
        # written before data file names carried a content hash, which `load_dataset` may read stale.
        files = found[name][split]
        # A fingerprint from the files' names and stats: left to `datasets`, it is a hash of the
        # whole table pickled, a second copy of every row in memory at once.
        return datasets.Dataset(
            _concat_parquet(path, files, skip_columns),
            fingerprint=_files_fingerprint(path, files, skip_columns),
        )
    ds = datasets.load_dataset(folder_or_repo, None if config == "default" else config, split=split)
    return ds.remove_columns([c for c in skip_columns if c in ds.column_names]) if skip_columns else ds


def _is_local(folder_or_repo: str) -> bool:
    """A folder, or a missing local path (not a Hub id): raises `MissingInputError` for the latter."""
    if Path(folder_or_repo).is_dir():
        return True
    if not is_hub_id(folder_or_repo):
        raise MissingInputError(
            f"{folder_or_repo!r} is not a dataset folder (and not a Hub dataset id 'namespace/name')."
        )
    return False


def _hub_error(repo_id: str, exc: Exception) -> Exception:
    return InvalidInputError(
        f"could not read the Hub dataset {repo_id!r}: {type(exc).__name__}: {exc}. "
        "Offline? Pass a local dataset folder."
    )


def main_config(folder_or_repo: str) -> str:
    """The main `<task>` config of an artifact folder or Hub dataset (not `-samples`/`-rejected`)."""
    path = Path(folder_or_repo)
    if _is_local(folder_or_repo):
        names = list(discover_configs(path))
        if not names:
            raise InvalidInputError(f"{folder_or_repo!r} holds no data/<config>/*.parquet files.")
    else:
        import datasets

        try:
            names = datasets.get_dataset_config_names(folder_or_repo)
        except Exception as exc:  # noqa: BLE001 - offline, missing, gated: all the user's to fix
            raise _hub_error(folder_or_repo, exc) from exc
    # A config with no rows is not written, so `<task>-rejected` alone still names the task.
    main = sorted({re.sub(r"-(samples|rejected)$", "", n) for n in names})
    if len(main) != 1:
        raise InvalidInputError(
            f"{folder_or_repo} has configs {names}; say which one to read "
            f"(e.g. --mistakes_config {main[0] if main else '...'})."
        )
    return main[0]


def _load_checked(
    folder_or_repo: str, config: str, split: str, missing_ok: bool, skip_columns: Sequence[str]
) -> datasets.Dataset | None:
    """`load_artifact` with one clear error per cause (None: `missing_ok` and no such config)."""
    import pyarrow as pa

    path = Path(folder_or_repo)
    if not _is_local(folder_or_repo):
        try:
            return load_artifact(folder_or_repo, config, split, skip_columns)
        except Exception as exc:  # noqa: BLE001 - offline, missing, gated: all the user's to fix
            raise _hub_error(folder_or_repo, exc) from exc
    if missing_ok and config not in discover_configs(path):
        return None  # an empty config is not written at all
    try:
        return load_artifact(folder_or_repo, config, split, skip_columns)
    except pa.ArrowException as exc:
        raise InvalidInputError(f"{folder_or_repo} [{config}]: a parquet file cannot be read: {exc}") from exc


def load_rows(
    folder_or_repo: str,
    config: str,
    split: str = "train",
    missing_ok: bool = False,
    skip_columns: Sequence[str] = (),
) -> list[dict]:
    """Rows of one config/split of an artifact folder or Hub dataset (`missing_ok`: [] if absent);
    `skip_columns` are not read (e.g. long texts a stage does not use)."""
    ds = _load_checked(folder_or_repo, config, split, missing_ok, skip_columns)
    return [] if ds is None else [dict(r) for r in ds]


class StreamedRows:
    """The rows of one config/split read from disk a batch at a time, on every pass: what a
    stage reads in order, twice at most, without holding the table (memory flat in the rows).

    A local folder's parquet files are opened once (a file replaced meanwhile stays readable) and
    read a row group at a time; a Hub dataset is `datasets`' memory-mapped table, sliced. `head`
    and `slice` narrow the window without reading anything.
    """

    def __init__(self, files: list[Any], table: Any = None, columns: list[str] | None = None,
                 lo: int = 0, hi: int | None = None) -> None:  # fmt: skip
        self._files, self._table, self._columns = files, table, columns
        total = table.num_rows if table is not None else sum(f.metadata.num_rows for f in files)
        self.lo = min(lo, total)
        self.hi = total if hi is None else max(self.lo, min(hi, total))

    @property
    def schema(self) -> Any:
        """The Arrow schema of the rows (without the skipped columns)."""
        import pyarrow as pa

        if self._table is not None:
            return self._table.schema
        if not self._files:
            return pa.schema([])
        schema = self._files[0].schema_arrow
        return pa.schema([schema.field(c) for c in self._columns]) if self._columns is not None else schema

    def __len__(self) -> int:
        return self.hi - self.lo

    def batches(self, size: int = 1024) -> Iterator[Any]:
        """The rows in order as `pyarrow.Table`s of at most `size` rows."""
        if self._table is not None:
            for lo in range(self.lo, self.hi, size):
                yield self._table.slice(lo, min(size, self.hi - lo))
            return
        start = 0  # index of the current file's first row
        for f in self._files:
            n = f.metadata.num_rows
            if start + n <= self.lo or start >= self.hi:
                start += n
                continue
            at = start
            for g in range(f.metadata.num_row_groups):
                rows = f.metadata.row_group(g).num_rows
                if at + rows > self.lo and at < self.hi:
                    group = f.read_row_group(g, columns=self._columns)
                    a, b = max(self.lo - at, 0), min(self.hi - at, rows)
                    for k in range(a, b, size):
                        yield group.slice(k, min(size, b - k))
                    del group
                at += rows
            start += n

    def __iter__(self) -> Iterator[dict]:
        for t in self.batches():
            yield from t.to_pylist()

    def head(self, n: int) -> StreamedRows:
        return self.slice(0, n)

    def slice(self, lo: int, hi: int) -> StreamedRows:
        """Rows [lo, hi) of these rows (nothing read)."""
        return StreamedRows(self._files, self._table, self._columns, self.lo + lo, self.lo + max(lo, hi))


def stream_rows(
    folder_or_repo: str,
    config: str,
    split: str = "train",
    missing_ok: bool = False,
    skip_columns: Sequence[str] = (),
) -> StreamedRows:
    """The rows `load_rows` returns, as `StreamedRows` (read from disk a batch at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(folder_or_repo)
    if not _is_local(folder_or_repo):
        ds = _load_checked(folder_or_repo, config, split, missing_ok, skip_columns)
        return StreamedRows([], ds.data.table)
    found = discover_configs(path)
    if missing_ok and config not in found:
        return StreamedRows([])
    if config not in found or split not in found[config]:
        if config != "default" or not found:
            _load_checked(folder_or_repo, config, split, missing_ok, skip_columns)  # its one-line error
        meta, _ = _read_card(path)
        cfgs = _configs_metadata(path, meta.get("configs"))
        config = next((c["config_name"] for c in cfgs if c.get("default")), cfgs[0]["config_name"])
        if split not in found[config]:
            _load_checked(folder_or_repo, config, split, missing_ok, skip_columns)
    try:
        files = [pq.ParquetFile(path / f) for f in found[config][split]]
    except pa.ArrowException as exc:
        raise InvalidInputError(f"{folder_or_repo} [{config}]: a parquet file cannot be read: {exc}") from exc
    columns = None
    if skip_columns and files:
        columns = [c for c in files[0].schema_arrow.names if c not in set(skip_columns)]
    return StreamedRows(files, columns=columns)
