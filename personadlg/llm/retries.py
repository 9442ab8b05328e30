"""What to do about a failed request: stop the run, retry it after a back-off, or record it as failed.

- authentication, permission and quota errors → stop the whole run (a clear message, exit 1);
- 429, 5xx, timeouts, dropped connections, malformed responses → retry, after a back-off that
  doubles from `client.backoff_base` with jitter, or exactly the server's `Retry-After`;
- other 4xx → record the request as failed.
Every error message is redacted (`redact`) before it is stored or shown.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any

from personadlg.errors import PersonadlgError
from personadlg.llm.config import ClientConfig
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


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(when.timestamp() - time.time(), 0.0) if when else None


def classify(err: BaseException) -> ErrorKind:
    """What to do about an exception raised by the openai client (its message redacted)."""
    kind = _classify(err)
    kind.message = redact(kind.message)
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
    if isinstance(err, openai.APITimeoutError):
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


def backoff(
    attempt: int,
    cfg: ClientConfig,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry ATTEMPT (1-based): the server's Retry-After, else doubling with jitter."""
    if retry_after is not None:
        return retry_after
    base = min(cfg.backoff_max, cfg.backoff_base * 2 ** (attempt - 1))
    return base * (0.5 + (rng or random).random())
