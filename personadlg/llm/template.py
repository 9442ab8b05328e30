"""Prompt templates: text with `$placeholders`, versioned by its hash (`sha256:<first 16 hex>`), so
an edited template makes new requests instead of silently reusing old replies."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from string import Template

from personadlg.errors import PersonadlgError, UsageError


def parse_template(
    text: str,
    *,
    where: str,
    placeholders: Sequence[str],
    error: type[PersonadlgError] = UsageError,
) -> tuple[Template, str]:
    """TEXT as a template, and its tag; ERROR naming WHERE when a placeholder is not one of PLACEHOLDERS."""
    unknown = {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)} - {
        None,
        *placeholders,
    }
    if unknown:
        raise error(
            f"{where}: unknown placeholder(s) {sorted(unknown)}; available: "
            + ", ".join("$" + n for n in placeholders)
        )
    return Template(text), "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def load_template(
    path: str | Path | None, *, default: Path, placeholders: Sequence[str]
) -> tuple[Template, str]:
    """The template file PATH (else DEFAULT) and its tag; only PLACEHOLDERS may appear (UsageError)."""
    p = Path(path) if path else default
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"template {p}: {err.strerror}") from None
    return parse_template(text, where=f"template {p}", placeholders=placeholders)
