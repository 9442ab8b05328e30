"""personadlg's own JSONL: dialogue records or example records (README: Data format)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO

from personadlg.data.formats.base import Format, FormatOptions, Item, Ok, first_json_object
from personadlg.data.jsonl import Bad, dumps, iter_json_lines
from personadlg.data.schema import Dialogue, Example, expand_dialogue, record_kind
from personadlg.errors import DataError


def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
    """Dialogue records, one per line."""
    name = str(path)
    for item in iter_json_lines(path):
        if isinstance(item, Bad):
            yield item
            continue
        lineno, text, obj = item
        try:
            yield Ok(
                Dialogue.from_dict(obj, strict_roles=opts.strict_roles), name, lineno, raw=text
            )
        except DataError as err:
            yield Bad(name, lineno, text, err.at(path=name, line=lineno))


def iter_examples(
    path: Path | str, *, turns: str = "all", max_context_turns: int = 0
) -> Iterator[tuple[int, Example] | Bad]:
    """Example records from a file of example records, or expanded from a file of dialogue records.

    The record kind is decided by the first record and then enforced for every line.
    """
    name = str(path)
    kind = None
    for item in iter_json_lines(path):
        if isinstance(item, Bad):
            yield item
            continue
        lineno, text, obj = item
        if kind is None:
            kind = record_kind(obj) or "dialogue"
        try:
            if kind == "example":
                yield lineno, Example.from_dict(obj)
            else:
                for ex in expand_dialogue(
                    Dialogue.from_dict(obj), turns=turns, max_context_turns=max_context_turns
                ):
                    yield lineno, ex
        except DataError as err:
            yield Bad(name, lineno, text, err.at(path=name, line=lineno))


class _Writer:
    def __init__(self, f: IO[str], opts: FormatOptions) -> None:
        self.f = f

    def write(self, dialogue: Dialogue) -> int:
        self.f.write(dumps(dialogue.to_dict()) + "\n")
        return 1

    def close(self) -> None:
        pass


def sniff(path: Path, head: str) -> bool:
    obj = first_json_object(head)
    return obj is not None and (("messages" in obj and "id" in obj) or "context" in obj)


FORMAT = Format(
    name="jsonl",
    description="personadlg dialogue records, one JSON object per line",
    read=read,
    sniff=sniff,
    writer=_Writer,
)
