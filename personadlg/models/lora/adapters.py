"""The per-user adapters of a lora run: directory names and `adapters/index.json`.

    OUTPUT_DIR/adapters/<dir>/          one user's adapter, written by peft's save_pretrained
                                        (adapter_config.json + adapter_model.safetensors)
    OUTPUT_DIR/adapters/index.json      user id -> {dir, examples, steps, valid loss before/after,
                                        base fingerprint, ...}

A user id becomes its directory (and peft adapter) name as is when it is made of letters, digits,
`_` and `-` only; any other id gets a readable prefix and a hash suffix, so every id maps to one
distinct, safe name. The index is rewritten atomically (temp file, fsync, rename) under a file
lock after every finished user, so processes training users in parallel never lose an entry and a
crash leaves the last complete index.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ADAPTERS_DIR = "adapters"
INDEX_FILE = "index.json"
INDEX_VERSION = 1
_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RESERVED = ("__base__",)  # peft's name for "no adapter" rows of a mixed batch


def adapter_name(user_id: str) -> str:
    """USER_ID's adapter directory and peft adapter name (see the module docstring)."""
    if _SAFE.match(user_id) and user_id not in RESERVED:
        return user_id
    digest = hashlib.blake2b(user_id.encode(), digest_size=5).hexdigest()
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "_", user_id).strip("_")[:40]
    return f"{prefix}-{digest}" if prefix else f"user-{digest}"


def read_index(adapters_dir: str | Path) -> dict[str, Any]:
    """The index of ADAPTERS_DIR ({"version", "base", "lora", "users": {}} when there is none)."""
    path = Path(adapters_dir) / INDEX_FILE
    if not path.is_file():
        return {"version": INDEX_VERSION, "base": None, "lora": None, "users": {}}
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("users", {})
    return data


@contextlib.contextmanager
def index_lock(adapters_dir: str | Path) -> Iterator[None]:
    """Hold ADAPTERS_DIR's index lock (blocking; released on exit or when the process dies)."""
    d = Path(adapters_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".index.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def record_user(
    adapters_dir: str | Path,
    user_id: str,
    entry: dict[str, Any],
    *,
    base: dict[str, Any],
    lora: dict[str, Any],
) -> None:
    """Add or replace USER_ID's entry in the index, atomically and under the lock."""
    d = Path(adapters_dir)
    with index_lock(d):
        data = read_index(d)
        data["version"] = INDEX_VERSION
        data["base"] = base
        data["lora"] = lora
        data["users"][user_id] = entry
        data["users"] = dict(sorted(data["users"].items()))
        _write_atomic(d / INDEX_FILE, data)


def adapters_of(run_or_checkpoint: str | Path) -> Path:
    """The adapters directory of a lora run dir, or of a checkpoint inside one (RUN/final)."""
    p = Path(run_or_checkpoint)
    if (p / ADAPTERS_DIR).is_dir():
        return p / ADAPTERS_DIR
    return p.parent / ADAPTERS_DIR


def adapter_size(directory: str | Path) -> int:
    """Bytes on disk of one adapter directory."""
    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())
