"""Append-only JSONL request cache: a killed run resumes without repeating finished requests.

Each finished sample is one line `{"key": ..., "result": {...}}`, flushed to the OS as soon as it
is known (the async engine flushes once per event-loop iteration for all the results that
finished in it), so it survives SIGKILL. A line torn by a kill mid-write is detected (no trailing newline
or invalid JSON) and cut off when the cache is reopened. Failures are never cached: a rerun retries
them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


def request_key(
    model: str,
    prompt: str | list[dict],
    sampling: dict[str, Any],
    sample_index: int,
    extra: dict[str, Any] | None = None,
) -> str:
    """Stable hash of everything that determines one sample's output."""
    payload = {
        "v": CACHE_VERSION,
        "model": model,
        "prompt": prompt,
        "sampling": sampling,
        "sample_index": sample_index,
        "extra": extra or {},
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RequestCache:
    """Key -> result dict, backed by an append-only JSONL file (or in memory when `path` is None)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._data: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._fh = None
        self.dropped_lines = 0
        self.flushes = 0  # write calls that reached the OS (counted for tests)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._fh = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            # The process died mid-line: cut the torn tail so the next append starts on a clean line.
            logger.warning("Dropping a torn last line (%d bytes) from %s.", len(raw) - end, self.path)
            self.dropped_lines += 1
            with self.path.open("r+b") as fh:
                fh.truncate(end)
        for lineno, line in enumerate(raw[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self._data[rec["key"]] = rec["result"]
            except (ValueError, KeyError, TypeError):
                self.dropped_lines += 1
                logger.warning("Skipping unreadable line %d of %s.", lineno, self.path)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str) -> dict[str, Any] | None:
        return self._data.get(key)

    def put(self, key: str, result: dict[str, Any], flush: bool = True) -> None:
        """Record one result; `flush=False` leaves the line buffered until the next `flush()`."""
        line = json.dumps({"key": key, "result": result}, ensure_ascii=False) + "\n"
        with self._lock:
            self._data[key] = result
            if self._fh is not None:
                self._fh.write(line)
                if flush:
                    self._fh.flush()  # in the kernel now: survives SIGKILL of this process
                    self.flushes += 1

    def flush(self) -> None:
        """Hand every buffered line to the OS (one write for all of them)."""
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
                self.flushes += 1

    def close(self) -> None:
        """Close the file and drop the in-memory copy (a stage keeps its results, not the cache's)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            if self.path is not None:
                self._data = {}

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
