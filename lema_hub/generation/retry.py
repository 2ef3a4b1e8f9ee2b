"""Retry policy: exponential backoff with jitter, honouring Retry-After."""

from __future__ import annotations

import email.utils
import random
import re
import time
from dataclasses import dataclass

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})


def is_permanent_status(status: int | None) -> bool:
    """A 4xx that retrying cannot fix (400, 401, 403, 404 ...): the request itself is wrong."""
    return status is not None and 400 <= status < 500 and status not in RETRYABLE_STATUS


_GAVE_UP_RE = re.compile(r"^gave up after \d+ attempts: ")


def failure_cause(error: str) -> str:
    """The kind of a recorded failure ("HTTP 401", "connection failed", "timeout" ...), retries stripped."""
    inner = _GAVE_UP_RE.sub("", error.strip())
    return inner.split(":", 1)[0].strip() or "unknown error"


class MalformedResponse(ValueError):
    """The server answered 2xx but the body is not a usable completion."""


class PermanentError(RuntimeError):
    """A failure that retrying cannot fix (bad request, auth, unknown model)."""


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    rng: random.Random | None = None

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based), at least Retry-After."""
        rng = self.rng or random
        backoff = min(self.max_delay, self.base_delay * (2**attempt))
        backoff = backoff / 2 + rng.uniform(0, backoff / 2)  # "equal jitter": spread, but never near zero
        if retry_after is not None:
            return max(backoff, retry_after)
        return backoff


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date); None when absent."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
    except Exception:  # headers of an unexpected type
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def status_of(exc: BaseException) -> int | None:
    """HTTP status carried by an exception from openai, httpx or huggingface_hub, if any."""
    for obj in (exc, getattr(exc, "response", None)):
        code = getattr(obj, "status_code", None)
        if isinstance(code, int):
            return code
    return None


def headers_of(exc: BaseException):
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None)
