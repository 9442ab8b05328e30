"""Streaming JSONL reading with line numbers, and atomic writing.

Reading is constant-memory in the file size. Every line problem (invalid UTF-8, not JSON, a line
longer than the limit) becomes a `Bad` item that carries the raw text, so strict consumers can stop
with `FILE:LINE: ...` and `clean` can route the line to its rejects file instead.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from personadlg.data.paths import check_writable_file
from personadlg.errors import DataError, UsageError
from personadlg.json_values import (  # noqa: F401  (re-exported: the readers' API)
    WS,
    JsonValueError,
    Parser,
    check_json_value,
    parse_json,
)

logger = logging.getLogger(__name__)


def _env_bytes(name: str, default: int) -> int:
    """The environment variable NAME as a positive number of bytes (DEFAULT when unset)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit() or int(raw) < 1:
        raise UsageError(f"{name}: expected a number of bytes (at least 1), got {raw!r}")
    return int(raw)


MAX_LINE_BYTES = _env_bytes("PERSONADLG_MAX_LINE_BYTES", 16 * 1024 * 1024)
RAW_KEEP_CHARS = (
    100_000  # raw text kept for a rejected line (longer lines are truncated in the rejects file)
)
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class Bad:
    """An input unit that could not be read as a record: where it is, its raw text, and why."""

    path: str
    line: int | None
    raw: str
    error: DataError

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def iter_text_lines(
    path: str | Path, *, max_line_bytes: int | None = None
) -> Iterator[tuple[int, str] | Bad]:
    """Yield (line number, text without the newline) or Bad, for every line of a UTF-8 text file.

    Lines longer than `max_line_bytes` are skipped in constant memory and reported as Bad.
    """
    limit = max_line_bytes or MAX_LINE_BYTES
    name = str(path)
    with open(path, "rb") as f:
        lineno = 0
        while True:
            chunk = f.readline(limit + 1)
            if not chunk:
                break
            lineno += 1
            if lineno == 1 and chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
            if len(chunk) > limit and not chunk.endswith(b"\n"):
                total = len(chunk)
                while True:
                    more = f.readline(1 << 20)
                    total += len(more)
                    if not more or more.endswith(b"\n"):
                        break
                raw = chunk[:RAW_KEEP_CHARS].decode("utf-8", errors="replace")
                yield Bad(
                    name,
                    lineno,
                    raw,
                    DataError(
                        f"line is {_fmt_bytes(total)}, longer than the limit of {_fmt_bytes(limit)} "
                        "(set PERSONADLG_MAX_LINE_BYTES to raise it)",
                        path=name,
                        line=lineno,
                    ),
                )
                continue
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as err:
                raw = chunk[:RAW_KEEP_CHARS].decode("utf-8", errors="replace")
                bad = chunk[err.start : err.start + 1].hex()
                yield Bad(
                    name,
                    lineno,
                    raw.rstrip("\r\n"),
                    DataError(
                        f"not valid UTF-8: byte 0x{bad} at byte offset {err.start} of the line",
                        path=name,
                        line=lineno,
                    ),
                )
                continue
            yield lineno, text.rstrip("\r\n")


_BAD_BYTE = re.compile("[\udc80-\udcff]")  # an invalid UTF-8 byte, decoded with surrogateescape


def iter_json_lines(
    path: str | Path, *, max_line_bytes: int | None = None
) -> Iterator[tuple[int, str, Any] | Bad]:
    """Yield (line number, raw text, parsed JSON value) or Bad for each non-blank line of a JSONL file."""
    name = str(path)
    parser = Parser()
    for item in iter_text_lines(path, max_line_bytes=max_line_bytes):
        if isinstance(item, Bad):
            yield item
            continue
        lineno, text = item
        if not text.strip():
            continue
        try:
            value = parser.parse(text)
        except json.JSONDecodeError as err:
            yield Bad(
                name,
                lineno,
                text[:RAW_KEEP_CHARS],
                DataError(
                    f"not valid JSON: {err.msg} (column {err.colno})", path=name, line=lineno
                ),
            )
        except ValueError as err:
            yield Bad(
                name, lineno, text[:RAW_KEEP_CHARS], DataError(str(err), path=name, line=lineno)
            )
        except RecursionError:
            yield Bad(
                name,
                lineno,
                text[:RAW_KEEP_CHARS],
                DataError("not valid JSON: nested too deeply", path=name, line=lineno),
            )
        else:
            yield lineno, text, value


def _readable(text: str) -> str:
    """TEXT with its invalid UTF-8 bytes (surrogate escapes) shown as U+FFFD, fit to be written."""
    if not _BAD_BYTE.search(text):
        return text
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


def _shown(ch: str) -> str:
    """A character for an error message (an invalid UTF-8 byte as its hex value)."""
    if _BAD_BYTE.match(ch):
        return f"the byte 0x{ord(ch) - 0xDC00:02x} (not valid UTF-8)"
    return repr(ch)


def iter_json_array(
    path: str | Path, *, max_record_bytes: int | None = None
) -> Iterator[tuple[int, str, Any] | Bad]:
    """Stream the elements of a top-level JSON list: (line where the element starts, raw text, value) or Bad.

    Constant memory in the file size (one element at a time). An element that parses but cannot be
    kept (invalid UTF-8 inside a string, NaN, a number out of range, a lone surrogate escape) is
    one Bad and reading goes on. After a syntax error the rest of the file cannot be
    resynchronised, so it is reported as one Bad item and reading stops; anything but whitespace
    after the closing ']' is a DataError.
    """
    name = str(path)
    limit = max_record_bytes or MAX_LINE_BYTES
    parser = Parser()
    # surrogateescape: an invalid UTF-8 byte becomes one character, so it spoils only its element
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        buf, pos, eof = "", 0, False
        line, counted = 1, 0  # line number at buf[counted]

        def more() -> bool:
            nonlocal buf, pos, counted, eof, line
            if eof:
                return False
            chunk = f.read(1 << 20)
            if not chunk:
                eof = True
                return False
            if pos > (1 << 20):
                line += buf.count("\n", counted, pos)
                buf, counted, pos = buf[pos:], 0, 0
            buf += chunk
            return True

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in WS:
                    pos += 1
                if pos < len(buf) or not more():
                    return

        def line_at(p: int) -> int:
            nonlocal line, counted
            line += buf.count("\n", counted, p)
            counted = p
            return line

        def bad_byte(at: int) -> str:
            """Where the invalid UTF-8 byte buf[AT] is: its line and byte offset in that line."""
            bol = buf.rfind("\n", 0, at) + 1
            offset = len(buf[bol:at].encode("utf-8", errors="surrogateescape"))
            return (
                f"not valid UTF-8: byte 0x{ord(buf[at]) - 0xDC00:02x} "
                f"at byte offset {offset} of line {line_at(at)}"
            )

        skip_ws()
        if pos >= len(buf):
            raise DataError("empty file: expected a JSON list of records", path=name)
        if buf[pos] != "[":
            raise DataError(
                f"expected a JSON list ('['), got {_shown(buf[pos])}; is this a JSONL file?",
                path=name,
                line=line_at(pos),
            )
        pos += 1
        first = True
        while True:
            skip_ws()
            if pos >= len(buf):
                raise DataError(
                    "unexpected end of file inside the JSON list", path=name, line=line_at(pos)
                )
            if buf[pos] == "]":
                close = line_at(pos)
                pos += 1
                skip_ws()
                if pos < len(buf):
                    raise DataError(
                        f"unexpected content after the list's closing ] (line {close}), "
                        f"got {_shown(buf[pos])}; a JSON file holds one list",
                        path=name,
                        line=line_at(pos),
                    )
                return
            if not first:
                if buf[pos] != ",":
                    raise DataError(
                        f"expected ',' or ']' between list elements, got {_shown(buf[pos])}",
                        path=name,
                        line=line_at(pos),
                    )
                pos += 1
                skip_ws()
            first = False
            start_line = line_at(pos)
            while True:
                try:
                    value, end = parser.decode(buf, pos)
                    break
                except RecursionError:
                    raise DataError(
                        "not valid JSON: nested too deeply", path=name, line=start_line
                    ) from None
                except json.JSONDecodeError as err:
                    if (len(buf) - pos) < limit and more():
                        continue
                    if err.pos < len(buf) and _BAD_BYTE.match(buf[err.pos]):
                        why = bad_byte(err.pos)
                    else:
                        why = (
                            f"not valid JSON: {err.msg} "
                            f"(line {err.lineno - buf.count(chr(10), 0, pos)} of the element)"
                        )
                    yield Bad(
                        name,
                        start_line,
                        _readable(buf[pos : pos + RAW_KEEP_CHARS]),
                        DataError(
                            f"{why}; the rest of the file cannot be read",
                            path=name,
                            line=start_line,
                        ),
                    )
                    return
                except (
                    ValueError
                ) as err:  # not expected from the parser: the element's end is unknown
                    yield Bad(
                        name,
                        start_line,
                        _readable(buf[pos : pos + RAW_KEEP_CHARS]),
                        DataError(
                            f"{err}; the rest of the file cannot be read",
                            path=name,
                            line=start_line,
                        ),
                    )
                    return
            raw = buf[pos:end]
            m = _BAD_BYTE.search(raw)
            if m:
                why = bad_byte(pos + m.start())
                pos = end
                yield Bad(
                    name,
                    start_line,
                    _readable(raw[:RAW_KEEP_CHARS]),
                    DataError(
                        why,
                        path=name,
                        line=start_line,
                    ),
                )
                continue
            pos = end
            try:
                parser.check(raw, value)
            except ValueError as err:
                yield Bad(
                    name,
                    start_line,
                    raw[:RAW_KEEP_CHARS],
                    DataError(str(err), path=name, line=start_line),
                )
                continue
            yield start_line, raw, value


def check_nonempty(path: str | Path) -> None:
    """Raise DataError when PATH is missing, not a file, or holds no non-blank line."""
    p = Path(path)
    if not p.exists():
        raise DataError("no such file", path=str(path))
    if not p.is_file():
        raise DataError("not a file", path=str(path))
    with open(p, "rb") as f:
        while True:
            block = f.read(1 << 16)
            if not block:
                raise DataError("empty file: expected at least one record", path=str(path))
            if block.replace(_BOM, b"").strip():
                return


def dumps(obj: Any) -> str:
    """One compact JSON line (UTF-8 kept readable)."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


class AtomicWriter:
    """Write a file under a temporary name in the same directory; rename onto PATH only on success.

    An interrupted or failed write leaves any previous PATH untouched and no half-written file.
    """

    def __init__(self, path: str | Path, *, mode: str = "w") -> None:
        if str(path) in ("", ".") or not Path(path).name:
            raise UsageError(f"expected a file to write, got {str(path)!r}")
        self.path = Path(path)
        self.tmp = self.path.with_name(
            f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        )
        self.mode = mode
        self._f: IO[Any] | None = None

    def open(self) -> IO[Any]:
        check_writable_file(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        if "b" in self.mode:
            self._f = open(self.tmp, self.mode)  # noqa: SIM115
        else:
            self._f = open(self.tmp, self.mode, encoding="utf-8", newline="\n")  # noqa: SIM115
        return self._f

    def finish(self) -> None:
        """Flush, fsync and close the temporary file (where a full disk shows); abort on failure."""
        assert self._f is not None
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        except BaseException:
            self.abort()
            raise

    def publish(self) -> None:
        """Rename the finished temporary file onto PATH (and make the rename durable)."""
        try:
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        with contextlib.suppress(OSError):
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def commit(self) -> None:
        self.finish()
        self.publish()

    def abort(self) -> None:
        if self._f is not None and not self._f.closed:
            with contextlib.suppress(OSError):
                self._f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> IO[Any]:
        return self.open()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove PATH's temporary files left by writers that were killed (`kill -9`, a power cut):
    `.NAME.tmp-PID-*` whose process no longer runs. Returns what was removed."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.tmp-*-*"):
        pid = tmp.name[len(path.name) + 6 :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    if removed:
        logger.info("removed %d temporary file(s) of killed writers of %s", len(removed), path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process PID exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


@contextlib.contextmanager
def atomic_outputs(*paths: str | Path | None) -> Iterator[list[IO[Any] | None]]:
    """Open several outputs atomically; all are renamed into place together, or none (None paths give None).

    Every file is flushed and fsynced before the first rename, so a full disk or any other write
    failure leaves neither a partial output nor a temporary file behind."""
    writers = [AtomicWriter(p) if p is not None else None for p in paths]
    live = [w for w in writers if w is not None]
    handles: list[IO[Any] | None] = []
    try:
        for w in writers:
            handles.append(w.open() if w is not None else None)
        yield handles
        for w in live:
            w.finish()
    except BaseException:
        for w in live:
            w.abort()
        raise
    for i, w in enumerate(live):
        try:
            w.publish()
        except BaseException:
            for rest in live[i + 1 :]:
                rest.abort()
            raise


def write_jsonl(path: str | Path, records: Any) -> int:
    """Atomically write an iterable of dicts (or objects with `to_dict`) as JSONL; return the count."""
    n = 0
    with AtomicWriter(path) as f:
        for rec in records:
            f.write(dumps(rec.to_dict() if hasattr(rec, "to_dict") else rec) + "\n")
            n += 1
    return n
