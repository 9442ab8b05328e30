"""Attribute targets written on the command line: `language_style=lyrical,attitude=optimistic`."""

from __future__ import annotations

from personadlg.errors import UsageError


def parse_targets(text: str | None) -> dict[str, str]:
    """`language_style=lyrical,attitude=optimistic` → {"language_style": "lyrical", "attitude": "optimistic"}."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise UsageError(f"--attributes {text!r}: expected attr=aspect[,attr=aspect...]")
        out[k.strip()] = v.strip()
    return out


def target_key(target: dict[str, str] | None) -> str:
    """A stable name for a target combination: `attitude=optimistic,language_style=lyrical` ('' for none)."""
    return ",".join(f"{k}={v}" for k, v in sorted(target.items())) if target else ""
