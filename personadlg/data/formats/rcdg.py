"""RCDG line-aligned files (songhaoyu/RCDG `data/`): `per-SPLIT.txt`, `src-SPLIT.txt`, `tgt-SPLIT.txt`.

Line i of the three files belong together: the responder's persona sentences joined by `</s>`, the
partner's utterance, and the gold response. Consecutive lines with the same persona are turns of
one dialogue and are merged. INPUT may be any of the three files or their directory (`--split`).
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
    make_id,
    split_persona,
    validate,
)
from personadlg.data.jsonl import Bad, iter_text_lines
from personadlg.errors import DataError, UsageError

_NAME = re.compile(r"^(per|src|tgt)-(.+)\.txt$")


def files(path: Path, opts: FormatOptions) -> tuple[Path, Path, Path, str]:
    """(per, src, tgt, split) for INPUT: one of the files, or a directory plus `opts.split`."""
    if path.is_dir():
        split = opts.split
        base = path
    else:
        m = _NAME.match(path.name)
        if m is None:
            raise UsageError(
                f"{path}: RCDG input must be a per-/src-/tgt-SPLIT.txt file or their directory"
            )
        split, base = m.group(2), path.parent
    out = tuple(base / f"{kind}-{split}.txt" for kind in ("per", "src", "tgt"))
    for p in out:
        if not p.is_file():
            raise DataError(
                "RCDG file missing (per-, src- and tgt- files must sit together)", path=str(p)
            )
    return out[0], out[1], out[2], split


def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
    per, src, tgt, split = files(path, opts)
    name = str(per)
    prefix = opts.id_prefix or f"rcdg-{split}"
    state: dict[str, Any] | None = None
    count = 0

    def finish(s: dict[str, Any]) -> Item:
        nonlocal count
        count += 1
        rec = {
            "id": make_id(prefix, count),
            "messages": s["messages"],
            "persona": split_persona(s["per"], "</s>"),
        }
        return validate(rec, name, s["line"], "\n".join(s["raws"]), opts, n_raw=len(s["raws"]))

    streams = [iter_text_lines(p) for p in (per, src, tgt)]
    while True:
        rows = [next(s, None) for s in streams]
        if all(r is None for r in rows):
            break
        if any(r is None for r in rows):
            short = [p.name for p, r in zip((per, src, tgt), rows, strict=True) if r is None]
            raise DataError(
                f"{', '.join(short)} ended before the other RCDG files: the three files must have the same number of lines",
                path=name,
            )
        bads = [r for r in rows if isinstance(r, Bad)]
        lineno = bads[0].line if bads else rows[0][0]  # type: ignore[index]
        if bads:
            if state is not None:
                yield finish(state)
                state = None
            yield bads[0]
            continue
        p_text, s_text, t_text = (r[1] for r in rows)  # type: ignore[index]
        raw = f"{p_text}\t{s_text}\t{t_text}"
        turn = [
            {"role": "user", "content": s_text.strip()},
            {"role": "assistant", "content": t_text.strip()},
        ]
        if state is not None and opts.merge and state["per"] == p_text:
            state["messages"].extend(turn)
            state["raws"].append(raw)
            continue
        if state is not None:
            yield finish(state)
        state = {"per": p_text, "messages": turn, "line": lineno, "raws": [raw]}
    if state is not None:
        yield finish(state)


def sniff(path: Path, head: str) -> bool:
    if path.is_dir():
        return any(path.glob("per-*.txt"))
    return bool(_NAME.match(path.name))


FORMAT = Format(
    name="rcdg",
    description="RCDG line-aligned per-/src-/tgt- files",
    read=read,
    sniff=sniff,
    unit="lines",
)
