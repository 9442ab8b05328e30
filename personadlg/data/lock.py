"""Exclusive locks on outputs: two runs never write one output directory or file at once.

An OS file lock (`flock`) on a small lock file next to the output, holding the owner's pid. The OS
releases it when the process dies (also on `kill -9`), so a stale lock never blocks a rerun; a
second run is refused at once (exit 2) naming the pid that holds the lock.

    with exclusive_lock(out_dir / ".lock", target=out_dir, what="train"):
        ...
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from personadlg.errors import UsageError


def lock_path_for(path: str | Path) -> Path:
    """The lock file of an output file: `.NAME.lock` in the same directory."""
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", errors="replace").strip()
        if text:
            return text.split()[0]
    return "unknown"


@contextlib.contextmanager
def exclusive_lock(lock_file: str | Path, *, target: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on LOCK_FILE for the block; UsageError if another process holds it.

    TARGET and WHAT only word the error ("runs/x is in use by another `train` (pid 123)").
    On platforms without `fcntl` the block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(lock_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder(fd)
            os.close(fd)
            raise UsageError(
                f"{target} is in use by another `{what}` (pid {pid}); wait for it to finish, or "
                "write somewhere else"
            ) from None
        # the holder before us may have unlinked the file between our open and our lock
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(sys.argv[:3])}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
