"""The durable record of a synthesis run: an append-only JSONL journal, one line per event.

Entries: `ok` (the dialogue record, usage, cost, attempts), `failed` (error class and message),
`submitted` (the unit waits in a batch) and `batch` (a batch's id and units). The last `ok` or
`failed` entry of a unit is its state; a torn last line (kill -9 during a write) is cut off when
the journal is reopened. Every line is flushed at once, so a killed process loses at most the unit
it was writing; the output file is rewritten atomically from the journal.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from personadlg.data.jsonl import atomic_outputs, dumps
from personadlg.data.lock import exclusive_lock

logger = logging.getLogger(__name__)

JOURNAL = "journal.jsonl"


class Journal:
    """The journal of one output; held exclusively (an OS lock) from opening until `close()`,
    so a second synth on the same output is refused naming the first one's pid."""

    def __init__(self, cache_dir: Path, *, what: str = "synth") -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._lock = exclusive_lock(cache_dir / ".lock", target=cache_dir, what=what)
        self._lock.__enter__()
        try:
            self._open(cache_dir)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def _open(self, cache_dir: Path) -> None:
        self.path = cache_dir / JOURNAL
        self.state: dict[str, str] = {}  # unit key -> ok | failed | submitted
        self.batches: dict[str, dict[str, Any]] = {}
        self._repair()
        for entry in self._entries():
            self._apply(entry)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

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
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

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
        self._f.write(dumps(entry) + "\n")
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
        out: dict[str, int] = {}
        for s in self.state.values():
            out[s] = out.get(s, 0) + 1
        return out

    def write_outputs(self, output: Path, failed: Path) -> tuple[int, int]:
        """Rewrite OUTPUT (dialogue records of units whose state is ok) and FAILED, atomically; return their sizes."""
        self._f.flush()
        ok_written: set[str] = set()
        failed_last: dict[str, dict[str, Any]] = {}
        with atomic_outputs(output, failed) as (f_ok, f_fail):
            assert f_ok is not None and f_fail is not None
            for entry in self._entries():
                unit = str(entry.get("unit", ""))
                if entry["status"] == "ok" and unit not in ok_written:
                    f_ok.write(dumps(entry["record"]) + "\n")
                    ok_written.add(unit)
                elif entry["status"] == "failed" and self.state.get(unit) == "failed":
                    failed_last[unit] = entry
            for entry in failed_last.values():
                f_fail.write(dumps({k: v for k, v in entry.items() if k != "status"}) + "\n")
        return len(ok_written), len(failed_last)
