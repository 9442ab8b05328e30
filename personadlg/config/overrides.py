"""Dotted `KEY=VALUE` overrides (`train.lr=3e-5`) applied to a parsed recipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from personadlg.config.yaml_io import load_yaml_text
from personadlg.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-5` → (["train", "lr"], "3e-5"). Values go through YAML, so `[a, b]`, `true`, `null` work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=3e-5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected a dotted key such as train.lr")
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except yaml.constructor.ConstructorError as err:
        raise ConfigError(f"override {text!r}: {err.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted KEY=VALUE overrides to a nested dict (in place) and return it."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(
                    f"override {text!r}: '{'.'.join(keys[: i + 1])}' is not a section"
                )
            node = nxt
        node[keys[-1]] = value
    return data
