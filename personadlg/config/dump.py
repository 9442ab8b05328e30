"""Configs as plain data: nested dicts, YAML text, and the field rows of `ls methods --fields`."""

from __future__ import annotations

import enum
import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from personadlg.config.coercion import type_name


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) → plain YAML/JSON-safe data."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def dump_yaml(obj: Any) -> str:
    """YAML text for a config (dataclass or mapping), keys in declaration order."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def field_help(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each field of dataclass CLS: for `ls methods --fields`."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = to_dict(f.default_factory())
        else:
            default = "(required)"
        out.append((f.name, type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return out
