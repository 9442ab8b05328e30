"""MORPHEUS generator data (Toyhom/MORPHEUS `data/*_datas_{en,zh}.json`).

A JSON list of `{"persona": [...], "context": [...], "response": "..."}`, one record per response,
spoken by the owner of `persona`. Consecutive records of one conversation are merged back into
dialogues (one per speaker), see `TurnMerger`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from personadlg.data.formats.base import Format, FormatOptions, Item, TurnMerger, default_prefix
from personadlg.data.jsonl import Bad, iter_json_array
from personadlg.data.schema import Dialogue
from personadlg.errors import DataError


def _check(obj: Any) -> tuple[list[str], list[str], str]:
    if not isinstance(obj, dict):
        raise DataError(expected="an object {persona, context, response}", got=obj)
    persona, context, response = obj.get("persona"), obj.get("context"), obj.get("response")
    if context is None:  # null, like a missing context, is the first turn's
        context = []
    if isinstance(persona, str):
        persona = [persona]
    if not isinstance(persona, list) or not all(isinstance(s, str) for s in persona):
        raise DataError(field="persona", expected="a list of strings", got=persona)
    if not isinstance(context, list) or not all(isinstance(s, str) for s in context):
        raise DataError(field="context", expected="a list of strings", got=context)
    if not isinstance(response, str):
        raise DataError(field="response", expected="a string", got=response)
    return persona, context, response


def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
    name = str(path)
    merger = TurnMerger(name, default_prefix(path, opts), opts)
    for item in iter_json_array(path):
        if isinstance(item, Bad):
            yield item
            continue
        line, raw, obj = item
        try:
            persona, context, response = _check(obj)
        except DataError as err:
            yield Bad(name, line, raw, err.at(path=name, line=line))
            continue
        yield from merger.add(persona, context, response, line, raw)
    yield from merger.close()


class _Writer:
    """One record per assistant message: its persona, all earlier messages as context, the message as response."""

    def __init__(self, f: IO[str], opts: FormatOptions) -> None:
        self.f = f
        self.first = True
        f.write("[\n")

    def write(self, dialogue: Dialogue) -> int:
        n = 0
        for i, m in enumerate(dialogue.messages):
            if m.role != "assistant":
                continue
            rec = {
                "persona": list(dialogue.persona),
                "context": [x.content for x in dialogue.messages[:i]],
                "response": m.content,
            }
            self.f.write(
                ("" if self.first else ",\n") + json.dumps(rec, ensure_ascii=False, allow_nan=False)
            )
            self.first = False
            n += 1
        return n

    def close(self) -> None:
        self.f.write("\n]\n")


def sniff(path: Path, head: str) -> bool:
    text = head.lstrip("\ufeff \t\r\n")
    return text.startswith("[") and '"response"' in head and '"context"' in head


FORMAT = Format(
    name="morpheus",
    description="MORPHEUS JSON list of {persona, context, response}",
    read=read,
    sniff=sniff,
    writer=_Writer,
)
