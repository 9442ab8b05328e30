"""Checking that record ids are unique in constant memory per record (8-byte hashes in arrays)."""

from __future__ import annotations

import hashlib
from array import array

import numpy as np

from personadlg.errors import DataError


def id_key(rid: str) -> int:
    """Signed 64-bit hash of an id."""
    return int.from_bytes(
        hashlib.blake2b(rid.encode("utf-8"), digest_size=8).digest(), "little", signed=True
    )


class IdTracker:
    """Remember where each id was seen; `check()` raises for the first id used twice.

    Memory is 18 bytes per record, so a stream of any length can be checked at its end.
    """

    def __init__(self) -> None:
        self._keys = array("q")
        self._lines = array("q")
        self._files = array("H")
        self._paths: list[str] = []

    def add(self, rid: str, path: str, line: int | None) -> None:
        if not self._paths or self._paths[-1] != path:
            self._paths.append(path)
        self._keys.append(id_key(rid))
        self._lines.append(-1 if line is None else line)
        self._files.append(len(self._paths) - 1)

    def _where(self, i: int) -> tuple[str, int | None]:
        line = self._lines[i]
        return self._paths[self._files[i]], (None if line < 0 else line)

    def first_repeat(self) -> tuple[tuple[str, int | None], tuple[str, int | None]] | None:
        """Where the earliest repeated id was first seen and seen again, as (path, line) pairs;
        None when every id is unique."""
        keys = np.frombuffer(self._keys, dtype=np.int64)
        if len(keys) < 2:
            return None
        order = np.argsort(keys, kind="stable")
        k = keys[order]
        same = np.nonzero(k[1:] == k[:-1])[0]
        if len(same) == 0:
            return None
        later = order[same + 1]
        j = int(later.min())
        first = int(order[same[np.argmin(later)]])
        return self._where(first), self._where(j)

    def check(self) -> None:
        """Raise DataError at the second occurrence of the earliest repeated id."""
        repeat = self.first_repeat()
        if repeat is None:
            return
        (fpath, fline), (path, line) = repeat
        raise DataError(
            f"field 'id': this id is already used by the record at {where(fpath, fline)}; ids must be unique (run `personadlg clean`)",
            path=path,
            line=line,
        )


def where(path: str, line: int | None) -> str:
    """`PATH:LINE`, or PATH when the line is unknown."""
    return f"{path}:{line}" if line is not None else path
