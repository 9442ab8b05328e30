"""Where a run keeps its journal and its failures, beside its output."""

from __future__ import annotations

from pathlib import Path


def beside(output: str | Path, suffix: str) -> Path:
    """`OUT.jsonl` → `OUT<SUFFIX>` in the same directory (`.failed.jsonl`, `.report.json`)."""
    p = Path(output)
    return p.with_name(p.name.removesuffix(".jsonl") + suffix)


def failed_file(output: str | Path) -> Path:
    """`OUT.jsonl` → `OUT.failed.jsonl`, beside the output."""
    return beside(output, ".failed.jsonl")


def cache_dir(output: str | Path, configured: str | Path | None = None) -> Path:
    """CONFIGURED (a recipe's `cache_dir`), else `OUT.jsonl.cache/` beside the output."""
    if configured:
        return Path(configured)
    p = Path(output)
    return p.with_name(p.name + ".cache")
