"""An engine call's results, spooled to disk as they land and read back when asked for.

A paper-scale call has tens of thousands of results; holding each one's text until the last
request is answered made a stage's memory grow with its input. `ResultSpool` writes each result
as one JSON line to an anonymous temporary file (gone when it is closed, or when the process
dies) and keeps 12 bytes per result: where its line is. `GenerationResults` is the read-only
sequence `Engine.generate` returns over it.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from lema_hub.generation.types import GenerationResult

_PENDING = 0  # no line yet (a line is never empty)


class ResultSpool:
    """Results by position, written as they are set, in any order."""

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        self._fh = tempfile.TemporaryFile(dir=directory)  # unlinked at once: never left behind
        self._at = array("Q")  # position -> offset of its line
        self._length = array("I")  # position -> length of its line (0: no result yet)
        self._end = 0
        self._flushed = 0
        self.failed: list[int] = []  # positions of failed results (few), for a quick count
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def __len__(self) -> int:
        return len(self._at)

    def append(self, result: GenerationResult | None) -> None:
        """One more position (set later when `result` is None)."""
        self._at.append(0)
        self._length.append(_PENDING)
        if result is not None:
            self[len(self._at) - 1] = result

    def __setitem__(self, position: int, result: GenerationResult) -> None:
        line = (json.dumps(result.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
        self._fh.write(line)
        self._at[position], self._length[position] = self._end, len(line)
        self._end += len(line)
        if not result.ok:
            self.failed.append(position)
        self.prompt_tokens += result.prompt_tokens or 0
        self.completion_tokens += result.completion_tokens or 0

    def pending(self) -> int:
        """Positions without a result yet."""
        return self._length.count(_PENDING)

    def read(self, position: int) -> GenerationResult:
        at, length = self._at[position], self._length[position]
        if length == _PENDING:
            raise LookupError(f"no result at position {position} yet")
        if at + length > self._flushed:
            self._fh.flush()
            self._flushed = self._end
        return GenerationResult(**json.loads(os.pread(self._fh.fileno(), length, at)))

    def close(self) -> None:
        self._fh.close()


class GenerationResults(Sequence):
    """The results of one `Engine.generate` call, ordered by request then sample index.

    A read-only sequence of `GenerationResult`: each item is read back from the spool when it is
    asked for (and not kept), so iterating over a call's results holds one at a time. Compares
    equal to a list of the same results; pickles as that list.
    """

    def __init__(self, spool: ResultSpool) -> None:
        self._spool = spool

    def __len__(self) -> int:
        return len(self._spool)

    @overload
    def __getitem__(self, i: int) -> GenerationResult: ...
    @overload
    def __getitem__(self, i: slice) -> list[GenerationResult]: ...
    def __getitem__(self, i: int | slice) -> GenerationResult | list[GenerationResult]:
        if isinstance(i, slice):
            return [self._spool.read(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"result {i} of {n}")
        return self._spool.read(i % n)

    def __iter__(self) -> Iterator[GenerationResult]:
        for j in range(len(self)):
            yield self._spool.read(j)

    @property
    def prompt_tokens(self) -> int:
        return self._spool.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self._spool.completion_tokens

    @property
    def failed(self) -> int:
        """How many results failed (without reading any)."""
        return len(self._spool.failed)

    def failures(self) -> Iterator[GenerationResult]:
        """The failed results, in order (only those are read)."""
        for j in sorted(self._spool.failed):
            yield self._spool.read(j)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, (GenerationResults, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # mutable-looking: like a list, not hashable

    def __reduce__(self) -> tuple:
        return (list, (list(self),))

    def __repr__(self) -> str:
        return f"GenerationResults({len(self)} results, {self.failed} failed)"
