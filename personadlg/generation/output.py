"""A generation file and its sidecar: what `generate` wrote, with which model and settings.

`OUT` holds one JSON line per (example, target); `OUT.meta.json` says which checkpoint (path and
weights fingerprint), decoding settings, model overrides and input produced it. A rerun appends
only the missing pairs, and only when everything in the sidecar still matches; otherwise it is
refused with the differences listed (or `--overwrite` starts the file afresh).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from personadlg import __version__
from personadlg.data.attributes import target_key
from personadlg.data.jsonl import AtomicWriter
from personadlg.data.lock import exclusive_lock, lock_path_for
from personadlg.errors import DataError, UsageError
from personadlg.training.changes import flatten

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".meta.json"
COMPARED = (
    "checkpoint_sha256",
    "served_sha256",
    "method",
    "decoding",
    "model",
    "input_sha256",
    "turns",
)


def sidecar_path(out: str | Path) -> Path:
    p = Path(out)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_sidecar(out: Path) -> dict[str, Any] | None:
    path = sidecar_path(out)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(f"{path}: not a generate sidecar (unreadable JSON)") from None
    if not isinstance(data, dict) or data.get("written_by") != "personadlg generate":
        raise UsageError(f"{path}: not a sidecar written by personadlg generate")
    return data


def write_sidecar(out: Path, settings: dict[str, Any]) -> None:
    with AtomicWriter(sidecar_path(out)) as f:
        f.write(
            json.dumps(
                {"written_by": "personadlg generate", "version": __version__, **settings}, indent=2
            )
            + "\n"
        )


def differences(
    old: dict[str, Any], new: dict[str, Any], *, unknown: Sequence[str] = ()
) -> list[str]:
    """Human-readable `field: old -> new` for every compared setting that differs (UNKNOWN: keys
    not known yet, left out)."""
    out = []
    for key in COMPARED:
        if key in unknown:
            continue
        a, b = flatten(old.get(key), key), flatten(new.get(key), key)
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out.append(f"{k}: {a.get(k)!r} -> {b.get(k)!r}")
    return out


def check_resumable(out: Path, settings: dict[str, Any], *, unknown: Sequence[str] = ()) -> None:
    """Refuse to append to OUT unless it is empty/absent or an earlier output of the same settings
    (UNKNOWN: settings not known yet, e.g. before the model is loaded, not compared)."""
    has_data = out.is_file() and out.stat().st_size > 0
    old = read_sidecar(out)
    if old is None:
        if has_data:
            raise UsageError(
                f"--out {out}: the file exists and was not written by `personadlg generate` (no "
                f"{sidecar_path(out).name}); pass --overwrite to replace it, or choose another --out"
            )
        return
    diff = differences(old, settings, unknown=unknown)
    if diff and has_data:
        raise UsageError(
            f"--out {out} holds generations made with other settings, so appending would mix two runs: "
            + "; ".join(diff)
            + f" (checkpoint then: {old.get('checkpoint')}); pass --overwrite to start it afresh, "
            "or choose another --out"
        )


@contextmanager
def claimed(
    out: Path, settings: dict[str, Any], *, overwrite: bool, also: Sequence[Path] = ()
) -> Iterator[None]:
    """Hold OUT for the block (an exclusive lock; a second `generate` on it is refused), started
    afresh (OVERWRITE: OUT, its sidecar and ALSO removed) or checked to be resumable with SETTINGS,
    which its sidecar then records."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path_for(out), target=out, what="generate"):
        if overwrite:
            for p in (out, sidecar_path(out), *also):
                p.unlink(missing_ok=True)
        check_resumable(out, settings)
        write_sidecar(out, settings)
        yield


def done_keys(path: Path) -> set[tuple[str, str]]:
    """(example id, target key) pairs already in an output file; a torn last line is cut off."""
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
        logger.warning("%s: removed a partial last line left by an interrupted run", path)
        data = data[:cut]
    done = set()
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            done.add((rec["id"], target_key(rec.get("target_attributes"))))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(
                "not a generation record; --out must be a new file or an earlier output of this command",
                path=str(path),
                line=n,
            ) from None
    return done


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a generation file, in order."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


def file_sha256(path: Path) -> str:
    """`sha256:<hex>` of a file's bytes (the sidecar's `input_sha256`)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()
