"""ShareGPT conversations (as used by FastChat, axolotl, LLaMA-Factory): JSON list or JSONL.

`{"id": "...", "conversations": [{"from": "human"|"gpt"|"system", "value": "..."}], "system": "..."}`.
The `system` key and the system turns go to `meta.system` (several joined by a blank line).
personadlg's own fields (`persona`, `attributes`, `user_id`, `profile`, `topic`, `meta`) are read
and written as extra keys, so a round trip through ShareGPT loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from personadlg.data.formats.base import (
    SYSTEM_SEP,
    Format,
    FormatOptions,
    Item,
    read_converted,
)
from personadlg.data.jsonl import dumps, iter_json_array, iter_json_lines
from personadlg.data.schema import Dialogue
from personadlg.errors import DataError

USER = {"human", "user"}
ASSISTANT = {"gpt", "assistant", "chatgpt", "bard", "bing", "model"}
_OURS = ("persona", "attributes", "user_id", "profile", "topic")


def is_json_list(path: Path) -> bool:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        while True:
            ch = f.read(1)
            if not ch or not ch.isspace():
                return ch == "["


def _convert(obj: Any, fallback_id: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(expected="an object with 'conversations'", got=obj)
    key = "conversations" if "conversations" in obj else "messages"
    conv = obj.get(key)
    if not isinstance(conv, list):
        raise DataError(field=key, expected="a list of {from, value} turns", got=conv)
    messages: list[dict[str, Any]] = []
    meta = dict(obj.get("meta") or {}) if isinstance(obj.get("meta"), dict) else {}
    systems = [obj["system"]] if obj.get("system") else []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise DataError(
                field=f"{key}[{i}]", expected="an object with 'from' and 'value'", got=turn
            )
        who = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        if who == "system":
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                raise DataError(field=f"{key}[{i}].value", expected="a string", got=value)
            systems.append(value)
            continue
        if who in USER:
            role = "user"
        elif who in ASSISTANT:
            role = "assistant"
        else:
            raise DataError(field=f"{key}[{i}].from", expected="one of human, gpt, system", got=who)
        messages.append({"role": role, "content": value})
    if len(systems) == 1:
        meta["system"] = systems[0]
    elif systems:
        if not all(isinstance(x, str) for x in systems):
            raise DataError(field="system", expected="a string", got=obj["system"])
        meta["system"] = SYSTEM_SEP.join(systems)
    rid = obj.get("id")
    rec: dict[str, Any] = {
        "id": rid if isinstance(rid, str) and rid else fallback_id,
        "messages": messages,
    }
    for k in _OURS:
        if k in obj:
            rec[k] = obj[k]
    if meta:
        rec["meta"] = meta
    return rec


def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
    source = iter_json_array(path) if is_json_list(path) else iter_json_lines(path)
    yield from read_converted(path, source, _convert, opts)


class _Writer:
    def __init__(self, f: IO[str], opts: FormatOptions) -> None:
        self.f, self.json_list, self.first = f, opts.json_list, True
        if self.json_list:
            f.write("[\n")

    def write(self, dialogue: Dialogue) -> int:
        rec: dict[str, Any] = {"id": dialogue.id}
        if dialogue.meta.get("system"):
            rec["system"] = dialogue.meta["system"]
        rec["conversations"] = [
            {"from": "human" if m.role == "user" else "gpt", "value": m.content}
            for m in dialogue.messages
        ]
        full = dialogue.to_dict()
        for k in (*_OURS, "meta"):
            if k in full:
                rec[k] = full[k]
        if self.json_list:
            self.f.write(
                ("" if self.first else ",\n") + json.dumps(rec, ensure_ascii=False, allow_nan=False)
            )
        else:
            self.f.write(dumps(rec) + "\n")
        self.first = False
        return 1

    def close(self) -> None:
        if self.json_list:
            self.f.write("\n]\n")


def sniff(path: Path, head: str) -> bool:
    return '"conversations"' in head and ('"from"' in head or '"value"' in head)


FORMAT = Format(
    name="sharegpt",
    description="ShareGPT JSON/JSONL: {conversations: [{from, value}]}",
    read=read,
    sniff=sniff,
    writer=_Writer,
)
