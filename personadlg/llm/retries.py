"""What to do about a failed request: stop the run, retry it after a back-off, or record it as failed.

- authentication, permission and quota errors → stop the whole run (a clear message, exit 1);
- 429, 5xx, timeouts, dropped connections, malformed responses → retry, after a back-off that
  doubles from `client.backoff_base` with jitter, or the server's `Retry-After` (`backoff`: at most
  `max_server_wait`; a value that is not a finite, non-negative number or a valid date is ignored);
- other 4xx → record the request as failed.
Every error message is redacted (`redact`) before it is stored or shown.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from dataclasses import dataclass
from datetime import timezone
from typing import Any

from personadlg.errors import PersonadlgError
from personadlg.llm.config import ClientConfig
from personadlg.llm.parse import printable
from personadlg.llm.redact import redact


class FatalAPIError(PersonadlgError):
    """Authentication, permission or quota: retrying cannot help; the run stops."""

    exit_code = 1


@dataclass
class ErrorKind:
    action: str  # "stop" | "retry" | "fail"
    name: str
    message: str
    retry_after: float | None = None


def _seconds(value: str) -> float | None:
    """VALUE as a finite, non-negative number of seconds; None when it is not one."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _retry_after(headers: Any) -> float | None:
    """The wait the server asks for (`retry-after-ms`, else `Retry-After` in seconds or as an HTTP
    date), in seconds; None when it asks for none or the value is unusable (not a finite,
    non-negative number, not a valid date): the normal back-off then applies."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        seconds = _seconds(str(ms))
        if seconds is not None:
            return seconds / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(str(value))
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(str(value))
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=timezone.utc)
        delay = when.timestamp() - time.time()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return max(delay, 0.0) if math.isfinite(delay) else None


def classify(err: BaseException) -> ErrorKind:
    """What to do about an exception raised by the openai client (its message redacted)."""
    kind = _classify(err)
    kind.message = printable(redact(kind.message))
    return kind


def _classify(err: BaseException) -> ErrorKind:
    import openai

    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return ErrorKind(
            "stop", "auth", f"the API refused the key ({err.status_code}): {err.message}"
        )
    if isinstance(err, openai.RateLimitError):
        body = err.body if isinstance(err.body, dict) else {}
        code = str(body.get("code") or body.get("type") or "") + " " + str(err.message)
        if "insufficient_quota" in code or "quota" in code.lower():
            return ErrorKind("stop", "quota", f"the account is out of quota: {err.message}")
        return ErrorKind(
            "retry", "rate_limit", str(err.message), _retry_after(err.response.headers)
        )
    if isinstance(err, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError)):
        return ErrorKind("retry", "timeout", "the request timed out")
    if isinstance(err, openai.APIConnectionError):
        return ErrorKind("retry", "connection", f"connection error: {err}")
    if isinstance(err, openai.APIStatusError):
        if err.status_code >= 500:
            return ErrorKind(
                "retry",
                "server_error",
                f"{err.status_code}: {err.message}",
                _retry_after(err.response.headers),
            )
        if err.status_code == 408 or err.status_code == 409:
            return ErrorKind("retry", "server_error", f"{err.status_code}: {err.message}")
        return ErrorKind("fail", f"http_{err.status_code}", str(err.message))
    if isinstance(err, (openai.APIResponseValidationError, ValueError)):
        return ErrorKind("retry", "malformed_response", f"{type(err).__name__}: {err}")
    return ErrorKind("retry", "unexpected", f"{type(err).__name__}: {err}")


def max_server_wait(cfg: ClientConfig) -> float:
    """The longest wait a server's Retry-After may impose: `client.backoff_max`, but at least 60 s
    (a server may rightly ask for a minute; the OpenAI Python SDK ignores longer ones)."""
    return max(cfg.backoff_max, 60.0)


def backoff(
    attempt: int,
    cfg: ClientConfig,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry ATTEMPT (1-based): the server's Retry-After (clamped to
    `max_server_wait`), else doubling from `client.backoff_base` with jitter."""
    if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
        return min(retry_after, max_server_wait(cfg))
    base = min(cfg.backoff_max, cfg.backoff_base * 2.0 ** min(attempt - 1, 64))
    return base * (0.5 + (rng or random).random())
