"""CLV / MORPHEUS consistency data (`Person_Dialog_*.txt`, Toyhom/CLV and Toyhom/MORPHEUS).

Blocks separated by a line `[SEP]`, each of three lines: the persona sentences joined by "."
(no spaces), the context as `<|endoftext|>`-separated turns (just `<|endoftext|>` for the first
turn), and the response followed by `<|endoftext|>`. Consecutive blocks alternate between the two
speakers of a conversation; they are merged back into one dialogue per speaker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from personadlg.data.formats.base import (
    Format,
    FormatOptions,
    Item,
    TurnMerger,
    bad,
    default_prefix,
    split_persona,
)
from personadlg.data.jsonl import Bad, iter_text_lines

EOT = "<|endoftext|>"
SEP = "[SEP]"


def _turns(text: str) -> list[str]:
    return [t.strip() for t in text.replace("[SEP]", EOT).split(EOT) if t.strip()]


def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
    name = str(path)
    merger = TurnMerger(name, default_prefix(path, opts), opts)
    block: list[str] = []
    start: int | None = None

    def flush() -> Iterator[Item]:
        lines = [ln for ln in block if ln.strip()]
        raw = "\n".join(block)
        if len(lines) != 3:
            yield bad(
                name,
                start,
                raw,
                f"expected a block of 3 lines (persona, context, response), got {len(lines)}",
            )
            return
        persona = split_persona(lines[0], ".")
        response = _turns(lines[2])
        if len(response) != 1:
            yield bad(
                name,
                start,
                raw,
                f"expected one response on the third line, got {len(response)} turns",
            )
            return
        yield from merger.add(persona, _turns(lines[1]), response[0], start, raw)

    for item in iter_text_lines(path):
        if isinstance(item, Bad):
            yield item
            continue
        lineno, text = item
        if text.strip() == SEP:
            if block:
                yield from flush()
            block, start = [], None
            continue
        if start is None:
            if not text.strip():
                continue
            start = lineno
        block.append(text)
    if any(ln.strip() for ln in block):
        yield from flush()
    yield from merger.close()


def sniff(path: Path, head: str) -> bool:
    return EOT in head and ("\n[SEP]" in head or head.count("\n") <= 3)


FORMAT = Format(
    name="clv",
    description="CLV / MORPHEUS Person_Dialog text: 3-line blocks separated by [SEP]",
    read=read,
    sniff=sniff,
    unit="blocks",
)
