"""Streaming JSONL reading with line numbers, and atomic writing.

Reading is constant-memory in the file size. Every line problem (invalid UTF-8, not JSON, a line
longer than the limit) becomes a `Bad` item that carries the raw text, so strict consumers can stop
with `FILE:LINE: ...` and `clean` can route the line to its rejects file instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from personadlg.errors import DataError, UsageError

MAX_LINE_BYTES = int(os.environ.get("PERSONADLG_MAX_LINE_BYTES", 16 * 1024 * 1024))
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


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


def _lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in any string of VALUE (JSON escapes can encode them; UTF-8 cannot)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            m = _SURROGATE.search(v)
            if m:
                return m.group()
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def check_json_value(raw: str, value: Any) -> None:
    """Raise ValueError when VALUE (parsed from RAW) holds text that cannot be written as UTF-8."""
    if "\\u" in raw and _SURROGATE_ESCAPE.search(raw):
        bad = _lone_surrogate(value)
        if bad is not None:
            raise ValueError(
                f"not valid Unicode: the escape \\u{ord(bad):04x} is a lone surrogate, which no UTF-8 text can hold"
            )


def parse_json(text: str) -> Any:
    """json.loads that refuses NaN / Infinity and lone surrogate escapes (ValueError)."""
    value = json.loads(text, parse_constant=_no_constants)
    check_json_value(text, value)
    return value


def iter_json_lines(
    path: str | Path, *, max_line_bytes: int | None = None
) -> Iterator[tuple[int, str, Any] | Bad]:
    """Yield (line number, raw text, parsed JSON value) or Bad for each non-blank line of a JSONL file."""
    name = str(path)
    for item in iter_text_lines(path, max_line_bytes=max_line_bytes):
        if isinstance(item, Bad):
            yield item
            continue
        lineno, text = item
        if not text.strip():
            continue
        try:
            value = parse_json(text)
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


_WS = " \t\r\n"


def iter_json_array(
    path: str | Path, *, max_record_bytes: int | None = None
) -> Iterator[tuple[int, str, Any] | Bad]:
    """Stream the elements of a top-level JSON list: (line where the element starts, raw text, value) or Bad.

    Constant memory in the file size (one element at a time). After a syntax error the rest of the
    file cannot be resynchronised, so it is reported as one Bad item and reading stops.
    """
    name = str(path)
    limit = max_record_bytes or MAX_LINE_BYTES
    decoder = json.JSONDecoder(parse_constant=_no_constants)
    with open(path, encoding="utf-8-sig", errors="strict") as f:
        buf, pos, eof = "", 0, False
        line, counted = 1, 0  # line number at buf[counted]

        def more() -> bool:
            nonlocal buf, pos, counted, eof, line
            if eof:
                return False
            try:
                chunk = f.read(1 << 20)
            except UnicodeDecodeError as err:
                raise DataError(f"not valid UTF-8 ({err.reason})", path=name) from None
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
                while pos < len(buf) and buf[pos] in _WS:
                    pos += 1
                if pos < len(buf) or not more():
                    return

        def line_at(p: int) -> int:
            nonlocal line, counted
            line += buf.count("\n", counted, p)
            counted = p
            return line

        skip_ws()
        if pos >= len(buf):
            raise DataError("empty file: expected a JSON list of records", path=name)
        if buf[pos] != "[":
            raise DataError(
                f"expected a JSON list ('['), got {buf[pos]!r}; is this a JSONL file?",
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
                return
            if not first:
                if buf[pos] != ",":
                    raise DataError(
                        f"expected ',' or ']' between list elements, got {buf[pos]!r}",
                        path=name,
                        line=line_at(pos),
                    )
                pos += 1
                skip_ws()
            first = False
            start_line = line_at(pos)
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    break
                except RecursionError:
                    raise DataError(
                        "not valid JSON: nested too deeply", path=name, line=start_line
                    ) from None
                except json.JSONDecodeError as err:
                    if (len(buf) - pos) < limit and more():
                        continue
                    raw = buf[pos : pos + RAW_KEEP_CHARS]
                    yield Bad(
                        name,
                        start_line,
                        raw,
                        DataError(
                            f"not valid JSON: {err.msg} (line {err.lineno - buf.count(chr(10), 0, pos)} of the element); "
                            "the rest of the file cannot be read",
                            path=name,
                            line=start_line,
                        ),
                    )
                    return
                except ValueError as err:  # NaN / Infinity: the element's end is unknown
                    yield Bad(
                        name,
                        start_line,
                        buf[pos : pos + RAW_KEEP_CHARS],
                        DataError(
                            f"{err}; the rest of the file cannot be read",
                            path=name,
                            line=start_line,
                        ),
                    )
                    return
            raw = buf[pos:end]
            pos = end
            try:
                check_json_value(raw, value)
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
        self.path = Path(path)
        self.tmp = self.path.with_name(
            f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        )
        self.mode = mode
        self._f: IO[Any] | None = None

    def open(self) -> IO[Any]:
        if self.path.is_dir():
            raise UsageError(f"{self.path}: is a directory; expected a file to write")
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
