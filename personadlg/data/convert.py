"""`personadlg convert`: read any supported format, write personadlg dialogues or an export format."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from personadlg.data.formats import (
    FormatOptions,
    detect_format,
    get_format,
    iter_items,
    writable_formats,
)
from personadlg.data.jsonl import AtomicWriter, Bad
from personadlg.data.paths import check_outputs
from personadlg.data.unique import IdTracker
from personadlg.errors import DataError, UsageError
from personadlg.registry import FORMATS, did_you_mean

logger = logging.getLogger(__name__)


def convert(
    input: str | Path,
    out: str | Path,
    *,
    fmt: str = "auto",
    to: str = "jsonl",
    options: FormatOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Convert INPUT (format FMT, 'auto' to detect) into OUT (format TO), atomically.

    Raises:
        DataError: at the first bad input record or a dialogue the output format cannot express;
            OUT is then not written.
        UsageError: unknown formats or missing format options.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise UsageError(
            f"unknown input format '{fmt}'{did_you_mean(fmt, FORMATS.names())}; formats: {', '.join(FORMATS.names())}"
        )
    name = detect_format(input) if fmt == "auto" else fmt
    writers = writable_formats()
    if to not in writers:
        raise UsageError(
            f"cannot write format '{to}'{did_you_mean(to, writers)}; output formats: {', '.join(writers)}"
        )
    out_path = Path(out)
    check_outputs({"--out": out_path}, {"input": input})
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
        "raw_records": 0,
        "dialogues": 0,
        "assistant_messages": 0,
        "written": 0,
    }
    ids = IdTracker()
    with AtomicWriter(out_path) as f:
        sink = writer_factory(f, opts)
        for item in iter_items(input, name, opts):
            if isinstance(item, Bad):
                raise item.error
            d = item.dialogue
            ids.add(d.id, item.path, item.line)
            try:
                summary["written"] += sink.write(d)
            except DataError as err:
                raise err.at(path=item.path, line=item.line) from None
            summary["dialogues"] += 1
            summary["raw_records"] += item.n_raw
            summary["assistant_messages"] += len(d.assistant_messages)
            if on_progress and summary["dialogues"] % 1000 == 0:
                on_progress(summary["dialogues"])
        sink.close()
        ids.check()  # before the output is committed
    summary["reader"] = {k: v for k, v in opts.counters.items() if k != "dialogues"}
    logger.debug(
        "converted %s (%s) -> %s (%s): %d dialogues",
        input,
        name,
        out_path,
        to,
        summary["dialogues"],
    )
    return summary
