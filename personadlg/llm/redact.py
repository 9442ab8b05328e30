"""Secrets out of every text that is stored or shown: the API keys this process read, Authorization
and api-key values, bearer tokens. A server that echoes the key in an error body cannot leak it
into a file or a terminal."""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_SECRETS: set[str] = set()
_AUTH = re.compile(
    r"(?i)\b(authorization|x-api-key|api[-_]?key)([\"']?\s*[:=]\s*[\"']?)(bearer\s+|basic\s+)?[^\s\"',;}]+"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{6,}")


def remember_secret(value: str) -> None:
    """Redact VALUE (an API key just read) from every text from now on; shorter than 4 characters: ignored."""
    if len(value) >= 4:
        _SECRETS.add(value)


def redact_keys(text: str) -> str:
    """TEXT without any API key read by this process (for replies: a proxy that echoes the request's
    Authorization header into a completion must not get the key into an output)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(text: str) -> str:
    """TEXT without any API key read by this process, Authorization / api-key values or bearer tokens."""
    text = redact_keys(text)
    text = _AUTH.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}{REDACTED}", text)
    return _BEARER.sub(f"Bearer {REDACTED}", text)
