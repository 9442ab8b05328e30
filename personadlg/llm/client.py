"""Talking to an OpenAI-compatible API: the key, the client, one chat completion and its reply.

The API key is read from the environment and handed to the client; it is never stored or logged
(and it is redacted from every error text, `redact`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from personadlg.errors import UsageError
from personadlg.llm.config import ClientConfig
from personadlg.llm.redact import remember_secret


@dataclass
class Reply:
    text: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    request_id: str | None


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
    return key


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
