"""A model's identity: sha256 over its weight files' contents, cached next to them.

`weights_fingerprint(dir)` hashes every weight file under a model or checkpoint directory
(safetensors, and pickled weights where present), in sorted path order. Checkpoints store the
per-file hashes in `fingerprint.json` when they are written; a later call reuses an entry while
the file's size and modification time are unchanged, so identifying a large checkpoint costs a
few `stat` calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

FINGERPRINT_FILE = "fingerprint.json"
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth")
_NOT_WEIGHTS = ("optimizer", "scheduler", "rng_state", "training_args")


def weight_files(directory: Path) -> list[Path]:
    """Model weight files under DIRECTORY (recursively), sorted; training state files excluded."""
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.suffix in _WEIGHTS and not p.name.startswith(_NOT_WEIGHTS)
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 23), b""):
            h.update(block)
    return h.hexdigest()


def _cached(directory: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((directory / FINGERPRINT_FILE).read_text())
        if isinstance(data, dict) and isinstance(data.get("files"), dict):
            return data["files"]
    return {}


def weights_fingerprint(directory: str | Path, *, write_cache: bool = False) -> str:
    """`sha256:<hex>` of the weights under DIRECTORY (see module docstring); '' when it holds none.

    WRITE_CACHE: store the per-file hashes in DIRECTORY/fingerprint.json (checkpoint writers)."""
    root = Path(directory)
    cache = _cached(root)
    files: dict[str, dict[str, Any]] = {}
    total = hashlib.sha256()
    for path in weight_files(root):
        rel = path.relative_to(root).as_posix()
        st = os.stat(path)
        entry = cache.get(rel)
        if not (
            isinstance(entry, dict)
            and entry.get("size") == st.st_size
            and entry.get("mtime_ns") == st.st_mtime_ns
        ):
            entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(path)}
        files[rel] = entry
        total.update(f"{rel}\x00{entry['size']}\x00{entry['sha256']}\n".encode())
    if not files:
        return ""
    digest = "sha256:" + total.hexdigest()
    if write_cache:
        (root / FINGERPRINT_FILE).write_text(
            json.dumps({"sha256": digest, "files": files}, indent=2)
        )
    return digest


def short(fingerprint: str, n: int = 12) -> str:
    """`sha256:0123456789ab` — enough to tell two models apart in a signature or a message."""
    algo, _, hexdigest = fingerprint.partition(":")
    return f"{algo}:{hexdigest[:n]}" if hexdigest else fingerprint
