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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from personadlg.models.spec import Table

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


_NUMBERS = ("examples", "steps", "valid_loss_before", "valid_loss_after")
"""Fields every user's entry has (train_user writes them; `ls adapters` and the summary read them)."""


def read_index(adapters_dir: str | Path) -> dict[str, Any]:
    """The index of ADAPTERS_DIR ({"version", "base", "lora", "users": {}} when there is none).

    A damaged index (not UTF-8 JSON, not an object, `base` or `users` of the wrong type, a user's
    entry that is not an object, lacks a safe `dir` or a number of `_NUMBERS`) is a DataError
    naming the file and the entry."""
    from personadlg.errors import DataError

    path = Path(adapters_dir) / INDEX_FILE
    if not path.is_file():
        return {"version": INDEX_VERSION, "base": None, "lora": None, "users": {}}
    where = str(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text (byte {err.start})", path=where) from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"not JSON ({err.msg}, column {err.colno}); the index of the adapters is damaged",
            path=where,
            line=err.lineno,
        ) from None
    except (ValueError, RecursionError):
        raise DataError("not JSON; the index of the adapters is damaged", path=where) from None
    if not isinstance(data, dict):
        raise DataError(path=where, expected="a JSON object {version, base, lora, users}", got=data)
    for key in ("base", "lora"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise DataError(path=where, field=key, expected="an object or null", got=data[key])
    users = data.setdefault("users", {})
    if not isinstance(users, dict):
        raise DataError(path=where, field="users", expected="an object {user id: entry}", got=users)
    for uid, entry in users.items():
        field = f"users.{uid}"
        if not isinstance(entry, dict):
            raise DataError(
                path=where, field=field, expected="an object (the user's entry)", got=entry
            )
        name = entry.get("dir")
        if not isinstance(name, str) or not _SAFE.match(name):
            raise DataError(
                path=where,
                field=f"{field}.dir",
                expected="the adapter's directory name (letters, digits, _ and -)",
                got=name,
                got_text="nothing (no 'dir')" if "dir" not in entry else None,
            )
        for key in _NUMBERS:
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataError(
                    path=where,
                    field=f"{field}.{key}",
                    expected="a number",
                    got=value,
                    got_text=f"nothing (no '{key}')" if key not in entry else None,
                )
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


_EXPECTED = "a lora run dir (or its final/) whose stage users has run: RUN/adapters/index.json"


def _what_it_is(path: Path) -> str:
    """What PATH is, in words, for an error about what was expected instead."""
    import yaml

    if not path.exists():
        return "no such file or directory"
    if not path.is_dir():
        return "a file, not a directory"
    for cfg in (path / "config.yaml", path / "final" / "config.yaml"):
        if cfg.is_file():
            try:
                recipe = yaml.safe_load(cfg.read_text())
                method = recipe["method"]
            except (OSError, yaml.YAMLError, KeyError, TypeError):
                return f"a directory with an unreadable {cfg.name}"
            where = "a checkpoint" if cfg.parent == path else "a run"
            if method == "lora":
                return (
                    f"{where} of a lora run whose stage users has not run (no adapters/index.json)"
                )
            return f"{where} of method {method!r}, not lora"
    return "a directory that holds no personadlg run (no config.yaml, no final/)"


def _kib(size: Any) -> str:
    ok = isinstance(size, (int, float)) and not isinstance(size, bool)
    return f"{size / 1024:,.0f}" if ok else "?"


def list_adapters(run: Path) -> Table:
    """`personadlg ls adapters RUN`: one row per user of RUN's adapters/index.json."""
    from personadlg.errors import UsageError
    from personadlg.models.spec import Table

    adapters = adapters_of(run)
    if not (adapters / INDEX_FILE).is_file():
        raise UsageError(f"{run}: {_what_it_is(run)}; `ls adapters` expects {_EXPECTED}")
    index = read_index(adapters)
    users = index["users"]
    rows = [
        [
            uid,
            e["dir"],
            e["examples"],
            e["steps"],
            f"{e['valid_loss_before']:.4f}",
            f"{e['valid_loss_after']:.4f}",
            _kib(e.get("size_bytes")),
        ]
        for uid, e in users.items()
    ]
    base = index.get("base") or {}
    return Table(
        title=f"{len(users)} adapter(s) in {adapters} (base {base.get('ref', '?')})",
        columns=["user", "dir", "turns", "steps", "valid loss before", "after", "KiB"],
        rows=rows,
        data={"adapters": str(adapters), "base": index.get("base"), "users": users},
    )
