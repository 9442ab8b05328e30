"""The controllability matrix: a by-target report's metric per target combination and attribute."""

from __future__ import annotations

from typing import Any


def controllability_matrix(
    report: dict[str, Any], metric: str = "personalization-acc"
) -> tuple[list[str], list[tuple[str, int, dict[str, float | None], float | None]]]:
    """(attributes, rows) of a by-target eval report: per target combination, METRIC for each
    targeted attribute and their mean: [(target, n, {attribute: value}, mean)]."""
    table = report.get("by_target") or {}
    attrs: list[str] = sorted(
        {a for row in table.values() for a in (row.get("by_attribute", {}).get(metric) or {})}
    )
    rows = []
    for key, row in table.items():
        parts = row.get("by_attribute", {}).get(metric)
        if not parts:
            continue
        rows.append((key, int(row["n"]), {a: parts.get(a) for a in attrs}, row.get(metric)))
    return attrs, rows
