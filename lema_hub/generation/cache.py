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


def digest64(text: str) -> int:
    """A 64-bit digest of a text, never 0 (a `DigestIndex` key)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") or 1


_slot = digest64  # a cache key's digest: the index holds it, not the 64-character key


def read_line(fd: int, at: int, chunk: int = 8192) -> bytes:
    """The line starting at byte `at` of a file (JSON lines: the first newline ends it)."""
    parts = []
    while True:
        part = os.pread(fd, chunk, at)
        end = part.find(b"\n")
        if end >= 0 or not part:
            parts.append(part if end < 0 else part[: end + 1])
            return b"".join(parts)
        parts.append(part)
        at += len(part)
        chunk *= 2


class DigestIndex:
    """A map of nonzero 64-bit digests to 64-bit values in two numpy arrays (open addressing, load
    at most 1/2): 16-32 bytes a key, where a dict of Python ints takes ~110, and no Python object
    per key to pin the allocator's memory as a run goes on."""

    def __init__(self, capacity: int = 1024) -> None:
        import numpy as np

        size = 1 << max(4, (capacity - 1).bit_length())
        self._keys = np.zeros(size, np.uint64)
        self._vals = np.zeros(size, np.uint64)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def _find(self, key: int) -> int:
        keys, mask = self._keys, len(self._keys) - 1
        i = key & mask
        while True:
            k = int(keys[i])
            if k == key or k == 0:
                return i
            i = (i + 1) & mask

    def get(self, key: int) -> int | None:
        i = self._find(key)
        return int(self._vals[i]) if self._keys[i] else None

    def __contains__(self, key: int) -> bool:
        return bool(self._keys[self._find(key)])

    def __setitem__(self, key: int, value: int) -> None:
        if not key:
            raise ValueError("DigestIndex keys are nonzero")
        if 2 * (self._n + 1) > len(self._keys):
            self._grow()
        i = self._find(key)
        if not self._keys[i]:
            self._keys[i] = key
            self._n += 1
        self._vals[i] = value

    def add(self, key: int) -> None:
        """As a set of digests."""
        self[key] = 1

    def _grow(self) -> None:
        keys, vals = self._keys, self._vals
        full = keys != 0
        bigger = DigestIndex(2 * len(keys))
        for k, v in zip(keys[full].tolist(), vals[full].tolist()):
            bigger[k] = v
        self._keys, self._vals = bigger._keys, bigger._vals


class RequestCache:
    """Key -> result dict, backed by an append-only JSONL file (or in memory when `path` is None).

    With a file, only an index is held (a key's 64-bit digest -> where its line starts), and a result is
    read back from disk when asked for: memory stays flat in the number of results. A line read
    back must carry the key asked for (two keys with one digest: the other is a miss, asked again).
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._data: dict[str, dict[str, Any]] = {}  # in memory (no path) only
        self._index = DigestIndex()  # digest -> offset of its line
        self._lock = threading.Lock()
        self._fh = None
        self._fd: int | None = None  # read handle (pread)
        self._end = 0  # bytes in the file, written or buffered
        self._flushed = 0  # bytes handed to the OS
        self.dropped_lines = 0
        self.flushes = 0  # write calls that reached the OS (counted for tests)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._fh = self.path.open("ab")
            self._fd = os.open(self.path, os.O_RDONLY)
            self._end = self._flushed = self._fh.tell()

    def _load(self) -> None:
        if not self.path.exists():
            return
        offset = 0
        torn = None
        with self.path.open("rb") as fh:
            for lineno, line in enumerate(fh, 1):  # a line at a time: never the whole file in memory
                if not line.endswith(b"\n"):
                    torn = (offset, len(line))
                    break
                at, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    key, _ = rec["key"], rec["result"]
                    if not isinstance(key, str):
                        raise TypeError(f"key is {type(key).__name__}")
                    self._index[_slot(key)] = at
                except (ValueError, KeyError, TypeError):
                    self.dropped_lines += 1
                    logger.warning("Skipping unreadable line %d of %s.", lineno, self.path)
        if torn is not None:
            # The process died mid-line: cut the torn tail so the next append starts on a clean line.
            logger.warning("Dropping a torn last line (%d bytes) from %s.", torn[1], self.path)
            self.dropped_lines += 1
            with self.path.open("r+b") as fh:
                fh.truncate(torn[0])

    def __len__(self) -> int:
        return len(self._index) if self.path is not None else len(self._data)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def get(self, key: str) -> dict[str, Any] | None:
        if self.path is None:
            return self._data.get(key)
        with self._lock:
            at = self._index.get(_slot(key))
            if at is None or self._fd is None:
                return None
            if at >= self._flushed:  # still in the write buffer
                self._fh.flush()
                self._flushed = self._end
            line = read_line(self._fd, at)
        try:
            rec = json.loads(line)
        except ValueError:  # another writer appended to the file meanwhile: this offset is not a line start
            return None
        # Not this key's line (a digest shared by two keys, or another writer's line): a miss, asked again.
        return rec.get("result") if isinstance(rec, dict) and rec.get("key") == key else None

    def put(self, key: str, result: dict[str, Any], flush: bool = True) -> None:
        """Record one result; `flush=False` leaves the line buffered until the next `flush()`."""
        if self.path is None:
            self._data[key] = result
            return
        line = (json.dumps({"key": key, "result": result}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fh is None:
                raise ValueError(f"the request cache {self.path} is closed")
            self._fh.write(line)
            self._index[_slot(key)] = self._end
            self._end += len(line)
            if flush:
                self._fh.flush()  # in the kernel now: survives SIGKILL of this process
                self._flushed = self._end
                self.flushes += 1

    def flush(self) -> None:
        """Hand every buffered line to the OS (one write for all of them)."""
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
                self._flushed = self._end
                self.flushes += 1

    def close(self) -> None:
        """Close the file and drop the index (a stage keeps its results, not the cache's)."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._index = DigestIndex()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
