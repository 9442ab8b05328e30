"""Per-target evaluation (`personadlg eval --by-target`): every metric per target attribute
combination, and its parts per attribute (the controllability matrix's cells, `matrix.py`).

Each metric is aggregated over the target's rows of the whole computation (so a model scores every
generation once); the metrics that look at the whole set (`SET_DEPENDENT`) are recomputed within
the target's rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from personadlg.data.attributes import target_key
from personadlg.metrics.base import Computed, EvalData
from personadlg.metrics.options import EvalOptions
from personadlg.metrics.score import compute_scores

SET_DEPENDENT = ("sbleu", "p-co", "p-co-lift")
"""Metrics whose value on a subset is not the subset of the whole computation."""


def _finite(v: float) -> float | None:
    return None if v != v or v in (float("inf"), float("-inf")) else round(v, 6)


def target_table(
    data: EvalData, prepared: dict[str, Computed], opts: EvalOptions
) -> dict[str, dict[str, Any]]:
    """{target key: {"n", metric: value, ..., "by_attribute"?}}, '(no target)' for untargeted rows."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(data.targets):
        groups[target_key(t)].append(i)
    again = [n for n in prepared if n in SET_DEPENDENT]
    table = {}
    for key in sorted(groups):
        rows = np.array(groups[key])
        values = {
            name: _finite(c.aggregate(rows))
            for name, c in prepared.items()
            if name not in SET_DEPENDENT
        }
        if again:
            sub_scores, _, _ = compute_scores(data.subset(groups[key]), again, opts, explicit=False)
            values.update({n: _finite(s.value) for n, s in sub_scores.items()})
        entry: dict[str, Any] = {"n": len(rows), **{n: values.get(n) for n in prepared}}
        parts = {n: c.breakdown(rows) for n, c in prepared.items() if c.breakdown is not None}
        if parts:
            entry["by_attribute"] = parts
        table[key or "(no target)"] = entry
    return table
