"""Talking to an OpenAI-compatible API: the key, the client, one chat completion and its reply.

The API key is read from the environment and handed to the client; it is never stored or logged
(and it is redacted from every error text, `redact`)."""

from __future__ import annotations

import asyncio
import math
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

from personadlg.errors import UsageError
from personadlg.json_values import has_lone_surrogate
from personadlg.llm.config import ClientConfig
from personadlg.llm.parse import printable
from personadlg.llm.redact import redact_keys, remember_secret

MAX_USAGE_TOKENS = 10**9
"""The most tokens a reply's `usage` may report per count; more is not believed (`Reply.bad_usage`)."""


@dataclass
class Reply:
    """One chat completion. BAD_USAGE names the `usage` counts the server reported but that are not
    believable (negative, not an integer, not finite, above MAX_USAGE_TOKENS); they read 0 here and
    `run_jobs` charges its estimate for them instead."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    request_id: str | None
    bad_usage: tuple[str, ...] = ()


class RequestTimeout(asyncio.TimeoutError):
    """A whole request attempt took longer than `client.timeout` (retried like any timeout)."""


def api_key(cfg: ClientConfig) -> str:
    """The key from `client.api_key_env`; a placeholder when the endpoint needs none (api_key_env: null)."""
    if not cfg.api_key_env:
        return "no-key"
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise UsageError(
            f"client.api_key_env: the environment variable {cfg.api_key_env} is not set (the key is read from the environment only)"
        )
    remember_secret(key)
    problem = _key_problem(key)
    if problem:
        raise UsageError(
            f"client.api_key_env: the API key in the environment variable {cfg.api_key_env} {problem}; "
            "set it to the key alone"
        )
    return key


def _key_problem(key: str) -> str | None:
    """What makes KEY unusable in an Authorization header (never the key itself), or None."""
    if key != key.strip():
        return "has leading or trailing whitespace (a stray newline or space?)"
    if any(unicodedata.category(c).startswith("C") or c.isspace() for c in key):
        return "holds whitespace or control characters"
    if not key.isascii():
        return "holds non-ASCII characters"
    return None


def make_client(cfg: ClientConfig) -> Any:
    """An `openai.AsyncOpenAI` for the endpoint, without the client's own retries (ours apply)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        api_key=api_key(cfg), base_url=cfg.base_url, timeout=cfg.timeout, max_retries=0
    )


def _response_class() -> Any:
    try:  # the openai client is built on httpx (httpx2 in recent releases)
        import httpx2

        return httpx2.Response
    except ImportError:
        import httpx

        return httpx.Response


def _usage_count(usage: dict[str, Any], name: str, bad: list[str]) -> int:
    """`usage[NAME]` as a token count: absent → 0; not believable → 0, with NAME added to BAD."""
    value = usage.get(name)
    if value is None:
        return 0
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
        and 0 <= value <= MAX_USAGE_TOKENS
    ):
        return int(value)
    bad.append(name)
    return 0


def _text_or_none(value: Any) -> str | None:
    """VALUE when it is a string (lone surrogates replaced), else None: for ids and reasons."""
    return printable(value) if isinstance(value, str) else None


async def chat(
    client: Any,
    model: str,
    messages: Any,
    params: dict[str, Any],
    *,
    timeout: float | None = None,
) -> Reply:
    """One chat completion; raises the openai client's exceptions, ValueError for a malformed body
    (no choices; a content that is not a string or null, or holds a lone surrogate) and
    RequestTimeout when the whole attempt (a slowly dripping body included) outlasts TIMEOUT seconds.

    The request goes through the client's documented raw `post` (its auth, timeouts and error classes),
    skipping the typed request/response models, which cost more CPU than everything else per request.
    """
    if timeout is None:
        return await _chat(client, model, messages, params)
    try:
        return await asyncio.wait_for(_chat(client, model, messages, params), timeout)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"the request took longer than {timeout:g} s") from None


async def _chat(client: Any, model: str, messages: Any, params: dict[str, Any]) -> Reply:
    body = {"model": model, "messages": list(messages), **params}
    raw = await client.post("/chat/completions", body=body, cast_to=_response_class())
    try:
        data = raw.json()
    except RecursionError:
        raise ValueError("the response body is nested too deep") from None
    return reply_from_body(data, request_id=raw.headers.get("x-request-id"))


def reply_from_body(data: Any, *, request_id: Any = None) -> Reply:
    """The Reply of a chat-completion response body (a live reply's, or a Batch API result line's);
    ValueError for a malformed one: no choices, a message that is not an object, a content that is
    not a string or null or holds a lone surrogate. Unbelievable usage counts go to `bad_usage`."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise ValueError("the response has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    if not isinstance(message, dict):
        raise ValueError(f"the reply's message is {type(message).__name__}, not an object")
    text = message.get("content")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"the reply's content is {type(text).__name__}, not a string")
    if text is not None and has_lone_surrogate(text):
        raise ValueError("the reply's content holds a lone surrogate (not valid Unicode text)")
    if text is not None:
        text = redact_keys(text)
    usage = data.get("usage") or {}
    bad: list[str] = []
    if not isinstance(usage, dict):
        usage, bad = {}, ["prompt_tokens", "completion_tokens"]
    return Reply(
        text=text,
        finish_reason=_text_or_none(choice.get("finish_reason")),
        prompt_tokens=_usage_count(usage, "prompt_tokens", bad),
        completion_tokens=_usage_count(usage, "completion_tokens", bad),
        request_id=_text_or_none(request_id or data.get("id")),
        bad_usage=tuple(bad),
    )
