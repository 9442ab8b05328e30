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
    """TEXT as a template, and its tag; ERROR naming WHERE when TEXT is empty, holds a `$` that
    starts no placeholder (with its line and column) or a placeholder not one of PLACEHOLDERS."""
    if not text.strip():
        raise error(f"{where}: the template is empty; write the prompt, with its $placeholders")
    matches = list(Template.pattern.finditer(text))
    bad = next((m for m in matches if m.group("invalid") is not None), None)
    if bad is not None:
        i = bad.start()  # the `$`
        line, col = text.count("\n", 0, i) + 1, i - (text.rfind("\n", 0, i) + 1) + 1
        raise error(
            f"{where}: invalid placeholder at line {line}, col {col} "
            f"({text[i : i + 12].splitlines()[0]!r}): a placeholder is $name or ${{name}}; "
            "write $$ for a literal $"
        )
    unknown = {m.group("named") or m.group("braced") for m in matches} - {None, *placeholders}
    if unknown:
        raise error(
            f"{where}: unknown placeholder(s) {sorted(unknown)}; available: "
            + ", ".join("$" + n for n in placeholders)
        )
    return Template(text), "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def load_template(
    path: str | Path | None, *, default: Path, placeholders: Sequence[str]
) -> tuple[Template, str]:
    """The template file PATH (else DEFAULT) and its tag; UsageError naming the file when it cannot
    be read, is not UTF-8, or is not a valid template (`parse_template`)."""
    p = Path(path) if path else default
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"template {p}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        line = p.read_bytes()[: err.start].count(b"\n") + 1
        raise UsageError(
            f"template {p}: not valid UTF-8 (byte 0x{err.object[err.start]:02x} on line {line}); "
            "save the file as UTF-8"
        ) from None
    return parse_template(text, where=f"template {p}", placeholders=placeholders)
