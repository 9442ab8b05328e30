"""`key=value` pairs written on the command line: attribute targets (`language_style=lyrical,attitude=optimistic`), profiles."""

from __future__ import annotations

from typing import Any

from personadlg.errors import UsageError


def parse_pairs(text: str | None, *, option: str, shape: str) -> dict[str, str]:
    """`a=x,b=y` → {"a": "x", "b": "y"}; a malformed TEXT names OPTION and the expected SHAPE."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise UsageError(f"{option} {text!r}: expected {shape}")
        out[k.strip()] = v.strip()
    return out


def format_pairs(pairs: dict[str, Any]) -> str:
    """{"a": "x", "b": "y"} → `a=x, b=y` (what `parse_pairs` reads, for display)."""
    return ", ".join(f"{k}={v}" for k, v in pairs.items())


def parse_targets(text: str | None) -> dict[str, str]:
    """`language_style=lyrical,attitude=optimistic` → {"language_style": "lyrical", "attitude": "optimistic"}."""
    return parse_pairs(text, option="--attributes", shape="attr=aspect[,attr=aspect...]")


def target_key(target: dict[str, str] | None) -> str:
    """A stable name for a target combination: `attitude=optimistic,language_style=lyrical` ('' for none)."""
    return ",".join(f"{k}={v}" for k, v in sorted(target.items())) if target else ""
