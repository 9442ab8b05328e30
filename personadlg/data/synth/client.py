"""Talking to an OpenAI-compatible API: one request, errors sorted into stop / retry / fail, back-off.

- authentication, permission and quota errors → stop the whole run (a clear message, exit 1);
- 429, 5xx, timeouts, dropped connections, malformed responses → retry, after a back-off that
  doubles from `client.backoff_base` with jitter, or exactly the server's `Retry-After`;
- other 4xx → record the unit as failed.
The API key is read from the environment and handed to the client; it is never stored or logged,
and every error text is redacted (`redact`) before it is stored or shown, so a server that echoes
the key or the Authorization header in an error body cannot leak it into a file or a terminal.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from personadlg.data.synth.config import ClientConfig
from personadlg.errors import PersonadlgError, UsageError


class FatalAPIError(PersonadlgError):
    """Authentication, permission or quota: retrying cannot help; the run stops."""

    exit_code = 1


@dataclass
class Reply:
    text: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    request_id: str | None


@dataclass
class ErrorKind:
    action: str  # "stop" | "retry" | "fail"
    name: str
    message: str
    retry_after: float | None = None


_SECRETS: set[str] = set()
_AUTH = re.compile(
    r"(?i)\b(authorization|x-api-key|api[-_]?key)([\"']?\s*[:=]\s*[\"']?)(bearer\s+|basic\s+)?[^\s\"',;}]+"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{6,}")
REDACTED = "[REDACTED]"


def redact(text: str) -> str:
    """TEXT without any API key read by this process, Authorization / api-key values or bearer tokens."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}{REDACTED}", text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)


def api_key(cfg: ClientConfig) -> str:
    """The key from `client.api_key_env`; a placeholder when the endpoint needs none (api_key_env: null)."""
    if not cfg.api_key_env:
        return "no-key"
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise UsageError(
            f"client.api_key_env: the environment variable {cfg.api_key_env} is not set (the key is read from the environment only)"
        )
    if len(key) >= 4:
        _SECRETS.add(key)
    return key


def make_client(cfg: ClientConfig) -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        api_key=api_key(cfg), base_url=cfg.base_url, timeout=cfg.timeout, max_retries=0
    )


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


def _response_class() -> Any:
    try:  # the openai client is built on httpx (httpx2 in recent releases)
        import httpx2

        return httpx2.Response
    except ImportError:
        import httpx

        return httpx.Response


async def chat(client: Any, model: str, messages: Any, params: dict[str, Any]) -> Reply:
    """One chat completion; raises the openai client's exceptions (and ValueError for a malformed body).

    The request goes through the client's documented raw `post` (its auth, timeouts and error classes),
    skipping the typed request/response models, which cost more CPU than everything else per request.
    """
    body = {"model": model, "messages": list(messages), **params}
    raw = await client.post("/chat/completions", body=body, cast_to=_response_class())
    data = raw.json()
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices:
        raise ValueError("the response has no choices")
    choice = choices[0]
    usage = data.get("usage") or {}
    return Reply(
        text=(choice.get("message") or {}).get("content"),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        request_id=raw.headers.get("x-request-id") or data.get("id"),
    )
