"""Tables as datasets are distributed: CSV, TSV and Parquet, mapped onto dialogues by column.

A column mapping (`FormatOptions.columns`, from `convert --column KEY=COLUMN`) says which column
holds what:

- `transcript=COL`: the conversation, one `Speaker: text` line per turn. `--assistant SPEAKER`
  names the personalized speaker (the other speakers become `user`); `--assistant both` writes each
  conversation once per speaker, both views sharing `meta.conversation`. Lines that do not start
  with a speaker continue the turn before them; lines before the first speaker belong to no one:
  they are counted (`unattributed_lines`) and reported, never silently dropped.
- `context=COL` and `response=COL`: one example per row; the context is one turn per line, the
  last one the user's (a `Speaker:` prefix, if any, is removed).
- `persona=COL`: the assistant's persona, one sentence per line (or a JSON list);
  `persona[SPEAKER]=COL` gives each speaker's persona for `--assistant both` (or SPEAKER's).
- `id=COL`, `user_id=COL`, `topic=COL`, `generation=COL` (a generated reply, for `eval`),
  `attributes.NAME=COL`, `profile.KEY=COL`, `meta.KEY=COL`.

Parquet is read through pyarrow (`pip install pyarrow`), one record batch at a time; CSV and TSV
through the standard library, streaming. Rows are located as `FILE:LINE` (CSV/TSV: the line where
the row starts) or `FILE:ROW` (Parquet).
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections import Counter
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
    messages_from_turns,
    validate,
)
from personadlg.data.jsonl import MAX_LINE_BYTES
from personadlg.errors import DataError, UsageError

PLAIN_KEYS = (
    "transcript",
    "context",
    "response",
    "persona",
    "id",
    "user_id",
    "topic",
    "generation",
)
PREFIXED = ("attributes.", "profile.", "meta.")
_SPEAKER = re.compile(r"^\s*([^:\n]{1,40}?)\s*:\s?(.*)$")
_PERSONA_OF = re.compile(r"^persona\[(.+)\]$")


def check_columns(columns: dict[str, str], assistant: str | None) -> None:
    """The mapping must name a conversation (transcript, or context + response), known keys only."""
    for key in columns:
        if key in PLAIN_KEYS or key.startswith(PREFIXED) or _PERSONA_OF.match(key):
            continue
        raise UsageError(
            f"--column {key}=...: unknown key; expected one of {', '.join(PLAIN_KEYS)}, "
            "persona[SPEAKER], attributes.NAME, profile.KEY or meta.KEY"
        )
    if "transcript" in columns:
        if not assistant:
            raise UsageError(
                "--column transcript=... needs --assistant SPEAKER (the personalized speaker, "
                'e.g. --assistant "User 2") or --assistant both'
            )
    elif not ("context" in columns and "response" in columns):
        raise UsageError(
            "a table needs --column transcript=COLUMN (with --assistant SPEAKER), or both "
            "--column context=COLUMN and --column response=COLUMN"
        )
    elif assistant:
        raise UsageError(
            "--assistant only applies with --column transcript=COLUMN (in a context/response "
            "table the response is the assistant's)"
        )


def _rows_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line where the row starts, row or None when malformed, raw text) for a CSV/TSV file."""
    csv.field_size_limit(min(sys.maxsize, MAX_LINE_BYTES))
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError("empty file: expected a header row", path=str(path)) from None
        start = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield start, None, f"malformed row: {err}"
                start = reader.line_num + 1
                continue
            if row and any(c.strip() for c in row):
                if len(row) != len(header):
                    yield start, None, f"expected {len(header)} columns, got {len(row)}"
                else:
                    yield start, dict(zip(header, row)), ""
            start = reader.line_num + 1


def _rows_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow, or personadlg[parquet])"
        ) from None
    n = 0
    for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            n += 1
            yield n, row, ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # a missing cell read as NaN
        return ""
    return str(value)


def _lines(value: Any) -> list[str]:
    """A cell as a list of lines: a list (Parquet), a JSON list, or newline-separated text."""
    if isinstance(value, (list, tuple)):
        return [_text(v).strip() for v in value if _text(v).strip()]
    text = _text(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return [x.strip() for x in parsed if x.strip()]
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _turns(text: str, counts: Counter[str]) -> list[tuple[str, str]]:
    """(speaker, text) turns of a transcript; continuation lines join the turn before them."""
    turns: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _SPEAKER.match(line)
        if m and m.group(2).strip():
            turns.append((m.group(1).strip(), m.group(2).strip()))
        elif turns:
            speaker, prev = turns[-1]
            turns[-1] = (speaker, f"{prev}\n{line.strip()}")
            counts["continuation_lines"] += 1
        else:
            counts["unattributed_lines"] += 1
    return turns


def _messages(
    turns: list[tuple[str, str]], assistant: str, counts: Counter[str]
) -> list[dict[str, str]]:
    """Turns as chat messages from ASSISTANT's side; consecutive turns of one role are merged."""
    out: list[dict[str, str]] = []
    for speaker, text in turns:
        role = "assistant" if speaker.casefold() == assistant.casefold() else "user"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n" + text
            counts["merged_turns"] += 1
        else:
            out.append({"role": role, "content": text})
    return out


def _fields(row: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """The record fields other than the conversation and personas, from their columns."""
    rec: dict[str, Any] = {}
    for key, col in columns.items():
        value = row.get(col)
        if key == "generation" or (
            key in ("user_id", "topic") and _text(value).strip()
        ):  # an empty generation is still one
            rec[key] = _text(value).strip()
        elif key.startswith(PREFIXED) and _text(value).strip():
            section, name = key.split(".", 1)
            rec.setdefault(section, {})[name] = (
                value if isinstance(value, (int, float, bool)) else _text(value).strip()
            )
    return rec


def _missing(row: dict[str, Any], columns: dict[str, str]) -> str | None:
    absent = [c for c in columns.values() if c not in row]
    if absent:
        return f"no column {absent[0]!r} (columns: {', '.join(map(repr, row))})"
    return None


def read_table(path: Path, opts: FormatOptions, kind: str) -> Iterator[Item]:
    """Dialogues of a CSV / TSV / Parquet file under the column mapping of OPTS."""
    columns, assistant = dict(opts.columns), opts.assistant
    check_columns(columns, assistant)
    name = str(path)
    rows = (
        _rows_parquet(path)
        if kind == "parquet"
        else _rows_delimited(path, "\t" if kind == "tsv" else ",")
    )
    prefix = default_prefix(path, opts)
    counts = opts.counters
    personas = {m.group(1): col for key, col in columns.items() if (m := _PERSONA_OF.match(key))}
    n = 0
    for line, row, problem in rows:
        n += 1
        if row is None:
            yield bad(name, line, "", problem)
            continue
        raw = json.dumps(row, ensure_ascii=False, default=str)[:100_000]
        missing = _missing(row, columns)
        if missing:
            raise DataError(missing, path=name, line=line)
        base = _text(row.get(columns["id"])).strip() if "id" in columns else ""
        base = base or make_id(prefix, n)
        rec = _fields(row, columns)
        if "transcript" in columns:
            turns = _turns(_text(row.get(columns["transcript"])), counts)
            speakers = list(dict.fromkeys(s for s, _ in turns))
            views = speakers if assistant == "both" else [assistant or ""]
            for speaker in views:
                d = dict(rec)
                d["id"] = (
                    f"{base}-{re.sub(r'[^0-9A-Za-z]+', '-', speaker).strip('-').lower()}"
                    if assistant == "both"
                    else base
                )
                d["messages"] = _messages(turns, speaker, counts)
                col = personas.get(speaker) or (
                    columns.get("persona") if assistant != "both" else None
                )
                if col is not None:
                    d["persona"] = _lines(row.get(col))
                if assistant == "both":
                    d["meta"] = {**d.get("meta", {}), "conversation": base, "speaker": speaker}
                counts["dialogues"] += 1
                yield validate(d, name, line, raw, opts)
        else:
            context = [
                m.group(2).strip() if (m := _SPEAKER.match(t)) and m.group(2).strip() else t
                for t in _lines(row.get(columns["context"]))
            ]
            response = _text(row.get(columns["response"])).strip()
            d = {**rec, "id": base, "messages": messages_from_turns(context, response)}
            if "persona" in columns:
                d["persona"] = _lines(row.get(columns["persona"]))
            yield validate(d, name, line, raw, opts)


def _reader(kind: str):  # type: ignore[no-untyped-def]
    def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
        yield from read_table(path, opts, kind)

    return read


def _sniff(suffixes: tuple[str, ...]):  # type: ignore[no-untyped-def]
    def sniff(path: Path, head: str) -> bool:
        return path.suffix.lower() in suffixes

    return sniff


CSV = Format(
    name="csv",
    description="CSV with a header row, mapped by --column (transcript, context/response, persona, ...)",
    read=_reader("csv"),
    sniff=_sniff((".csv",)),
)
TSV = Format(
    name="tsv",
    description="tab-separated values with a header row, mapped by --column",
    read=_reader("tsv"),
    sniff=_sniff((".tsv", ".tab")),
)
PARQUET = Format(
    name="parquet",
    description="Parquet (pyarrow), mapped by --column",
    read=_reader("parquet"),
    sniff=_sniff((".parquet", ".pq")),
)
