"""`personadlg convert`: read any supported format, write personadlg dialogues or an export format.

Every input record (the format's unit: table rows, JSONL lines, ParlAI episodes, ...) is accounted
for: it is converted, into one or more dialogues, or rejected with its location and reason, and the
summary's counts add up (`read == converted + rejected`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from personadlg.data.formats import (
    FormatOptions,
    detect_format,
    get_format,
    iter_items,
    writable_formats,
)
from personadlg.data.formats.base import Item, Ok, ends_input, records_of
from personadlg.data.jsonl import Bad, atomic_outputs, dumps
from personadlg.data.paths import check_outputs
from personadlg.data.unique import IdTracker
from personadlg.errors import DataError, UsageError
from personadlg.registry import FORMATS, did_you_mean

logger = logging.getLogger(__name__)

ON_ERROR = ("stop", "skip")
SHOWN_REJECTS = 20
"""How many rejected records the summary lists (all of them are in the rejects file)."""


def _units(items: Iterable[Item]) -> Iterator[Bad | list[Ok]]:
    """Group the items of one input record: a Bad, or its dialogues (the first counts the record)."""
    group: list[Ok] = []
    for item in items:
        if isinstance(item, Ok) and item.n_raw == 0 and group:
            group.append(item)
            continue
        if group:
            yield group
            group = []
        if isinstance(item, Bad):
            yield item
        else:
            group = [item]
    if group:
        yield group


def _take(stage: io.StringIO) -> str:
    text = stage.getvalue()
    stage.seek(0)
    stage.truncate()
    return text


def convert(
    input: str | Path,
    out: str | Path,
    *,
    fmt: str = "auto",
    to: str = "jsonl",
    options: FormatOptions | None = None,
    on_error: str = "stop",
    rejects: str | Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Convert INPUT (format FMT, 'auto' to detect) into OUT (format TO), atomically.

    Args:
        on_error: 'stop' raises at the first bad input record; 'skip' rejects it (counted in the
            summary, written to REJECTS) and goes on.
        rejects: with 'skip', a JSONL file of the rejected records, one object each: `source`
            (`FILE:LINE`), `line`, `row` (tables: the row number, header not counted), `reason`
            and `raw` (its input text), plus `records` when it stood for several merged input
            records. Written atomically together with OUT.
        on_progress: called with the number of dialogues converted so far.

    Returns:
        The summary: `read`, `converted`, `rejected` input records (of kind `unit`), `dialogues`,
        `assistant_messages`, `written` output records, `first_rejected` (the first few rejects,
        without their raw text), and `reader` notes (lines a table reader joined or dropped).

    Raises:
        DataError: at the first bad input record with 'stop', or a dialogue the output format
            cannot express; with 'skip' too where reading cannot go on (a JSON list broken in the
            middle, a missing column, misaligned RCDG files) and for repeated ids. OUT and
            REJECTS are then not written.
        UsageError: unknown formats, missing format options, a bad ON_ERROR, REJECTS without
            'skip'.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise UsageError(
            f"unknown input format '{fmt}'{did_you_mean(fmt, FORMATS.names())}; formats: {', '.join(FORMATS.names())}"
        )
    if on_error not in ON_ERROR:
        raise UsageError(f"--on-error {on_error!r}: expected one of {', '.join(ON_ERROR)}")
    if rejects is not None and on_error != "skip":
        raise UsageError(
            "--rejects only applies with --on-error skip (with stop the first bad record ends the run)"
        )
    name = detect_format(input) if fmt == "auto" else fmt
    writers = writable_formats()
    if to not in writers:
        raise UsageError(
            f"cannot write format '{to}'{did_you_mean(to, writers)}; output formats: {', '.join(writers)}"
        )
    out_path = Path(out)
    check_outputs({"--out": out_path, "--rejects": rejects}, {"input": input})
    opts = dataclasses.replace(
        options or FormatOptions(), json_list=out_path.suffix == ".json" or to == "morpheus"
    )
    writer_factory = get_format(to).writer
    assert writer_factory is not None
    summary: dict[str, Any] = {
        "input": str(input),
        "format": name,
        "to": to,
        "out": str(out_path),
        "rejects": None if rejects is None else str(rejects),
        "on_error": on_error,
        "unit": get_format(name).unit,
        "read": 0,
        "converted": 0,
        "rejected": 0,
        "dialogues": 0,
        "assistant_messages": 0,
        "written": 0,
        "first_rejected": [],
    }
    rows = summary["unit"] == "rows"
    ids = IdTracker()
    stage = io.StringIO()  # a dialogue's output, kept back until all of its record's are written

    def reject(bad: Bad, n: int, f_rej: IO[Any] | None) -> None:
        if on_error == "stop" or ends_input(bad):
            raise bad.error
        rec: dict[str, Any] = {"source": bad.source, "line": bad.line}
        if rows:  # a table's rows come one unit each, in order: this is the row's number
            rec["row"] = summary["read"] + 1
        rec["reason"] = bad.error.detail
        summary["read"] += n
        summary["rejected"] += n
        if len(summary["first_rejected"]) < SHOWN_REJECTS:
            summary["first_rejected"].append(dict(rec))
        logger.debug("rejected %s: %s", bad.source, bad.error.detail)
        if f_rej is not None:
            rec["raw"] = bad.raw
            if n != 1:
                rec["records"] = n
            f_rej.write(dumps(rec) + "\n")

    with atomic_outputs(out_path, rejects) as (f, f_rej):
        assert f is not None
        sink = writer_factory(stage, opts)
        f.write(_take(stage))
        for unit in _units(iter_items(input, name, opts)):
            if isinstance(unit, Bad):
                reject(unit, records_of(unit), f_rej)
                continue
            first, n = unit[0], sum(item.n_raw for item in unit)
            try:
                counts = [sink.write(item.dialogue) for item in unit]
            except DataError as err:
                _take(stage)
                located = err.at(path=first.path, line=first.line)
                raw = first.raw or dumps(first.dialogue.to_dict())
                reject(Bad(first.path, first.line, raw, located), n, f_rej)
                continue
            f.write(_take(stage))
            before = summary["dialogues"]
            for item, written in zip(unit, counts, strict=True):
                ids.add(item.dialogue.id, item.path, item.line)
                summary["written"] += written
                summary["dialogues"] += 1
                summary["assistant_messages"] += len(item.dialogue.assistant_messages)
            summary["read"] += n
            summary["converted"] += n
            if on_progress and summary["dialogues"] // 1000 > before // 1000:
                on_progress(summary["dialogues"])
        sink.close()
        f.write(_take(stage))
        ids.check()  # before the outputs are committed
    assert summary["read"] == summary["converted"] + summary["rejected"], summary
    summary["reader"] = {k: v for k, v in opts.counters.items() if k != "dialogues"}
    logger.debug(
        "converted %s (%s) -> %s (%s): %d %s read, %d converted into %d dialogues, %d rejected",
        input,
        name,
        out_path,
        to,
        summary["read"],
        summary["unit"],
        summary["converted"],
        summary["dialogues"],
        summary["rejected"],
    )
    return summary
