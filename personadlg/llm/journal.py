"""The durable record of a run of requests: an append-only JSONL journal, one line per event.

Entries: `ok` (the job's result fields, attempts, cost), `failed` (error class and message),
`submitted` (the job waits in a batch) and `batch` / `batch-done` (a batch's id and units). The
last `ok` or `failed` entry of a job is its state (an `ok` is final); a torn last line (kill -9
during a write) is cut off when the journal is reopened. Every line is flushed at once, so a killed
process loses at most the job it was writing. Any other line that is not an entry (not JSON, not
UTF-8, no `status` or key) is a DataError naming the journal's FILE:LINE.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from personadlg.errors import DataError

logger = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"

_KEY_OF = {"ok": "unit", "failed": "unit", "submitted": "unit", "batch": "id", "batch-done": "id"}


class Locker(Protocol):
    """Holds an exclusive lock on LOCK_FILE for a block, refusing one held by another process (a
    UsageError naming TARGET, WHAT and its pid): `personadlg.data.lock.exclusive_lock`."""

    def __call__(
        self, lock_file: Path, *, target: Path, what: str
    ) -> AbstractContextManager[None]: ...


def _line(entry: dict[str, Any]) -> str:
    """One compact JSON line, UTF-8 kept readable (the format of every personadlg JSONL file)."""
    return json.dumps(entry, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


class Journal:
    """The journal in CACHE_DIR; held exclusively (LOCK, on `CACHE_DIR/.lock`) from opening until
    `close()`, so a second run on the same cache is refused naming the first one's pid (WHAT words
    the refusal). A context manager: leaving the block closes it."""

    def __init__(self, cache_dir: Path, *, what: str, lock: Locker) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock(cache_dir / ".lock", target=cache_dir, what=what)
        self._lock.__enter__()
        try:
            self._open(cache_dir)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def _open(self, cache_dir: Path) -> None:
        self.path = cache_dir / JOURNAL
        self.state: dict[str, str] = {}  # job key -> ok | failed | submitted
        self.batches: dict[str, dict[str, Any]] = {}
        self._repair()
        for entry in self._entries():
            self._apply(entry)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)
            logger.warning("%s: removed a torn last line left by an interrupted run", self.path)

    def _entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for n, raw in enumerate(f, 1):
                if raw.strip():
                    yield self._entry(raw, n)

    def _entry(self, raw: bytes, n: int) -> dict[str, Any]:
        """Line N of the journal as an entry; DataError at FILE:N when it is not one."""
        problem = None
        try:
            entry = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problem = "not valid UTF-8"
        except (ValueError, RecursionError) as err:  # json.JSONDecodeError included
            problem = f"not valid JSON ({err})"
        else:
            status = entry.get("status") if isinstance(entry, dict) else None
            key = _KEY_OF.get(status) if isinstance(status, str) else None
            if not isinstance(entry, dict):
                problem = "not a JSON object"
            elif key is None:
                problem = f"no known 'status' (one of {', '.join(_KEY_OF)})"
            elif not isinstance(entry.get(key), str):
                problem = f"a '{entry['status']}' entry without its '{key}'"
        if problem is None:
            return entry  # type: ignore[no-any-return]
        raise DataError(
            f"a corrupted journal entry: {problem}; remove this line (its request is sent again) "
            f"or the cache directory {self.path.parent} (every request is sent again)",
            path=str(self.path),
            line=n,
        )

    def _apply(self, entry: dict[str, Any]) -> None:
        status = entry["status"]
        if status == "batch":
            self.batches[entry["id"]] = entry
        elif status == "batch-done":
            self.batches.setdefault(entry["id"], {})["done"] = True
        elif status == "submitted":
            if self.state.get(entry["unit"]) != "ok":
                self.state[entry["unit"]] = "submitted"
        elif not (status == "failed" and self.state.get(entry["unit"]) == "ok"):  # ok is final
            self.state[entry["unit"]] = status

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry written so far, oldest first."""
        self._f.flush()
        return self._entries()

    def final(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each of KEYS with a result → its final entry: the first `ok` (ok is final), else the
        last `failed`; keys never answered are absent."""
        wanted = set(keys)
        out: dict[str, dict[str, Any]] = {}
        for entry in self.entries():
            key = entry.get("unit")
            if key not in wanted or entry["status"] not in ("ok", "failed"):
                continue
            if out.get(key, {}).get("status") != "ok":
                out[key] = entry
        return out

    def append(self, entry: dict[str, Any]) -> None:
        self._f.write(_line(entry) + "\n")
        self._f.flush()
        self._apply(entry)

    def close(self) -> None:
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        finally:
            self._lock.__exit__(None, None, None)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state (ok, failed, submitted)."""
        out: dict[str, int] = {}
        for s in self.state.values():
            out[s] = out.get(s, 0) + 1
        return out
