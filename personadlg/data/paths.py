"""Outputs never overwrite inputs or each other: one check every command runs before writing.

Paths are compared resolved (symlinks and `..` followed) and, where the file exists, by device and
inode, so a hard link or a bind-mounted alias is caught too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from personadlg.errors import UsageError

PathMap = Mapping[str, "str | Path | None"]


def _identity(path: Path) -> tuple[str, tuple[int, int] | None]:
    resolved = path.resolve(strict=False)
    try:
        st = os.stat(resolved)
        return str(resolved), (st.st_dev, st.st_ino)
    except OSError:
        return str(resolved), None


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when A and B name the same file (resolved path, or device and inode)."""
    pa, ia = _identity(Path(a))
    pb, ib = _identity(Path(b))
    return pa == pb or (ia is not None and ia == ib)


def check_writable_file(path: Path, name: str = "") -> None:
    """Refuse (exit 2) PATH as a file to write when it is a directory, or a device, FIFO or socket
    (an atomic rename would replace it by a regular file: as root, /dev/null itself). NAME: what
    the user calls it (`--out`)."""
    label = f"{name} {path}" if name else str(path)
    if path.is_dir():
        raise UsageError(f"{label}: is a directory; expected a file to write")
    if path.exists() and not path.is_file():
        raise UsageError(
            f"{label}: exists and is not a regular file (a device, a FIFO or a socket); "
            "expected a file to write"
        )


def check_outputs(outputs: PathMap, inputs: PathMap | None = None) -> None:
    """Refuse (exit 2) outputs that are directories, devices or FIFOs (a write would replace them by a
    regular file), the same file as another output, or an input.

    OUTPUTS and INPUTS map what the user calls each path (`--out`, `--rejects`, `input`) to the
    path; None entries are ignored. Input directories (e.g. an RCDG folder) are not compared.
    """
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    ins = [(name, Path(p)) for name, p in (inputs or {}).items() if p is not None]
    for name, path in outs:
        check_writable_file(path, name)
    for i, (name_a, a) in enumerate(outs):
        for name_b, b in outs[i + 1 :]:
            if same_file(a, b):
                raise UsageError(
                    f"{name_a} and {name_b} are the same file ({a}); each output needs a file of its own"
                )
        for name_in, src in ins:
            if not src.is_dir() and same_file(a, src):
                raise UsageError(
                    f"{name_a} {a} is also the input ({name_in}); writing it would destroy the input — "
                    "choose another output file"
                )
