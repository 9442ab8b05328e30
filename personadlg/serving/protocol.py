"""The OpenAI chat-completions wire format: request models, response and chunk bodies, errors.

A request body is read as the CLI reads its JSON inputs (`read_request`): NaN / Infinity and
lone surrogate escapes are refused (400, naming the field that holds the surrogate), as are more
messages than the server allows and lists or objects of more than `MAX_ITEMS` items; then pydantic validates it, and a validation error becomes a 400
in OpenAI's error shape (`{"error": {"message", "type", "param", "code"}}`) naming the field
(`messages[1].role`), not FastAPI's default 422. Fields beyond OpenAI's are the conditioning the `openai` client sends as
`extra_body` (they arrive as top-level JSON fields): `persona`, `profile`, `attributes`, plus
vLLM's sampling extras `top_k`, `min_tokens` and `repetition_penalty`, and `generate`'s
`no_repeat_ngram_size`.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_N = 16
"""The most choices one request may ask for (`n`)."""
MAX_STOP = 8
"""The most stop strings one request may give."""
MAX_SEED = 2**63 - 1
"""The largest `seed` (OpenAI's seeds are signed 64-bit; negative ones are refused)."""
DEFAULT_MAX_MESSAGES = 256
"""The most messages one request may hold, by default (`personadlg serve --max-messages`)."""
MAX_BODY_BYTES = 4 * 2**20
"""The largest request body (413 above it)."""
MAX_ITEMS = 64
"""The most items any list or object of a request may hold (content parts, persona sentences,
profile fields, ...), `messages` aside (`DEFAULT_MAX_MESSAGES`)."""


class APIError(Exception):
    """An error answered in OpenAI's JSON shape with STATUS."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}`."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict", "ContentPart"}


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as the request field it names: ("body", "messages", 1, "role")
    → `messages[1].role`."""
    out = ""
    for part in loc:
        if part in ("body",) and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part) in _UNION_TAGS or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            continue  # a union branch pydantic names by its type, e.g. "str" or "list[str]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_error(errors: Sequence[Any]) -> APIError:
    """FastAPI's request validation errors as one 400 naming the first bad field."""
    if not errors:
        return bad_request("invalid request")
    first = dict(errors[0])
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return bad_request("the request body is not valid JSON", code="invalid_json")
    param = field_path(first.get("loc", ())) or None
    msg = str(first.get("msg", "invalid value"))
    if kind == "missing":
        msg = "field required"
    elif kind == "model_attributes_type" and not param:
        msg = "expected a JSON object"
    more = (
        f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    )
    return bad_request(f"{param or 'body'}: {msg}{more}", param=param, code=kind or None)


# -- reading a request body -------------------------------------------------------------------


def check_content_type(value: str | None) -> None:
    """415 unless the body is declared JSON (`application/json` or `application/*+json`); a body
    with no Content-Type is read as JSON."""
    if not value:
        return
    mime = value.split(";", 1)[0].strip().lower()
    if mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")):
        return
    raise APIError(
        415,
        f"the request body must be JSON: send `Content-Type: application/json` (got {mime!r})",
        code="unsupported_media_type",
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range (beyond a 64-bit float)")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""How a surrogate reaches a parsed body: JSON's escape (UTF-8 text cannot encode one)."""


def lone_surrogate(value: Any) -> tuple[str, str] | None:
    """(the field, the character) of the first lone surrogate in any string of VALUE, a parsed
    JSON value: `messages[0].content`; a surrogate in an object's key names the object."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if m := _SURROGATE.search(v):
                return path, m.group()
        elif isinstance(v, dict):
            for key, item in reversed(list(v.items())):
                if m := _SURROGATE.search(key):
                    return path, m.group()
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", item) for i, item in reversed(list(enumerate(v))))
    return None


def oversized(value: Any, *, most: int = MAX_ITEMS) -> tuple[str, int] | None:
    """(the field, its size) of the first list or object in VALUE, a parsed JSON value, holding
    more than MOST items ('' for VALUE itself); `messages` is left to `--max-messages`."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if len(v) > most and path != "messages":
            return path, len(v)
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for key, item in items:
            if isinstance(item, (dict, list)):  # only containers are visited
                if isinstance(key, int):
                    stack.append((f"{path}[{key}]", item))
                else:
                    stack.append((f"{path}.{key}" if path else key, item))
    return None


def parse_body(raw: bytes) -> dict[str, Any]:
    """RAW as a JSON object: 400 for invalid JSON (NaN and Infinity included) or a non-object."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError too
        reason = str(err) if isinstance(err, ValueError) else "nested too deeply"
        if "integer string conversion" in reason:  # Python's guard against huge integers
            reason = f"a number has more than {sys.get_int_max_str_digits()} digits"
        raise bad_request(
            f"the request body is not valid JSON: {reason}", code="invalid_json"
        ) from None
    if not isinstance(value, dict):
        raise bad_request(
            f"the request body must be a JSON object, got {type(value).__name__}",
            code="invalid_json",
        )
    return value


def read_request(raw: bytes, *, max_messages: int = DEFAULT_MAX_MESSAGES) -> ChatCompletionRequest:
    """A chat-completions request from its body, checked as the CLI checks its JSON inputs: 400
    for invalid JSON, more than MAX_MESSAGES messages or a list or object of more than MAX_ITEMS
    items (before anything else reads them), a lone surrogate in any text (naming the field), or
    a field pydantic refuses.

    Everything before pydantic is Python that yields the GIL as it goes, and pydantic (which
    holds the GIL while it runs) validates one message at a time: a large body never stalls the
    event loop's thread for long."""
    data = parse_body(raw)
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > max_messages:
        raise bad_request(
            f"messages: expected at most {max_messages} messages, got {len(messages)}; send the "
            "recent history only (the server's --max-messages)",
            param="messages",
            code="too_many_messages",
        )
    if found := oversized(data):
        path, size = found
        raise bad_request(
            f"{path or 'body'}: expected at most {MAX_ITEMS} items, got {size}",
            param=path or None,
            code="too_many_items",
        )
    escaped = json.detect_encoding(raw) != "utf-8" or _SURROGATE_ESCAPE.search(raw)
    if escaped and (found_char := lone_surrogate(data)):
        path, char = found_char
        raise bad_request(
            f"{path or 'body'}: not valid Unicode: the escape \\u{ord(char):04x} is a lone "
            "surrogate, which no UTF-8 text can hold",
            param=path or None,
            code="invalid_unicode",
        )
    if isinstance(messages, list) and messages:
        data = {**data, "messages": [_message(m, i) for i, m in enumerate(messages)]}
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as err:
        raise validation_error(list(err.errors())) from None


def _message(value: Any, index: int) -> ChatMessage:
    """`messages[INDEX]` validated on its own (400 naming its field)."""
    try:
        return ChatMessage.model_validate(value)
    except ValidationError as err:
        errors = [{**e, "loc": ("messages", index, *e["loc"])} for e in err.errors()]
        raise validation_error(errors) from None


# -- requests ---------------------------------------------------------------------------------


class ContentPart(BaseModel):
    """One part of a message's content list; only text parts are understood."""

    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """One chat message. `developer` is OpenAI's newer name for `system`."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        """The message's text (text parts joined); a non-text part is a 400."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise bad_request(
                    f"messages[{index}].content[{j}].type: only text content is supported, got {part.type!r}",
                    param=f"messages[{index}].content[{j}].type",
                )
            parts.append(part.text)
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "audio", "prediction")


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`. Unknown fields are accepted and ignored, except the ones
    `unsupported()` refuses because ignoring them would silently answer another question."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    n: int = Field(1, ge=1, le=MAX_N)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, min_length=1)
    # personadlg's conditioning (the openai client's extra_body)
    persona: list[str] | None = None
    profile: dict[str, Any] | None = None
    attributes: dict[str, str] | None = None
    # vLLM's sampling extras
    top_k: int | None = Field(None, ge=-1)
    min_tokens: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    # `personadlg generate`'s
    no_repeat_ngram_size: int | None = Field(None, ge=0)

    def unsupported(self) -> None:
        """Refuse fields personadlg cannot honour (tools, logprobs, JSON mode, penalties)."""
        extra = self.model_extra or {}
        if "extra_body" in extra:
            raise bad_request(
                "extra_body: send its fields (persona, profile, attributes, ...) at the top level "
                "of the request, as the openai client does",
                param="extra_body",
            )
        for name in _UNSUPPORTED:
            if extra.get(name) not in (None, [], {}, "none", "auto"):
                raise bad_request(
                    f"{name}: not supported by personadlg serve (persona models answer in text only)",
                    param=name,
                    code="unsupported_parameter",
                )
        if extra.get("logprobs"):
            raise bad_request(
                "logprobs: not supported by personadlg serve",
                param="logprobs",
                code="unsupported_parameter",
            )
        fmt = extra.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
            raise bad_request(
                f"response_format: only type 'text' is supported, got {fmt.get('type')!r}",
                param="response_format",
                code="unsupported_parameter",
            )
        for name in ("frequency_penalty", "presence_penalty"):
            value = extra.get(name)
            if value not in (None, 0, 0.0):
                raise bad_request(
                    f"{name}: not supported by personadlg serve (use repetition_penalty), got {value!r}",
                    param=name,
                    code="unsupported_parameter",
                )

    def stops(self) -> list[str]:
        """The stop strings as a list (400 for empty ones or too many)."""
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if len(stops) > MAX_STOP:
            raise bad_request(
                f"stop: expected at most {MAX_STOP} stop strings, got {len(stops)}", param="stop"
            )
        for i, s in enumerate(stops):
            if not s:
                raise bad_request(f"stop[{i}]: expected a non-empty string", param="stop")
        return stops

    def new_tokens(self) -> int | None:
        """`max_completion_tokens` (OpenAI's newer name) or `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens


# -- responses --------------------------------------------------------------------------------


def completion_body(
    *,
    id: str,
    created: int,
    model: str,
    texts: Sequence[str],
    finish_reasons: Sequence[str],
    usage: dict[str, int],
    echo: dict[str, Any],
    fingerprint: str,
) -> dict[str, Any]:
    """A `chat.completion` object, with the conditioning echo under `personadlg`."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": reason,
            }
            for i, (text, reason) in enumerate(zip(texts, finish_reasons))
        ],
        "usage": usage,
        "personadlg": echo,
    }


def text_pieces(text: str) -> list[str]:
    """TEXT cut into word-sized stream deltas that join back to exactly TEXT."""
    return re.findall(r"\s*\S+|\s+$", text)


def chunk_bodies(
    *,
    id: str,
    created: int,
    model: str,
    texts: Sequence[str],
    finish_reasons: Sequence[str],
    usage: dict[str, int] | None,
    echo: dict[str, Any],
    fingerprint: str,
) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a finished completion: per choice a role chunk (the
    first one carries the `personadlg` echo), word-sized content chunks and a finish chunk; then
    a usage chunk (choices []) when USAGE is given (`stream_options.include_usage`)."""
    head = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": fingerprint,
    }

    def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            **head,
            "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    for i, (text, reason) in enumerate(zip(texts, finish_reasons)):
        first = chunk(i, {"role": "assistant", "content": ""})
        if i == 0:
            first["personadlg"] = echo
        yield first
        for piece in text_pieces(text):
            yield chunk(i, {"content": piece})
        yield chunk(i, {}, reason)
    if usage is not None:
        yield {**head, "choices": [], "usage": usage}


def sse(obj: dict[str, Any]) -> str:
    """One server-sent event: `data: {...}` and a blank line."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
