"""OpenAI chat fine-tuning JSONL: `{"messages": [{"role": "system"|"user"|"assistant", "content": ...}]}`.

The leading system (or developer) messages go to `meta.system`, several joined by a blank line.
Content may be a string or a list of content parts (the text parts are joined). Ids are generated
(`<file stem>-<n>`) unless the line has an `id`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from personadlg.data.formats.base import (
    SYSTEM_SEP,
    Format,
    FormatOptions,
    Item,
    first_json_object,
    read_converted,
)
from personadlg.data.jsonl import iter_json_lines
from personadlg.errors import DataError


def _content(value: Any, field: str) -> Any:
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
                texts.append(part.get("text", ""))
            elif isinstance(part, str):
                texts.append(part)
            else:
                raise DataError(field=f"{field}[{j}]", expected="a text content part", got=part)
        return "\n".join(texts)
    return value


def _convert(obj: Any, fallback_id: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(expected="an object with 'messages'", got=obj)
    msgs = obj.get("messages")
    if not isinstance(msgs, list):
        raise DataError(field="messages", expected="a list of messages", got=msgs)
    meta = dict(obj["meta"]) if isinstance(obj.get("meta"), dict) else {}
    out: list[dict[str, Any]] = []
    systems: list[str] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise DataError(
                field=f"messages[{i}]", expected="an object with 'role' and 'content'", got=m
            )
        role = m.get("role")
        content = _content(m.get("content"), f"messages[{i}].content")
        if role in ("system", "developer"):
            if out:
                raise DataError(
                    field=f"messages[{i}].role",
                    expected="'user' or 'assistant' (system only first)",
                    got=role,
                )
            if content is None or content == "":
                continue
            if not isinstance(content, str):
                raise DataError(field=f"messages[{i}].content", expected="a string", got=content)
            systems.append(content)
            continue
        out.append({"role": role, "content": content})
    if systems:
        meta["system"] = SYSTEM_SEP.join(systems)
    rid = obj.get("id")
    rec: dict[str, Any] = {
        "id": rid if isinstance(rid, str) and rid else fallback_id,
        "messages": out,
    }
    if meta:
        rec["meta"] = meta
    for k in ("persona", "attributes", "user_id", "profile", "topic"):
        if k in obj:
            rec[k] = obj[k]
    return rec


def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
    yield from read_converted(path, iter_json_lines(path), _convert, opts)


def sniff(path: Path, head: str) -> bool:
    obj = first_json_object(head)
    return obj is not None and "messages" in obj


FORMAT = Format(
    name="openai",
    description="OpenAI chat fine-tuning JSONL: {messages: [{role, content}]}",
    read=read,
    sniff=sniff,
)
