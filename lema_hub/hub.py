"""Hub-layout artifact folders, their cards, and one-commit pushes.

Every artifact (mistakes, corrections, CoT rows, mixtures, evolved problems, eval details, models)
is a folder laid out exactly as its Hub repository: a `README.md` card whose YAML `configs:` lists
each config's parquet files by name, `data/<config>/<split>-NNNNN-of-NNNNN-<hash>.parquet` (the hash is
of the file's bytes, so the YAML changes whenever the rows do and `datasets`' cache, keyed on the
folder name and the YAML, never serves another folder's or an earlier run's rows), the recipe's
resolved config (`lema_hub_config.yaml`) and run summary (`run_summary.json`).
`datasets.load_dataset(folder, config)` reads it offline, and `push_folder` sends it to the Hub in a
single commit.

Cards are rendered from the Jinja templates in `dataset_cards/` and `model_cards/` with
`DatasetCard.from_template` / `ModelCard.from_template`; every number in a card is computed from the
folder's own files, so a card can never disagree with its data.
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
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lema_hub.configs import is_secret
from lema_hub.schema import CORRECTOR_TOKENS, GENERATOR_TOKENS, REFERENCE_CORRECTOR, TokenColumns

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

README = "README.md"
CONFIG_FILE = "lema_hub_config.yaml"
SUMMARY_FILE = "run_summary.json"
DATA_DIR = "data"
IMAGES_DIR = "images"
EVAL_RESULTS_DIR = ".eval_results"
DEFAULT_NAMESPACE = "your-username"  # placeholder in "how to load" snippets when no repo id is known
_SHARD_BYTES = 256 * 1024 * 1024
_CONFIG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SPLIT_RE = re.compile(r"^\w+(\.\w+)*$")

# Hidden work folders of `save_dataset_config`'s swap: `.lema-staging-<pid>-<config>.<rand>/` (new
# rows being written) and `.lema-old-<pid>-<config>/` (the rows being replaced).
_STAGING_PREFIX = ".lema-staging-"
_OLD_PREFIX = ".lema-old-"
_WORK_DIR_RE = re.compile(r"^\.lema-(staging|old)-(\d+)-(.+?)(\.[^.]+)?$")
# The same folders as older versions named them: `.<config>.<rand>/` and `.<config>.old-<pid>/`.
_LEGACY_WORK_DIR_RE = re.compile(r"^\.([A-Za-z0-9][A-Za-z0-9_.\-]*?)\.(old-(\d+)|[A-Za-z0-9_]{8})$")
# A data file: `<split>-NNNNN-of-NNNNN[-<content hash>].parquet`.
_DATA_FILE_RE = re.compile(r"^(\w+(?:\.\w+)*)-(\d{5})-of-(\d{5})(?:-([0-9a-f]{8,64}))?\.parquet$")
_HASH_CHARS = 16

# Paths of files that never go to the Hub (local caches, locks, trainer checkpoints, the hidden work
# folders of an interrupted `save_dataset_config`).
PUSH_IGNORE = [
    ".cache/**",
    "**/.cache/**",
    "*.lock",
    "**/*.lock",
    "checkpoint-*/**",
    "**/__pycache__/**",
    f"{_STAGING_PREFIX}*/**",
    f"{_OLD_PREFIX}*/**",
]


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


@dataclass
class PushConfig:
    """`lema-hub push FOLDER REPO_ID`: push any artifact folder in one commit."""

    folder: str = field(
        metadata={
            "help": "The artifact folder to push (a Hub-layout dataset folder, a model folder or a Space folder)."
        }
    )
    repo_id: str = field(metadata={"help": "Target repo, '<namespace>/<name>'."})
    repo_type: str = field(default="dataset", metadata={"help": "dataset | model | space"})
    private: bool = field(default=False, metadata={"help": "Create the repo as private."})
    revision: str | None = field(default=None, metadata={"help": "Branch to push to (created if missing)."})
    commit_message: str | None = field(
        default=None, metadata={"help": "Commit message (default names the recipe and configs)."}
    )


# --------------------------------------------------------------------------------------------------
# Sanitising: no tokens, no absolute local paths in anything we write
# --------------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|api_[A-Za-z0-9]{20,})\b")
# An absolute POSIX path (2+ components) or a Windows drive path, not part of a URL ("http://h/x").
_ABS_PATH_RE = re.compile(
    r"(?<![\w.:/~-])(?:/(?:[\w.@+\-]+/)+[\w.@+\-]*|/(?:home|root|tmp|Users|work)\b[\w./@+\-]*|~/[\w./@+\-]+|[A-Za-z]:\\[\w.\\\-]+)"
)


def _scrub_string(text: str, folder: Path | None = None) -> str:
    """Replace tokens by <redacted> and absolute local paths by a relative or shortened form."""
    text = _TOKEN_RE.sub("<redacted>", text)

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


def sanitize(value: Any, folder: Path | None = None) -> Any:
    """A YAML/JSON-safe copy of `value` with credentials redacted and local paths shortened."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = str(k)
            if is_secret(key, v):
                out[key] = "<redacted>"
            else:
                out[key] = sanitize(v, folder)
        return out
    if isinstance(value, (list, tuple)):
        return [sanitize(v, folder) for v in value]
    if isinstance(value, str):
        return _scrub_string(value, folder)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return _scrub_string(os.fspath(value), folder)
    return _scrub_string(str(value), folder)


def find_leaks(folder: str | os.PathLike, max_bytes: int = 20_000_000) -> list[str]:
    """Files under `folder` that contain something looking like a token or an absolute local path.

    Scans every file (parquet and safetensors included, as bytes) up to `max_bytes` each; returns
    "path: what" lines, empty when clean.
    """
    folder = Path(folder)
    home = os.path.expanduser("~")
    needles = {os.fspath(folder.resolve()), home} | {p for p in (tempfile.gettempdir(),) if p}
    problems = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.stat().st_size > max_bytes:
            continue
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        rel = path.relative_to(folder).as_posix()
        if m := _TOKEN_RE.search(text):
            problems.append(f"{rel}: token-like string {m.group(0)[:6]}...")
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


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike) -> None:
    """Give a `mkstemp` file (0600) or `mkdtemp` folder (0700) the mode a plain open/mkdir would have.

    Artifacts are read by other users (a demo container under another uid), so they get
    0666/0777 minus the umask like every other file, not the temp-file defaults.
    """
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


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


def discover_configs(folder: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """{config: {split: [relative parquet paths]}} found under folder/data/."""
    folder = Path(folder)
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


def _shard_order(path: Path) -> tuple:
    m = _DATA_FILE_RE.match(path.name)
    return (m.group(1), int(m.group(2)), path.name) if m else ("", 0, path.name)


def _configs_metadata(folder: Path, previous: list[dict] | None) -> list[dict[str, Any]]:
    """The `configs:` YAML for the data on disk, keeping the order (and default flag) of `previous`."""
    found = discover_configs(folder)
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
    for line in done:
        logger.warning("%s: %s (left by an interrupted write)", folder.name, line)
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
) -> None:
    """Write `data/<config_name>/<split>-NNNNN-of-NNNNN-<hash>.parquet` and list them in README.md `configs:`.

    Only this config's old files are replaced; other configs, the rest of the YAML and the card
    body are kept. `datasets` cannot load a zero-row split, so empty splits are not written; a
    config whose splits are all empty is removed from the folder (its old files included). What
    an interrupted earlier write left behind (hidden swap folders) is cleaned up first.
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
    target = folder / DATA_DIR / config_name
    pid = os.getpid()
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{pid}-{config_name}.", dir=folder))
    honour_umask(staging)
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
        if not any(staging.iterdir()):
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            old = folder / f"{_OLD_PREFIX}{pid}-{config_name}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
    finally:
        if not bars_were_off:
            hf_tqdm.enable_progress_bars()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    meta, body = _read_card(folder)
    meta["configs"] = _configs_metadata(folder, meta.get("configs"))
    if not body.strip():
        body = f"\n# {folder.name}\n\nLeMa artifact written by lema_hub; the full card is rendered by `write_dataset_card`.\n"
    _write_card(folder, meta, body)


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
# Push
# --------------------------------------------------------------------------------------------------

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _is_transient(exc: BaseException) -> bool:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError):
        status = getattr(exc.response, "status_code", None)
        return status in _TRANSIENT_STATUS
    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))


def _with_retries(fn, what: str, attempts: int = 5, base_delay: float = 2.0):
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not _is_transient(exc):
                raise
            delay = base_delay * 2 ** (attempt - 1)
            logger.warning("%s failed (%s); retry %d/%d in %.0fs", what, exc, attempt, attempts - 1, delay)
            time.sleep(delay)


def _default_commit_message(folder: Path) -> str:
    meta, _ = _read_card(folder)
    _, summaries = read_run_record(folder)
    recipes = ", ".join(summaries) or "lema-hub push"
    configs = [c.get("config_name") for c in meta.get("configs") or [] if isinstance(c, dict)]
    what = f"configs {', '.join(configs)}" if configs else folder.name
    return f"{recipes}: upload {what}"


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    repo_type: str = "dataset",
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    delete_patterns: list[str] | None = None,
) -> str:
    """Create the repo if needed and upload the whole folder as ONE commit; return the commit URL.

    `delete_patterns` removes matching remote files in the same commit (e.g. what an earlier,
    in-training push left that the final folder no longer holds).

    With `revision`, the branch is created (from main) when missing. Transient Hub errors (429,
    5xx, dropped connections) are retried with exponential backoff; the upload itself is one commit,
    so a retry never leaves a half-pushed artifact.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"push_folder: {folder} is not a folder.")
    if repo_type not in ("dataset", "model", "space"):
        raise ValueError(f"push_folder: repo_type must be dataset, model or space, got {repo_type!r}.")
    if not re.match(r"^[\w.\-]+/[\w.\-]+$", repo_id or ""):
        raise ValueError(f"push_folder: repo_id must look like 'namespace/name', got {repo_id!r}.")
    leaks = find_leaks(folder)
    if any("token-like" in leak for leak in leaks):
        raise ValueError("Refusing to push a folder holding credentials: " + "; ".join(leaks[:5]))
    for leak in leaks:
        logger.warning("pushing a file that mentions a local path: %s", leak)
    api = HfApi(token=token)
    _with_retries(
        lambda: api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True),
        f"create_repo {repo_id}",
    )
    if revision:
        _with_retries(
            lambda: api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True),
            f"create_branch {revision}",
        )
    message = commit_message or _default_commit_message(folder)
    # Hidden swap folders of an interrupted write (also those named the way older versions did).
    ignore = PUSH_IGNORE + [f"{path.name}/**" for path, _, _ in leftover_work_dirs(folder, live_too=True)]
    # A rewritten config has new (content-named) files: the remote's old ones of the configs this
    # folder holds go in the same commit, so the repo holds exactly the rows the card lists.
    deletes = list(delete_patterns or []) + [f"{DATA_DIR}/{c}/*.parquet" for c in discover_configs(folder)]
    info = _with_retries(
        lambda: api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type=repo_type,
            revision=revision,
            commit_message=message,
            ignore_patterns=ignore,
            delete_patterns=deletes or None,
        ),
        f"upload_folder {repo_id}",
    )
    return info.commit_url


def maybe_push(folder: str | os.PathLike, hub: HubArgs, repo_type: str, recipe: str) -> str | None:
    """Push `folder` when `hub.push_to_hub` is set; returns the commit URL (None when not pushing)."""
    if not hub.push_to_hub:
        return None
    if not hub.hub_repo_id:
        raise ValueError(
            f"{recipe}: push_to_hub is set but hub_repo_id is missing (e.g. '<ns>/lema-corrections')."
        )
    meta, _ = _read_card(Path(folder))
    configs = [c.get("config_name") for c in meta.get("configs") or [] if isinstance(c, dict)]
    message = f"lema-hub {recipe}: " + (
        f"configs {', '.join(configs)}" if configs else f"upload {Path(folder).name}"
    )
    url = push_folder(
        folder,
        hub.hub_repo_id,
        repo_type=repo_type,
        private=hub.hub_private,
        revision=hub.hub_revision,
        commit_message=message,
    )
    logger.info("pushed %s to %s", folder, url)
    return url


def push(cfg: PushConfig) -> str:
    """`lema-hub push FOLDER REPO_ID`: push any artifact folder; prints and returns the commit URL."""
    folder = Path(cfg.folder)
    if not folder.is_dir():
        raise SystemExit(f"lema-hub push: {folder} is not a folder.")
    if cfg.repo_type != "space" and not (folder / README).is_file():
        raise SystemExit(f"lema-hub push: {folder} has no README.md card; write the card before pushing.")
    url = push_folder(
        folder,
        cfg.repo_id,
        repo_type=cfg.repo_type,
        private=cfg.private,
        revision=cfg.revision,
        commit_message=cfg.commit_message,
    )
    print(url)
    return url


def load_artifact(folder_or_repo: str, config: str = "default", split: str = "train") -> datasets.Dataset:
    """Load one config/split of an artifact folder or Hub repo.

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
        return datasets.Dataset(_concat_parquet(path, found[name][split]))
    return datasets.load_dataset(folder_or_repo, None if config == "default" else config, split=split)


# --------------------------------------------------------------------------------------------------
# Cards: shared helpers
# --------------------------------------------------------------------------------------------------

KINDS = ("mistakes", "corrections", "cot", "mixture", "evolved", "eval_details", "corrector_bench")
_REPO_NAMES = {
    "mistakes": "lema-mistakes",
    "corrections": "lema-corrections",
    "cot": "lema-cot",
    "mixture": "lema-mixture",
    "evolved": "lema-evolved",
    "eval_details": "lema-eval-details",
    "corrector_bench": "lema-corrector-bench",
}
_PRETTY = {
    "mistakes": "LeMa mistakes: wrong chain-of-thought paths",
    "corrections": "LeMa corrections: mistake-correction pairs",
    "cot": "LeMa chain-of-thought training rows",
    "mixture": "LeMa training mixture (CoT + corrections)",
    "evolved": "LeMa correction-centric evolved problems",
    "eval_details": "LeMa evaluation details",
    "corrector_bench": "LeMa corrector benchmark: first-error location on human labels",
}
# Problem collections: Hub id of the source dataset and its license.
SOURCES = {
    "gsm8k": ("openai/gsm8k", "mit"),
    "math": ("EleutherAI/hendrycks_math", "mit"),
    "math500": ("HuggingFaceH4/MATH-500", "mit"),
    "sample": (None, "apache-2.0"),  # the bundled sample problems were written for this project
    "Qwen/ProcessBench": ("Qwen/ProcessBench", "apache-2.0"),  # step-labelled solutions (bench-corrector)
}


def _template_path(group: str, name: str) -> Path:
    """A card template: the repo checkout's `dataset_cards/`/`model_cards/`, or the wheel's copy."""
    here = Path(__file__).resolve().parent
    for base in (here.parent / group, here / "_templates" / group):
        if (base / name).is_file():
            return base / name
    raise FileNotFoundError(f"Card template {group}/{name} not found next to the lema_hub package.")


_INCLUDE_RE = re.compile(r"^\{# include (\S+) #\}[ \t]*$", re.M)


def _load_template(group: str, name: str) -> str:
    """A template's text with its `{# include _part.md #}` lines replaced by those files (one level)."""
    path = _template_path(group, name)
    text = path.read_text(encoding="utf-8")
    return _INCLUDE_RE.sub(
        lambda m: _template_path(group, m.group(1)).read_text(encoding="utf-8").rstrip("\n"), text
    )


def _size_category(n: int) -> str:
    for limit, label in [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ]:
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"


def _concat_parquet(folder: Path, files: list[str]):
    """One pyarrow.Table from a split's parquet shards (paths relative to `folder`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(folder / f) for f in files])


class _ParquetColumns:
    """A split's parquet shards for the card's statistics, read one column at a time.

    The card needs a few columns of every row (verdicts, ids, token counts); reading whole tables
    held every text column of every row in memory at once, so the card's peak memory grew with
    the dataset. `columns_read` counts the columns actually read.
    """

    def __init__(self, paths: list[Path]) -> None:
        import pyarrow.parquet as pq

        self.paths = paths
        files = [pq.ParquetFile(p) for p in paths]
        self.column_names = list(files[0].schema_arrow.names) if files else []
        self.num_rows = sum(f.metadata.num_rows for f in files)
        self.columns_read: list[str] = []

    def column(self, name: str):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.columns_read.append(name)
        return pa.concat_tables([pq.read_table(p, columns=[name]) for p in self.paths]).column(name)

    def slice(self, offset: int, length: int):
        """Rows [offset, offset + length) with every column (the card's example row)."""
        import pyarrow.parquet as pq

        first = pq.ParquetFile(self.paths[0])  # the example row is at the start: one row group suffices
        if offset + length <= first.metadata.row_group(0).num_rows:
            return first.read_row_group(0).slice(offset, length)
        return _concat_parquet(Path("/"), [str(p) for p in self.paths]).slice(offset, length)


def _read_tables(folder: Path) -> dict[str, dict[str, Any]]:
    """{config: {split: table}} for every parquet config in the folder (columns read on demand)."""
    return {
        config: {split: _ParquetColumns([folder / f for f in files]) for split, files in splits.items()}
        for config, splits in discover_configs(folder).items()
    }


def _column(table: Any, name: str) -> list[Any]:
    return table.column(name).to_pylist() if name in table.column_names else []


def _all_values(tables: dict[str, dict[str, Any]], name: str, configs: list[str] | None = None) -> list[Any]:
    vals: list[Any] = []
    for config, splits in tables.items():
        if configs is None or config in configs:
            for t in splits.values():
                vals += _column(t, name)
    return vals


def _counter_rows(values: list[Any], total: int | None = None) -> list[dict[str, Any]]:
    counts = Counter(v for v in values if v not in (None, ""))
    total = total or sum(counts.values()) or 1
    return [{"name": str(k), "count": c, "share": f"{100 * c / total:.1f}%"} for k, c in counts.most_common()]


def _fmt_num(x: float | int | None) -> str:
    if x is None:
        return "unknown"
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


def _is_local_model(name: str) -> bool:
    if name == REFERENCE_CORRECTOR:
        return True
    return (
        name.startswith(("embedded:", "tiny:"))
        or Path(name).expanduser().exists()
        or name.startswith(("/", "."))
    )


def _token_usage(
    tables: dict[str, dict[str, Any]],
    cols: TokenColumns,
    configs: list[str],
    prices: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    """Per model (`cols.model`): rows, prompt/completion tokens and estimated cost ("unknown" without a price)."""
    usage: dict[str, dict[str, Any]] = {}
    for config in configs:
        for t in tables.get(config, {}).values():
            models = _column(t, cols.model)
            pt, ct = _column(t, cols.prompt), _column(t, cols.completion)
            if not models or not pt or not ct:
                continue
            for m, p, c in zip(models, pt, ct):
                u = usage.setdefault(
                    str(m),
                    {
                        "model": str(m),
                        "rows": 0,
                        "prompt_tokens": 0,
                        "completion_tokens": 0,
                        "complete": True,
                    },
                )
                u["rows"] += 1
                if p is None or c is None:
                    u["complete"] = False
                else:
                    u["prompt_tokens"] += int(p)
                    u["completion_tokens"] += int(c)
    out = []
    for u in usage.values():
        price = prices.get(u["model"])
        if u["model"] == REFERENCE_CORRECTOR:
            cost = "$0 (rule-based, no model)"
        elif _is_local_model(u["model"]):
            cost = "$0 (local model, no API cost)"
        elif price and u["complete"]:
            dollars = (
                u["prompt_tokens"] * price.get("input", 0) + u["completion_tokens"] * price.get("output", 0)
            ) / 1e6
            cost = (
                f"${dollars:,.2f} (at ${price.get('input', 0)}/${price.get('output', 0)} per M in/out tokens)"
            )
        else:
            cost = "unknown"
        tokens = "complete" if u["complete"] else "partial (some rows report none)"
        if u["model"] == REFERENCE_CORRECTOR:
            tokens = "none (rule-based)"
        out.append({**u, "cost": cost, "tokens": tokens})
    return out


def _price_table(
    configs: dict[str, Any], prices: dict[str, dict[str, float]] | None
) -> dict[str, dict[str, float]]:
    """User prices ($ per million tokens, {"model": {"input": x, "output": y}}) from the call or a recipe config."""
    table: dict[str, dict[str, float]] = {}
    for cfg in configs.values():
        if isinstance(cfg, dict) and isinstance(cfg.get("price_table"), dict):
            table.update(cfg["price_table"])
    table.update(prices or {})
    return table


def _short(text: Any, limit: int = 1200) -> str:
    text = "" if text is None else str(text)
    text = text.replace("```", "'''")
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def _render_messages(value: Any) -> str:
    if isinstance(value, list):
        return "\n\n".join(
            f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in value if isinstance(m, dict)
        )
    return "" if value is None else str(value)


def _numbered(steps: Any) -> str:
    if not steps:
        return "(none)"
    return "\n".join(f"Step {i}: {s}" for i, s in enumerate(steps, 1))


_SCALAR_FIELDS = (
    "problem_id",
    "source",
    "level",
    "subject",
    "generator",
    "sample_index",
    "verdict",
    "predicted_answer",
    "gold_answer",
    "finish_reason",
    "corrector",
    "corrector_prompt",
    "incorrect_step",
    "reference_step",
    "labelled_step",
    "prediction",
    "predicted_step",
    "corrected_answer",
    "accepted",
    "reject_reason",
    "kind",
    "model",
    "correct",
)
_TEXT_FIELDS = (
    ("question", "Question", None),
    ("steps", "Sampled path (steps)", _numbered),
    ("explanation", "Explanation of the incorrect step", None),
    ("corrected_steps", "Corrected solution", _numbered),
    ("prompt", "Prompt", _render_messages),
    ("completion", "Completion", _render_messages),
)


def _sample_record_md(config: str, row: dict[str, Any]) -> str:
    """One record rendered for humans: a field table and fenced text blocks."""
    lines = [f"#### `{config}`", "", "| field | value |", "|---|---|"]
    for key in _SCALAR_FIELDS:
        if key in row and row[key] is not None:
            val = str(row[key]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{key}` | {_short(val, 200)} |")
    for key, title, fmt in _TEXT_FIELDS:
        if key == "completion" and row.get("steps"):
            continue  # a sampled path is shown as its steps already
        if key in row and row[key] not in (None, "", []):
            text = fmt(row[key]) if fmt else str(row[key])
            lines += ["", f"**{title}**", "", "```text", _short(text), "```"]
    return "\n".join(lines)


def _first_row(tables: dict[str, dict[str, Any]], config: str) -> dict[str, Any] | None:
    for split in ("train", "test", *tables.get(config, {})):
        t = tables.get(config, {}).get(split)
        if t is not None and t.num_rows:
            return t.slice(0, 1).to_pylist()[0]
    return None


def _plot(folder: Path, name: str, draw) -> str | None:
    """Draw one figure with `draw(ax)` and save it as images/<name>.png; returns the relative path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    try:
        if draw(ax) is False:
            return None
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        rel = f"{IMAGES_DIR}/{name}.png"
        fig.savefig(folder / rel, format="png", metadata={"Software": None})
        return rel
    finally:
        plt.close(fig)


def _bar(ax, labels: list[str], values: list[float], title: str, ylabel: str, fmt: str = "{:.0f}") -> None:
    bars = ax.bar(range(len(labels)), values, color="#4C72B0")
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=20 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    for b, v in zip(bars, values):
        ax.annotate(
            fmt.format(v),
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )


def _rows_per_config_plot(folder: Path, counts: list[dict[str, Any]]) -> str | None:
    labels = [f"{c['config']}/{c['split']}" for c in counts]
    values = [c["rows"] for c in counts]
    if not labels:
        return None
    return _plot(
        folder, "rows_per_config", lambda ax: _bar(ax, labels, values, "Rows per config and split", "rows")
    )


def _repo_id_for(kind: str, configs: dict[str, Any], repo_id: str | None) -> tuple[str, bool]:
    """(repo id for snippets, whether it is real) — the recipe's hub_repo_id when one was set."""
    if repo_id:
        return repo_id, True
    for cfg in configs.values():
        if isinstance(cfg, dict) and isinstance(cfg.get("hub_repo_id"), str) and cfg["hub_repo_id"]:
            return cfg["hub_repo_id"], True
    return f"{DEFAULT_NAMESPACE}/{_REPO_NAMES[kind]}", False


_LICENSE_NAMES = {"mit": "MIT", "apache-2.0": "Apache-2.0", "other": "Other (see below)"}


def _license_text(license_: str | list[str]) -> str:
    names = [license_] if isinstance(license_, str) else license_
    return " / ".join(_LICENSE_NAMES.get(n, n) for n in names)


def _sources_info(sources: list[str]) -> tuple[list[str], list[str] | str]:
    """(source_datasets, license) from the problem sources found in the data."""
    hub_ids, licenses = [], []
    for s in sorted(set(sources)):
        if s in SOURCES:
            hub_id, lic = SOURCES[s]
            if hub_id:
                hub_ids.append(hub_id)
            else:
                hub_ids.append("original")
            licenses.append(lic)
        elif re.match(r"^[\w.\-]+/[\w.\-]+$", s) and not Path(s).exists():
            hub_ids.append(s)
        else:
            hub_ids.append("original")
    hub_ids = sorted(set(hub_ids))
    licenses = sorted(set(licenses)) or ["other"]
    return hub_ids, licenses[0] if len(licenses) == 1 else licenses


# --------------------------------------------------------------------------------------------------
# Dataset cards
# --------------------------------------------------------------------------------------------------


def _stats_mistakes(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    samples = [c for c in tables if c.endswith("-samples")]
    verdicts = _all_values(tables, "verdict", samples)
    ctx["verdicts"] = _counter_rows(verdicts)
    per_gen: dict[str, Counter] = {}
    for cfg in samples:
        for t in tables[cfg].values():
            for g, v in zip(_column(t, "generator"), _column(t, "verdict")):
                per_gen.setdefault(str(g), Counter())[v] += 1
    ctx["generator_accuracy"] = [
        {
            "generator": g,
            "paths": sum(c.values()),
            "correct": c["correct"],
            "wrong": c["wrong"],
            "ungradeable": c["ungradeable"],
            "accuracy": f"{100 * c['correct'] / max(1, sum(c.values())):.1f}%",
        }
        for g, c in sorted(per_gen.items())
    ]
    ids = _all_values(tables, "problem_id", samples)
    wrong_ids = _all_values(tables, "problem_id", main)
    ctx["num_problems"] = len(set(ids)) if ids else None
    ctx["problems_with_mistake"] = len(set(wrong_ids))
    steps = [len(s) for s in _all_values(tables, "steps", main) if s is not None]
    ctx["mean_steps"] = f"{sum(steps) / len(steps):.1f}" if steps else None
    if per_gen:
        gens = sorted(per_gen)

        def draw(ax):
            bottom = [0] * len(gens)
            for verdict, color in [("correct", "#55A868"), ("wrong", "#C44E52"), ("ungradeable", "#8C8C8C")]:
                vals = [per_gen[g][verdict] for g in gens]
                ax.bar(range(len(gens)), vals, bottom=bottom, label=verdict, color=color)
                bottom = [b + v for b, v in zip(bottom, vals)]
            ax.set_xticks(range(len(gens)), [g.split("/")[-1][:28] for g in gens])
            ax.set_title("Sampled paths per generator by verdict")
            ax.set_ylabel("paths")
            ax.legend(frameon=False)

        ctx["images"].append(
            ("Verdicts of the sampled paths, per generator", _plot(folder, "verdicts_by_generator", draw))
        )
    if steps:

        def draw_steps(ax):
            ax.hist(steps, bins=range(1, max(steps) + 2), color="#C44E52", align="left", rwidth=0.85)
            ax.set_title("Number of steps in the wrong paths")
            ax.set_xlabel("steps")
            ax.set_ylabel("paths")

        ctx["images"].append(("Length of the wrong paths", _plot(folder, "wrong_path_steps", draw_steps)))


def _stats_corrections(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    rejected = [c for c in tables if c.endswith("-rejected")]
    n_acc = sum(t.num_rows for c in main for t in tables[c].values())
    n_rej = sum(t.num_rows for c in rejected for t in tables[c].values())
    ctx["accepted"], ctx["rejected"] = n_acc, n_rej
    ctx["acceptance_rate"] = f"{100 * n_acc / (n_acc + n_rej):.1f}%" if n_acc + n_rej else "unknown"
    ctx["reject_reasons"] = _counter_rows(_all_values(tables, "reject_reason", rejected))
    correctors = sorted({str(c) for c in _all_values(tables, "corrector") if c})
    ctx["reference_corrector"] = REFERENCE_CORRECTOR in correctors
    ctx["corrector_token_columns"] = [CORRECTOR_TOKENS.prompt, CORRECTOR_TOKENS.completion]
    # Task configs: a main config is not written when nothing was accepted, so read `-rejected` too.
    tasks = sorted({*main, *(c.removesuffix("-rejected") for c in rejected)})
    ctx["tasks"] = tasks
    ctx["correctors"] = [
        {
            "name": c,
            "label": "rule-based reference corrector (no LLM; recomputes the gold solution's steps)"
            if c == REFERENCE_CORRECTOR
            else "LLM corrector",
        }
        for c in correctors
    ]
    # Acceptance per corrector (and per task config).
    per: list[dict[str, Any]] = []
    for cfg in tasks:
        task = cfg
        rej_cfg = f"{cfg}-rejected"
        acc_c = Counter(_all_values(tables, "corrector", [cfg]))
        rej_c = Counter(_all_values(tables, "corrector", [rej_cfg]))
        for corr in sorted(set(acc_c) | set(rej_c), key=str):
            a, r = acc_c[corr], rej_c[corr]
            per.append(
                {
                    "task": task,
                    "corrector": corr,
                    "accepted": a,
                    "rejected": r,
                    "rate": f"{100 * a / (a + r):.1f}%" if a + r else "n/a",
                }
            )
    ctx["acceptance_table"] = per
    # Where the corrector located the first incorrect step (relative position in the wrong path).
    positions, agree, both = [], 0, 0
    for cfg in main:
        for t in tables[cfg].values():
            for k, steps, ref in zip(
                _column(t, "incorrect_step"),
                _column(t, "steps"),
                _column(t, "reference_step") or [None] * t.num_rows,
            ):
                if k is not None and steps:
                    positions.append(min(1.0, max(0.0, (k - 1) / max(1, len(steps)))))
                if k is not None and ref is not None:
                    both += 1
                    agree += int(k == ref)
    ctx["step_agreement"] = f"{agree}/{both} ({100 * agree / both:.1f}%)" if both else None
    if positions:

        def draw_pos(ax):
            ax.hist(positions, bins=[i / 10 for i in range(11)], color="#4C72B0", rwidth=0.9)
            ax.set_title("Position of the first incorrect step (accepted corrections)")
            ax.set_xlabel("relative position in the wrong path (0 = first step, 1 = last)")
            ax.set_ylabel("corrections")

        ctx["images"].append(
            (
                "Where the first incorrect step sits in a wrong path",
                _plot(folder, "incorrect_step_position", draw_pos),
            )
        )
    # Acceptance by level (MATH) when levels exist, else by task config.
    by: dict[str, list[int]] = {}
    for cfgs, accepted in [(main, 1), (rejected, 0)]:
        for lvl in _all_values(tables, "level", cfgs):
            if lvl is not None:
                by.setdefault(f"level {lvl}", [0, 0])[1 - accepted] += 1
    label = "level"
    if not by:
        label = "task"
        for cfg in tasks:
            by[cfg] = [
                sum(t.num_rows for t in tables.get(cfg, {}).values()),
                sum(t.num_rows for t in tables.get(f"{cfg}-rejected", {}).values()),
            ]
    keys = sorted(by)
    rates = [100 * by[k][0] / max(1, sum(by[k])) for k in keys]
    if keys:
        ctx["images"].append(
            (
                f"Acceptance rate by {label}",
                _plot(
                    folder,
                    f"acceptance_by_{label}",
                    lambda ax: _bar(ax, keys, rates, f"Acceptance rate by {label}", "% accepted", "{:.0f}%"),
                ),
            )
        )


def _stats_training_rows(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    table = []
    for cfg, splits in tables.items():
        kinds = Counter(_all_values(tables, "kind", [cfg]))
        styles = {type(v).__name__ for v in _all_values(tables, "prompt", [cfg])[:1]}
        table.append(
            {
                "config": cfg,
                "rows": sum(t.num_rows for t in splits.values()),
                "cot": kinds.get("cot", 0),
                "correction": kinds.get("correction", 0),
                "format": "conversational (messages)" if "list" in styles else "plain text",
            }
        )
    ctx["view_table"] = table
    if table:
        labels = [r["config"] for r in table]

        def draw(ax):
            cot = [r["cot"] for r in table]
            corr = [r["correction"] for r in table]
            ax.bar(range(len(labels)), cot, label="cot", color="#4C72B0")
            ax.bar(range(len(labels)), corr, bottom=cot, label="correction", color="#DD8452")
            ax.set_xticks(
                range(len(labels)),
                labels,
                rotation=20 if len(labels) > 3 else 0,
                ha="right" if len(labels) > 3 else "center",
            )
            ax.set_title("Training rows per config by kind")
            ax.set_ylabel("rows")
            ax.legend(frameon=False)

        ctx["images"].append(
            ("Training rows per config, CoT vs correction", _plot(folder, "rows_by_kind", draw))
        )


def _stats_eval(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    acc = []
    for cfg in tables:
        vals = _all_values(tables, "correct", [cfg])
        if not vals:
            vals = [v == "correct" for v in _all_values(tables, "verdict", [cfg])]
        if vals:
            acc.append(
                {"config": cfg, "n": len(vals), "accuracy": 100 * sum(bool(v) for v in vals) / len(vals)}
            )
    ctx["eval_table"] = [dict(a, accuracy=f"{a['accuracy']:.1f}%") for a in acc]
    if acc:
        labels = [a["config"] for a in acc]
        values = [a["accuracy"] for a in acc]
        ctx["images"].append(
            (
                "Accuracy (pass@1) per model and benchmark",
                _plot(
                    folder,
                    "accuracy",
                    lambda ax: _bar(ax, labels, values, "Accuracy per config", "% correct", "{:.1f}%"),
                ),
            )
        )


def _stats_corrector_bench(folder: Path, tables: dict, main: list[str], ctx: dict) -> None:
    from lema_hub.corrector_bench import card_stats

    card_stats(folder, tables, main, ctx)


_KIND_STATS = {
    "mistakes": _stats_mistakes,
    "corrections": _stats_corrections,
    "cot": _stats_training_rows,
    "mixture": _stats_training_rows,
    "evolved": lambda folder, tables, main, ctx: None,
    "eval_details": _stats_eval,
    "corrector_bench": _stats_corrector_bench,
}


def _prov_values(tables: dict, name: str) -> list[str]:
    return sorted(
        {
            json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v)
            for v in _all_values(tables, name)
            if v not in (None, "")
        }
    )


def write_dataset_card(
    folder: str | os.PathLike,
    kind: str,
    repo_id: str | None = None,
    prices: dict[str, dict[str, float]] | None = None,
) -> None:
    """Render dataset_cards/<kind>.md into folder/README.md from the folder's own data.

    Every number (rows per config/split, acceptance rate, reject reasons, token usage...) is computed
    from the parquet files, `run_summary.json` and `lema_hub_config.yaml`; plots go to images/.
    `prices` ($ per million tokens per model, {"model": {"input": x, "output": y}}) turns token
    usage into an estimated cost; without a price a remote model's cost is "unknown".
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    if kind not in KINDS:
        raise ValueError(f"Unknown dataset card kind {kind!r}; expected one of {', '.join(KINDS)}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"write_dataset_card: {folder} is not a folder.")
    meta, _ = _read_card(folder)
    configs_meta = _configs_metadata(folder, meta.get("configs"))
    tables = _read_tables(folder)
    if not tables:
        raise ValueError(f"write_dataset_card: {folder} has no data/<config>/*.parquet to describe.")
    run_configs, summaries = read_run_record(folder)
    order = [c["config_name"] for c in configs_meta]
    main = [c for c in order if _is_main_config(c)]
    counts = [
        {"config": c, "split": s, "rows": t.num_rows} for c in order for s, t in sorted(tables[c].items())
    ]
    total = sum(c["rows"] for c in counts)
    source_ids, license_ = _sources_info([str(s) for s in _all_values(tables, "source") if s])
    repo, repo_known = _repo_id_for(kind, run_configs, repo_id)
    prices_all = _price_table(run_configs, prices)
    if (folder / IMAGES_DIR).is_dir():  # plots are re-drawn from the current data
        for old in (folder / IMAGES_DIR).glob("*.png"):
            old.unlink()
    ctx: dict[str, Any] = {"images": [], "reference_corrector_name": REFERENCE_CORRECTOR}
    _KIND_STATS[kind](folder, tables, main, ctx)
    if not ctx["images"]:
        ctx["images"].append(("Rows per config and split", _rows_per_config_plot(folder, counts)))
    ctx["images"] = [{"caption": c, "path": p} for c, p in ctx["images"] if p]
    usage = _token_usage(
        tables, GENERATOR_TOKENS, [c for c in order if c.endswith("-samples")] or main, prices_all
    )
    if kind in ("corrections", "corrector_bench"):  # the corrector's own columns, not the generator's
        usage = _token_usage(tables, CORRECTOR_TOKENS, order, prices_all)
    samples_md = []
    for cfg in order:
        row = _first_row(tables, cfg)
        if row is not None:
            samples_md.append(_sample_record_md(cfg, row))
    subjects = {str(s) for s in _all_values(tables, "subject") if s}
    card_data = DatasetCardData(
        language=["en"],
        license=license_,
        pretty_name=_PRETTY[kind],
        size_categories=[_size_category(total)],
        source_datasets=source_ids or None,
        task_categories=["text-generation", "question-answering"],
        tags=["math", "reasoning", "lema", "learning-from-mistakes", "synthetic", "chain-of-thought"],
        configs=configs_meta,
    )
    extra = {k: v for k, v in meta.items() if k not in card_data.to_dict() and k != "configs"}
    for k, v in extra.items():  # metadata someone else added (e.g. on the Hub) is kept
        setattr(card_data, k, v)
    from lema_hub import PAPER_CITATION, PAPER_URL

    card = DatasetCard.from_template(
        card_data,
        template_str=_load_template("dataset_cards", f"{kind}.md"),
        kind=kind,
        pretty_name=_PRETTY[kind],
        repo_id=repo,
        repo_id_known=repo_known,
        folder_name=folder.name,
        configs=order,
        main_configs=main,
        first_config=main[0] if main else order[0],
        counts=counts,
        total_rows=total,
        sources=sorted({str(s) for s in _all_values(tables, "source") if s}),
        source_datasets_list=source_ids,
        license_text=_license_text(license_),
        generators=_prov_values(tables, "generator"),
        correctors_all=_prov_values(tables, "corrector"),
        corrector_prompts=_prov_values(tables, "corrector_prompt"),
        sampling=_prov_values(tables, "sampling"),
        subjects=sorted(subjects),
        usage=usage,
        samples_md=samples_md,
        recipes=list(summaries),
        summaries={k: v for k, v in summaries.items() if isinstance(v, dict)},
        paper_url=PAPER_URL,
        citation=PAPER_CITATION,
        **ctx,
    )
    text = _scrub_string(str(card), folder)
    _atomic_write_text(folder / README, text if text.endswith("\n") else text + "\n")


# --------------------------------------------------------------------------------------------------
# Model cards, eval results, Space cards
# --------------------------------------------------------------------------------------------------

_EVAL_START, _EVAL_END = "<!-- lema-hub:eval-results:start -->", "<!-- lema-hub:eval-results:end -->"
_TASK_DATASETS = {
    "gsm8k": "openai/gsm8k",
    "math": "EleutherAI/hendrycks_math",
    "math500": "HuggingFaceH4/MATH-500",
}


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-") or "results"


def _read_eval_entries(folder: Path) -> list[dict[str, Any]]:
    """Entries of every `.eval_results/*.yaml`, as written by `eval_result_entries_to_yaml`."""
    out = []
    for path in sorted((folder / EVAL_RESULTS_DIR).glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or []
        out += [e for e in data if isinstance(e, dict)]
    return out


def _eval_section(folder: Path, tables: dict[str, str] | None = None) -> str:
    """The card's results section: a table over all `.eval_results` entries plus detail tables."""
    entries = _read_eval_entries(folder)
    if not entries:
        return f"{_EVAL_START}\nNo evaluation results yet (run `lema-hub evaluate`).\n{_EVAL_END}"
    lines = [_EVAL_START, "| benchmark | task | accuracy (%) | date | notes |", "|---|---|---:|---|---|"]
    for e in entries:
        ds = e.get("dataset", {})
        notes = str(e.get("notes") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| `{ds.get('id')}` | {ds.get('task_id')} | {e.get('value')} | {e.get('date') or ''} | {notes} |"
        )
    for task, md in sorted((tables or {}).items()):
        lines += [
            "",
            f"<!-- lema-hub:eval-table:{task} -->",
            md.strip(),
            f"<!-- /lema-hub:eval-table:{task} -->",
        ]
    lines.append(_EVAL_END)
    return "\n".join(lines)


def _existing_eval_tables(text: str) -> dict[str, str]:
    return dict(
        re.findall(r"<!-- lema-hub:eval-table:(\S+) -->\n(.*?)\n<!-- /lema-hub:eval-table:\1 -->", text, re.S)
    )


def write_eval_results(
    folder: str | os.PathLike, entries: list[dict], table_markdown: str | None = None
) -> None:
    """Write `.eval_results/<task>.yaml` (huggingface_hub `EvalResultEntry` format) and the card's results table.

    Entries with the same task replace that task's file; other tasks' files are kept. `ci_low`,
    `ci_high` and `n` (no fields of `EvalResultEntry`) are folded into its `notes`.
    """
    from huggingface_hub import EvalResultEntry, eval_result_entries_to_yaml

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"write_eval_results: {folder} is not a folder.")
    by_task: dict[str, list[EvalResultEntry]] = {}
    for e in entries:
        missing = [k for k in ("dataset_id", "task_id", "value") if e.get(k) in (None, "")]
        if missing:
            raise ValueError(f"write_eval_results: entry {e!r} lacks {', '.join(missing)}.")
        notes = [str(e["notes"])] if e.get("notes") else []
        if e.get("ci_low") is not None and e.get("ci_high") is not None:
            notes.append(f"95% CI [{e['ci_low']}, {e['ci_high']}]")
        if e.get("n") is not None:
            notes.append(f"n={e['n']}")
        by_task.setdefault(str(e["task_id"]), []).append(
            EvalResultEntry(
                dataset_id=str(e["dataset_id"]),
                task_id=str(e["task_id"]),
                value=float(e["value"]),
                date=str(e["date"]) if e.get("date") else None,
                notes="; ".join(notes) or None,
            )
        )
    (folder / EVAL_RESULTS_DIR).mkdir(exist_ok=True)
    for task, task_entries in by_task.items():
        text = _dump_yaml(eval_result_entries_to_yaml(task_entries))
        _atomic_write_text(folder / EVAL_RESULTS_DIR / f"{_safe_name(task)}.yaml", text)
    readme = folder / README
    existing = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    tables = _existing_eval_tables(existing)
    if table_markdown:
        for task in by_task:
            tables[_safe_name(task)] = table_markdown
    section = _eval_section(folder, tables)
    if _EVAL_START in existing and _EVAL_END in existing:
        a, b = existing.index(_EVAL_START), existing.index(_EVAL_END) + len(_EVAL_END)
        _atomic_write_text(readme, existing[:a] + section + existing[b:])
    elif existing:
        _atomic_write_text(readme, existing.rstrip("\n") + "\n\n## Evaluation\n\n" + section + "\n")


def _model_license(info: dict[str, Any], folder: Path) -> str:
    if info.get("license"):
        return str(info["license"])
    from lema_hub.models import EMBEDDED_MODELS, TINY_MODELS

    name = str(info.get("base_model_name") or "")
    for key, spec in EMBEDDED_MODELS.items():
        tiny_of = {f"tiny:{t}" for t, (emb, _) in TINY_MODELS.items() if emb == key}
        if info.get("base_model") == spec.hub_id or name == f"embedded:{key}" or name in tiny_of:
            return spec.license
    return "other"


def _model_repo_id(info: dict[str, Any]) -> str:
    for name in (info.get("hub_model_id"), info.get("model_name")):
        if name and re.match(r"^[\w.\-]+/[\w.\-]+$", str(name)):
            return str(name)
    return f"{DEFAULT_NAMESPACE}/{info['model_name']}"


def write_model_card(folder: str | os.PathLike, info: dict) -> None:
    """Render model_cards/model_card.md into folder/README.md with ModelCard.from_template.

    `base_model` is the Hub id (even when training started from an embedded or local copy); the
    results table is rebuilt from `.eval_results/*.yaml` and earlier detail tables are kept.
    """
    from huggingface_hub import ModelCard, ModelCardData

    if not info.get("model_name"):
        raise ValueError("write_model_card: info['model_name'] is required.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    info = sanitize(dict(info), folder)
    adapter = bool(info.get("adapter"))
    base = info.get("base_model")
    task = info.get("task")
    datasets_ = [d for d in info.get("datasets") or [] if d]
    hub_datasets = [d for d in datasets_ if re.match(r"^[\w.\-]+/[\w.\-]+$", str(d))]
    if task in _TASK_DATASETS and _TASK_DATASETS[task] not in hub_datasets:
        hub_datasets.append(_TASK_DATASETS[task])
    tags = ["lema", "learning-from-mistakes", "math", "reasoning", "trl", "sft"]
    if adapter:
        tags += ["peft", "lora"]
    existing = (folder / README).read_text(encoding="utf-8") if (folder / README).is_file() else ""
    card_data = ModelCardData(
        model_name=info["model_name"],
        base_model=base or None,
        datasets=hub_datasets or None,
        license=_model_license(info, folder),
        language=["en"],
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=tags,
    )
    peft = info.get("peft") or None
    from lema_hub import PAPER_CITATION, PAPER_URL

    card = ModelCard.from_template(
        card_data,
        template_str=_load_template("model_cards", "model_card.md"),
        info=info,
        base_model_hub=base,
        base_model_name=info.get("base_model_name") or base,
        datasets_list=datasets_,
        adapter=adapter,
        peft=peft,
        training=info.get("training") or {},
        metrics={k: v for k, v in (info.get("metrics") or {}).items() if v is not None},
        repo_id=_model_repo_id(info),
        eval_section=_eval_section(folder, _existing_eval_tables(existing)),
        paper_url=PAPER_URL,
        citation=PAPER_CITATION,
    )
    text = _scrub_string(str(card), folder)
    _atomic_write_text(folder / README, text if text.endswith("\n") else text + "\n")


def write_space_card(folder: str | os.PathLike, info: dict) -> None:
    """Write a Space README.md (SpaceCardData: sdk gradio, sdk_version, app_file, models, datasets).

    info keys: title, app_file (default app.py), models, datasets, license, emoji, short_description,
    sdk_version (default: the installed gradio's), body (extra Markdown).
    """
    from huggingface_hub import SpaceCard, SpaceCardData

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sdk_version = info.get("sdk_version")
    if not sdk_version:
        try:
            import gradio

            sdk_version = gradio.__version__
        except ImportError:
            sdk_version = None
    app_file = info.get("app_file") or "app.py"
    card_data = SpaceCardData(
        title=info.get("title") or "LeMa: learning from mistakes",
        sdk="gradio",
        sdk_version=sdk_version,
        app_file=app_file,
        license=info.get("license") or "apache-2.0",
        models=[m for m in info.get("models") or [] if m] or None,
        datasets=[d for d in info.get("datasets") or [] if d] or None,
        tags=["lema", "math", "reasoning"],
        emoji=info.get("emoji") or "🧮",
        colorFrom=info.get("colorFrom") or "indigo",
        colorTo=info.get("colorTo") or "green",
        short_description=info.get("short_description") or "Solve, correct and browse LeMa mistakes",
        pinned=False,
    )
    from lema_hub import PAPER_CITATION, PAPER_URL

    card = SpaceCard.from_template(
        card_data,
        template_str=_load_template("model_cards", "space_card.md"),
        info=sanitize(dict(info), folder),
        paper_url=PAPER_URL,
        citation=PAPER_CITATION,
    )
    text = _scrub_string(str(card), folder)
    _atomic_write_text(folder / README, text if text.endswith("\n") else text + "\n")
