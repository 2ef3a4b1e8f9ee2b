"""What a stage does when its requests failed: say how many and why, and never lose finished rows.

Every generation stage (collect, correct, evolve, evaluate) counts its engine results in a
`RequestOutcome` and asks `guard_publish` before it writes anything. The rule, the same everywhere:

* no failed request: the run publishes its rows;
* failures and nothing new succeeded (every success came from the cache, or there was none): nothing
  is written, the folder is left exactly as it was, and the stage exits non-zero (`RequestsFailed`);
* failures and some new successes: the rows are published only when they do not replace a better
  earlier artifact (more successful requests, or data of an earlier run with no record of its
  requests); otherwise as above.

The report (on stderr, once) gives the count and the cause of the failures, with an example message
scrubbed of credentials, and tells to rerun only when rerunning can help (not after a 401, 403 or 404).
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lema_hub.artifacts import (
    _scrub_string,  # configured keys and credential-named env values too
    read_run_record,
)
from lema_hub.generation.results import GenerationResults
from lema_hub.generation.retry import failure_cause, is_permanent_status

_HTTP_RE = re.compile(r"^HTTP (\d{3})\b")
_EXAMPLE_CHARS = 160


class RequestsFailed(SystemExit):
    """A run whose failed requests keep it from publishing; exits non-zero with its message."""

    def __init__(self, message: str, outcome: RequestOutcome) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome

    def __str__(self) -> str:
        return self.message


cause_of = failure_cause  # the kind of a failure ("HTTP 401", "connection failed", ...), retries stripped


def is_permanent(cause: str) -> bool:
    """True when retrying cannot fix it: a non-retryable 4xx (401, 403, 404, 400 ...) or a refusal."""
    m = _HTTP_RE.match(cause)
    if m:
        return is_permanent_status(int(m.group(1)))
    return cause == "model refused"


def _scrub(text: str) -> str:
    """`text` without the values of secret-looking environment variables or token-like strings."""

    text = _scrub_string(" ".join(text.split()))
    return text[:_EXAMPLE_CHARS] + ("..." if len(text) > _EXAMPLE_CHARS else "")


@dataclass
class RequestOutcome:
    """Counts of one run's generation results, over every engine call of the stage."""

    stage: str
    total: int = 0
    cached: int = 0
    generated: int = 0  # new successes: neither cached nor failed
    failed: int = 0
    causes: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, results: Iterable[Any], engine_summary: dict[str, Any] | None = None) -> None:
        """Count one `Engine.generate` call: its results and (for the cache hits) `last_summary`."""
        if isinstance(results, GenerationResults):  # only the failed ones are read back from disk
            n, failures = len(results), list(results.failures())
        else:
            results = list(results)
            n, failures = len(results), [r for r in results if not (r.error is None and r.text is not None)]
        failed = 0
        for r in failures:
            failed += 1
            error = str(r.error or "no text")
            cause = cause_of(error)
            self.causes[cause] += 1
            self.examples.setdefault(cause, _scrub(error))
        cached = int((engine_summary or {}).get("cached", 0))
        self.total += n
        self.failed += failed
        self.cached += cached
        self.generated += max(0, n - failed - cached)

    @property
    def succeeded(self) -> int:
        return self.total - self.failed

    @property
    def permanent(self) -> bool:
        """Every failure is one that a rerun cannot fix."""
        return bool(self.causes) and all(is_permanent(c) for c in self.causes)

    def record(self) -> dict[str, Any]:
        """The `requests` entry of the run summary."""
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cached": self.cached,
            "generated": self.generated,
            "failure_causes": dict(self.causes),
        }

    def advice(self) -> str:
        if self.permanent:
            return (
                "Rerunning as is will not help: fix the cause (API key, endpoint URL, model name or "
                "request), then rerun (finished requests come from the cache)."
            )
        if any(is_permanent(c) for c in self.causes):
            return (
                "Fix the permanent errors first; the others may pass on a rerun of the same command "
                "(finished requests come from the cache)."
            )
        return "Rerun the same command to retry them (finished requests come from the cache)."

    def report(self) -> str:
        """One paragraph: how many failed, each cause with its count and an example, what to do."""
        causes = "; ".join(
            f"{n} x {cause} (e.g. {self.examples[cause]!r})" for cause, n in self.causes.most_common()
        )
        return f"{self.stage}: {self.failed} of {self.total} requests failed: {causes}. {self.advice()}"


def earlier_requests(folder: str | os.PathLike, recipe: str, key: str) -> dict[str, Any] | None:
    """The `requests` record an earlier run of `recipe` wrote for `key` into the folder, if any."""

    try:
        _, summaries = read_run_record(folder)
    except (OSError, ValueError):
        return None
    entry = (summaries.get(recipe) or {}).get("requests") or {}
    record = entry.get(key) if isinstance(entry, dict) else None
    return record if isinstance(record, dict) else None


# Runs published although some of their requests failed, since `take_partial` was last called: the
# CLI exits non-zero after such a run, so a pipeline (`sbatch --dependency=afterok`) stops there.
_PARTIAL: list[RequestOutcome] = []


def take_partial() -> list[RequestOutcome]:
    """The partial runs published since the last call (and forget them)."""
    out = list(_PARTIAL)
    _PARTIAL.clear()
    return out


def guard_publish(
    outcome: RequestOutcome | None,
    folder: str | os.PathLike,
    recipe: str,
    key: str,
    data_configs: Iterable[str],
) -> None:
    """Return when this run may write its rows for `key`; else raise `RequestsFailed` (nothing written).

    `data_configs` are the configs this run would replace (what `folder/data/` holds of an earlier run).
    The failure report goes to stderr once: here when the run publishes, in the exit message when not.
    """
    if outcome is None or outcome.failed == 0:
        return
    folder = Path(folder)
    why = None
    if outcome.generated == 0:
        why = "no request succeeded in this run"
    else:
        earlier = earlier_requests(folder, recipe, key)
        on_disk = [c for c in data_configs if (folder / "data" / c).is_dir()]
        if earlier is None and on_disk:
            why = f"{folder}/data/{on_disk[0]} holds the rows of an earlier run"
        elif earlier is not None and int(earlier.get("succeeded", 0)) > outcome.succeeded:
            why = (
                f"the earlier run had {earlier.get('succeeded')} successful requests, this one "
                f"{outcome.succeeded}"
            )
    if why is None:
        print(outcome.report() + " The rows that succeeded are written.", file=sys.stderr)
        _PARTIAL.append(outcome)
        return
    message = f"{outcome.report()}\n{recipe}: {why}; nothing written, {folder} is left as it was."
    raise RequestsFailed(message, outcome)
