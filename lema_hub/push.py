"""Push an artifact folder to the Hub in one commit (retrying transient errors); `lema-hub push`."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from lema_hub.artifacts import (
    _OLD_PREFIX,
    _STAGING_PREFIX,
    HubArgs,
    _read_card,
    discover_configs,
    find_leaks,
    leftover_work_dirs,
    read_run_record,
    uncommitted_files,
)
from lema_hub.errors import InvalidInputError
from lema_hub.schema import DATA_DIR, README

logger = logging.getLogger(__name__)

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
        raise InvalidInputError(f"push_folder: repo_type must be dataset, model or space, got {repo_type!r}.")
    if not re.match(r"^[\w.\-]+/[\w.\-]+$", repo_id or ""):
        raise InvalidInputError(f"push_folder: repo_id must look like 'namespace/name', got {repo_id!r}.")
    leaks = find_leaks(folder)
    if any("token-like" in leak for leak in leaks):
        raise InvalidInputError("Refusing to push a folder holding credentials: " + "; ".join(leaks[:5]))
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
    # Files of a write killed before (or cleaning up after) its README.md commit: not the dataset's.
    for path in uncommitted_files(folder):
        rel = path.relative_to(folder).as_posix()
        ignore.append(f"{rel}/**" if path.is_dir() else rel)
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
        raise InvalidInputError(
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
