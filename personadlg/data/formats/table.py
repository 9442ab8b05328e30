"""Tables as datasets are distributed: CSV, TSV and Parquet, mapped onto dialogues by column.

A column mapping (`FormatOptions.columns`, from `convert --column KEY=COLUMN`) says which column
holds what:

- `transcript=COL`: the conversation, one `Speaker: text` line per turn. `--assistant SPEAKER`
  names the personalized speaker (the other speakers become `user`); `--assistant both` writes each
  conversation once per speaker, both views sharing `meta.conversation`. Lines that do not start
  with a speaker continue the turn before them; lines before the first speaker belong to no one:
  they are counted (`unattributed_lines`) and reported, never silently dropped. A transcript
  without any `Speaker:` line rejects its row.
- `context=COL` and `response=COL`: one example per row; the context is one turn per line, the
  last one the user's (a `Speaker:` prefix, if any, is removed).
- `persona=COL`: the assistant's persona, one sentence per line (or a JSON list);
  `persona[SPEAKER]=COL` gives each speaker's persona for `--assistant both` (or SPEAKER's).
- `id=COL`, `user_id=COL`, `topic=COL`, `generation=COL` (a generated reply, for `eval`),
  `attributes.NAME=COL`, `profile.KEY=COL`, `meta.KEY=COL`.

A null cell (Parquet null, NaN), an empty cell and a blank one all mean "missing": optional
fields are left out, and a row whose transcript, context or response is missing is rejected, as
is a row whose every cell is empty (blank lines of a CSV are no rows). Each row becomes its
dialogues or one `Bad`, never part of them.

Parquet is read through pyarrow (`pip install pyarrow`), one record batch at a time; CSV and TSV
through the standard library, streaming. Rows are located as `FILE:LINE` (CSV/TSV: the line where
the row starts) or `FILE:ROW` (Parquet); a rejected row keeps its raw text (CSV/TSV: its lines as
written; Parquet: the row as JSON).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from personadlg.data.formats.base import (
    Format,
    FormatOptions,
    Item,
    Ok,
    bad,
    default_prefix,
    make_id,
    messages_from_turns,
    validate,
)
from personadlg.data.jsonl import MAX_LINE_BYTES, RAW_KEEP_CHARS, Bad
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


@dataclass(slots=True)
class _Row:
    """One row of a table: where it starts, its cells by column (None when malformed), its raw
    text, and what is wrong with it when it cannot be read."""

    line: int
    cells: dict[str, Any] | None
    raw: str
    problem: str = ""


_BAD_BYTE = re.compile("[\udc80-\udcff]")


def _check_header(names: list[str], used: set[str], path: Path, line: int | None) -> None:
    """A column the mapping uses must appear once: with two, which one is meant is unknown."""
    for col in dict.fromkeys(n for n in names if n in used):
        where = [i + 1 for i, n in enumerate(names) if n == col]
        if len(where) > 1:
            raise DataError(
                f"column {col!r} appears {len(where)} times in the header (columns "
                f"{', '.join(map(str, where[:-1]))} and {where[-1]}); --column cannot tell which "
                "is meant: rename one",
                path=str(path),
                line=line,
            )


def _rows_delimited(path: Path, delimiter: str, used: set[str]) -> Iterator[_Row]:
    """The rows of a CSV/TSV file, each with the exact text of its lines. Blank lines are no rows.

    The text is decoded with surrogate escapes so that an invalid UTF-8 byte spoils only its row.
    """
    csv.field_size_limit(min(sys.maxsize, MAX_LINE_BYTES))
    consumed: list[str] = []

    def lines(f: IO[str]) -> Iterator[str]:
        for text in f:
            consumed.append(text)
            yield text

    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(lines(f), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError("empty file: expected a header row", path=str(path)) from None
        except csv.Error as err:
            raise DataError(f"malformed header row: {err}", path=str(path), line=1) from None
        if _BAD_BYTE.search("".join(consumed)):
            raise DataError("header row: not valid UTF-8", path=str(path), line=1)
        _check_header(header, used, path, 1)
        start = reader.line_num + 1
        while True:
            consumed.clear()
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                problem = f"malformed row: {err}"
                row = None
            else:
                problem = ""
            raw = "".join(consumed).rstrip("\r\n")
            here, start = start, reader.line_num + 1
            if row is not None and (not row or (len(row) == 1 and not row[0].strip())):
                continue  # a blank line
            bad = _BAD_BYTE.search(raw)
            if bad:
                byte = ord(bad.group()) - 0xDC00
                offset = len(raw[: bad.start()].encode("utf-8", errors="surrogateescape"))
                problem = f"not valid UTF-8: byte 0x{byte:02x} at byte offset {offset} of the row"
                raw = raw.encode("utf-8", errors="surrogateescape").decode(
                    "utf-8", errors="replace"
                )
            elif row is not None and len(row) != len(header):
                problem = f"expected {len(header)} columns, got {len(row)}"
            raw = raw[:RAW_KEEP_CHARS]
            yield _Row(here, None if problem else dict(zip(header, row or ())), raw, problem)


def _rows_parquet(path: Path, used: set[str]) -> Iterator[_Row]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow, or personadlg[parquet])"
        ) from None

    def unreadable(err: Exception, after: int) -> DataError:
        where = f" after row {after}" if after else ""
        return DataError(f"not a readable Parquet file{where} ({err})", path=str(path))

    try:
        table = pq.ParquetFile(str(path))
        _check_header(list(table.schema_arrow.names), used, path, None)
        batches = table.iter_batches(batch_size=1024)
    except (pa.ArrowException, OSError) as err:
        raise unreadable(err, 0) from None
    n = 0
    while True:
        try:
            batch = next(batches, None)
            rows = [] if batch is None else batch.to_pylist()
        except (pa.ArrowException, OSError) as err:
            raise unreadable(err, n) from None
        if batch is None:
            return
        for row in rows:
            n += 1
            raw = json.dumps(row, ensure_ascii=False, default=str)[:RAW_KEEP_CHARS]
            yield _Row(n, row, raw)


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
            if isinstance(value, float) and not math.isfinite(value):
                raise DataError(field=col, expected="a finite number", got=value)
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


def _empty(value: Any) -> bool:
    """A null (None, NaN), empty or blank cell: all mean that the value is missing."""
    if isinstance(value, (list, tuple)):
        return not any(_text(v).strip() for v in value)
    return not _text(value).strip()


def _required(row: dict[str, Any], col: str, expected: str) -> None:
    """A cell the conversation needs: null, empty and blank alike reject the row."""
    value = row.get(col)
    if _empty(value):
        raise DataError(field=col, expected=expected, got=value)


def _conversation(
    row: dict[str, Any], columns: dict[str, str], assistant: str | None, counts: Counter[str]
) -> list[tuple[str, list[dict[str, str]]]]:
    """(speaker, messages) for each dialogue of a row ('' as the speaker in context/response mode)."""
    if "transcript" in columns:
        col = columns["transcript"]
        _required(row, col, "a transcript ('Speaker: text' lines)")
        turns = _turns(_text(row.get(col)), counts)
        if not turns:
            lines = [ln.strip() for ln in _text(row.get(col)).splitlines() if ln.strip()]
            raise DataError(
                field=col,
                expected="a transcript ('Speaker: text' lines)",
                got_text=f"{len(lines)} line(s) without a speaker, the first {lines[0][:40]!r}",
            )
        speakers = list(dict.fromkeys(s for s, _ in turns))
        views = speakers if assistant == "both" else [assistant or ""]
        return [(speaker, _messages(turns, speaker, counts)) for speaker in views]
    _required(row, columns["context"], "the context (one turn per line)")
    _required(row, columns["response"], "the response (non-empty text)")
    context = [
        m.group(2).strip() if (m := _SPEAKER.match(t)) and m.group(2).strip() else t
        for t in _lines(row.get(columns["context"]))
    ]
    response = _text(row.get(columns["response"])).strip()
    return [("", messages_from_turns(context, response))]


def read_table(path: Path, opts: FormatOptions, kind: str) -> Iterator[Item]:
    """Dialogues of a CSV / TSV / Parquet file under the column mapping of OPTS.

    Each row becomes its dialogues (two or more under `--assistant both`, the first counting the
    row) or one Bad: a row is converted or rejected as a whole.
    """
    columns, assistant = dict(opts.columns), opts.assistant
    check_columns(columns, assistant)
    name = str(path)
    used = set(columns.values())
    rows = (
        _rows_parquet(path, used)
        if kind == "parquet"
        else _rows_delimited(path, "\t" if kind == "tsv" else ",", used)
    )
    prefix = default_prefix(path, opts)
    personas = {m.group(1): col for key, col in columns.items() if (m := _PERSONA_OF.match(key))}
    n = 0
    for r in rows:
        n += 1
        line, row, raw = r.line, r.cells, r.raw
        if row is None:
            yield bad(name, line, raw, r.problem)
            continue
        missing = _missing(row, columns)
        if missing:
            raise DataError(missing, path=name, line=line)
        if all(_empty(v) for v in row.values()):
            yield bad(name, line, raw, "empty row: every cell is empty")
            continue
        counts: Counter[str] = Counter()
        try:
            views = _conversation(row, columns, assistant, counts)
            rec = _fields(row, columns)
        except DataError as err:
            yield Bad(name, line, raw, err.at(path=name, line=line))
            continue
        base = _text(row.get(columns["id"])).strip() if "id" in columns else ""
        generated = not base
        base = base or make_id(prefix, n)
        items: list[Item] = []
        for speaker, messages in views:
            d = {**rec, "id": base, "messages": messages}
            if "transcript" not in columns:
                if "persona" in columns:
                    d["persona"] = _lines(row.get(columns["persona"]))
                items.append(validate(d, name, line, raw, opts, generated_id=generated))
                continue
            if assistant == "both":
                d["id"] = f"{base}-{re.sub(r'[^0-9A-Za-z]+', '-', speaker).strip('-').lower()}"
                d["meta"] = {**d.get("meta", {}), "conversation": base, "speaker": speaker}
            col = personas.get(speaker) or (columns.get("persona") if assistant != "both" else None)
            if col is not None:
                d["persona"] = _lines(row.get(col))
            items.append(validate(d, name, line, raw, opts, generated_id=generated))
        failed = next((i for i in items if isinstance(i, Bad)), None)
        if failed is not None:
            yield failed
            continue
        if "transcript" in columns:
            counts["dialogues"] += len(items)
        opts.counters.update(counts)
        for i, item in enumerate(items):
            if isinstance(item, Ok) and i > 0:
                item.n_raw = 0  # the row is counted once, by its first dialogue
            yield item


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
    unit="rows",
    sniff=_sniff((".csv",)),
)
TSV = Format(
    name="tsv",
    description="tab-separated values with a header row, mapped by --column",
    read=_reader("tsv"),
    unit="rows",
    sniff=_sniff((".tsv", ".tab")),
)
PARQUET = Format(
    name="parquet",
    description="Parquet (pyarrow), mapped by --column",
    read=_reader("parquet"),
    unit="rows",
    sniff=_sniff((".parquet", ".pq")),
)
