"""The only place that talks to the terminal: consoles, logging setup, progress bars, errors."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# When a stream is not a terminal (a pipe, a log file, CI), plain lines stay whole (soft wrap) and
# tables are laid out for PIPE_WIDTH columns (or $COLUMNS), wrapping long cells rather than running
# to hundreds of columns of box drawing.
PIPE_WIDTH = 120


def _width(stream: Any) -> int | None:
    """None (the terminal's own width) on a terminal; else $COLUMNS or PIPE_WIDTH."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) >= 40 else PIPE_WIDTH


out = Console(soft_wrap=True, highlight=False, width=_width(sys.stdout))
err = Console(stderr=True, soft_wrap=True, highlight=False, width=_width(sys.stderr))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Plain log lines to whatever `sys.stderr` is when a record is emitted (not the stream of
    the moment the handler was made, which a caller — a test runner — may have closed since)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(verbosity: int = 0) -> None:
    """INFO by default, DEBUG with -v, WARNING with -q. Rich handler on a terminal, plain lines otherwise."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    root = logging.getLogger("personadlg")
    root.setLevel(level)
    for h in list(root.handlers):
        root.removeHandler(h)
    if err.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=err, show_path=False, show_time=False, markup=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.propagate = False


_INTERRUPT_NOTE = ["outputs are written atomically, so nothing half-written was left behind"]


def set_interrupt_note(note: str) -> None:
    """What an interrupted command keeps and how to continue (the line after "interrupted;")."""
    _INTERRUPT_NOTE[0] = note


def interrupt_note() -> str:
    return _INTERRUPT_NOTE[0]


def error(message: str) -> None:
    from rich.markup import escape

    # the message is plain text: `pip install 'personadlg[minilm]'` must not be read as a style
    err.print(
        f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
    )


def print_json(obj: Any) -> None:
    """Machine-readable output: JSON on stdout and nothing else there."""
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def progress(
    description: str, total: float | None = None, unit: str = "records"
) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr when it is a terminal; a no-op callback otherwise.

    Yields `update(done, total=None)`, to be passed to library functions as `on_progress`.
    Shows the count, the rate (UNIT/s) and, once the total is known, a bar and the time left.
    """
    if not err.is_terminal:
        yield lambda done, total=None: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:,.1f} {unit}/s" if task.speed else "")

    columns: list[Any] = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(description, total=total)

        def update(done: float, total: float | None = None) -> None:
            if total:
                bar.update(task, completed=done, total=total)
            else:
                bar.update(task, completed=done)

        yield update


def table(
    title: str | None, columns: list[str], rows: list[list[Any]], *, justify_numbers: bool = True
) -> Table:
    """A rich table; columns whose values are all numbers are right-aligned."""
    t = Table(title=title, title_justify="left", header_style="bold")
    for i, c in enumerate(columns):
        numeric = justify_numbers and all(
            isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
            for r in rows
            if i < len(r) and r[i] is not None
        )
        t.add_column(c, justify="right" if numeric and rows else "left")
    for r in rows:  # cells are data, never rich markup: "[age: 20s]" prints as written
        t.add_row(*[v if isinstance(v, Text) else Text(fmt_value(v)) for v in r])
    return t


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if v is None:
        return "-"
    return str(v)
