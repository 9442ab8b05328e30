"""ParlAI FbDialog text (e.g. ConvAI2 `valid_self_original_no_cands.txt`).

Lines are `N text[\\tlabels[\\treward[\\tcandidates]]]`; N restarts at 1 for each episode.
`N your persona: ...` lines give the responder's persona (the assistant); `partner's persona:` lines
are kept in `meta.partner_persona`. In each turn line the text is the partner's utterance (user) and
the first label the responder's reply (assistant). `__SILENCE__` marks a turn the partner did not
speak. An episode with a malformed line is rejected whole, with all its lines as raw text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from personadlg.data.formats.base import (
    Format,
    FormatOptions,
    Item,
    bad,
    default_prefix,
    make_id,
    validate,
)
from personadlg.data.jsonl import Bad, iter_text_lines

_LINE = re.compile(r"^(\d+) (.*)$", re.S)
_YOUR = "your persona:"
_PARTNER = "partner's persona:"
SILENCE = "__SILENCE__"


class _Episode:
    def __init__(self, line: int) -> None:
        self.line = line
        self.raws: list[str] = []
        self.persona: list[str] = []
        self.partner: list[str] = []
        self.messages: list[dict[str, str]] = []
        self.error: str | None = None
        self.error_line: int | None = None
        """The line of the episode's first problem (what FILE:LINE names)."""

    def fail(self, line: int | None, error: str) -> None:
        if self.error is None:
            self.error = f"{error} (the episode from line {self.line} is rejected whole)"
            self.error_line = line

    def add(self, body: str) -> None:
        text, _, rest = body.partition("\t")
        labels = rest.split("\t", 1)[0] if rest else ""
        parts = text.split("\\n")
        kept = []
        for part in parts:
            low = part.strip()
            if low.startswith(_YOUR):
                self.persona.append(low[len(_YOUR) :].strip())
            elif low.startswith(_PARTNER):
                self.partner.append(low[len(_PARTNER) :].strip())
            else:
                kept.append(part)
        utterance = "\n".join(kept).strip()
        if not rest and not utterance:
            return  # a persona-only line
        if utterance and utterance != SILENCE:
            self.messages.append({"role": "user", "content": utterance})
        if rest:
            reply = labels.split("|", 1)[0].strip()
            self.messages.append({"role": "assistant", "content": reply})


def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
    name = str(path)
    prefix = default_prefix(path, opts)
    ep: _Episode | None = None
    prev_n = 0
    count = 0

    def finish(e: _Episode) -> Item:
        nonlocal count
        count += 1
        raw = "\n".join(e.raws)
        if e.error:
            return bad(name, e.error_line or e.line, raw, e.error)
        rec: dict[str, Any] = {
            "id": make_id(prefix, count),
            "messages": e.messages,
            "persona": e.persona,
        }
        if e.partner:
            rec["meta"] = {"partner_persona": e.partner}
        return validate(rec, name, e.line, raw, opts)

    for item in iter_text_lines(path):
        if isinstance(item, Bad):
            if ep is not None:
                ep.fail(item.line, item.error.detail)
                ep.raws.append(item.raw)
            else:
                yield item
            continue
        lineno, text = item
        if not text.strip():
            continue
        m = _LINE.match(text)
        if m is None:
            if ep is None:
                ep = _Episode(lineno)
            ep.raws.append(text)
            ep.fail(lineno, f"expected 'N text' with a turn number N, got {text[:40]!r}")
            continue
        n = int(m.group(1))
        if ep is None or n <= prev_n:
            if ep is not None:
                yield finish(ep)
            ep = _Episode(lineno)
        prev_n = n
        ep.raws.append(text)
        ep.add(m.group(2))
    if ep is not None:
        yield finish(ep)


def sniff(path: Path, head: str) -> bool:
    first = next((ln for ln in head.splitlines() if ln.strip()), "")
    return bool(re.match(r"^1 \S", first)) and not first.lstrip().startswith(("{", "["))


FORMAT = Format(
    name="parlai",
    description="ParlAI FbDialog text (ConvAI2 *_self_original_no_cands.txt)",
    read=read,
    sniff=sniff,
    unit="episodes",
)
