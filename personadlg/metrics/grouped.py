"""Per-group evaluation (`personadlg eval --by user`): every metric per group, and the macro
average over groups next to the usual overall (micro) value.

A group's value is its metric on the group's records alone: corpus statistics of the generations
(corpus BLEU, Dist-n, PPL) over the group's corpus, means of per-example statistics over its
records, and self-BLEU against the group's other generations (recomputed per group; undefined for
a group of one). P-Co's idf and the other personas of the lifts' controls are properties of the
evaluated set and come from the whole file: within one user they would be degenerate (one persona,
no other persona to compare against).

The macro average weighs every group the same. Records without the field (no `user_id`) form the
group "(no user)", which is reported but never averaged; groups with fewer than `min_records`
records are reported but left out of the macro average. The macro average's 95% interval is the
percentile bootstrap over resampled groups (clusters: a group's records move together), computed
by `base.interval_ci` on the per-group values, and the difference of two systems' macro averages
resamples the same groups for both (`base.paired_difference`), paired by group key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from personadlg.errors import UsageError
from personadlg.metrics.base import (
    Computed,
    EvalData,
    Score,
    interval_ci,
    mean_computed,
    paired_difference,
)
from personadlg.metrics.catalog import make_metric
from personadlg.metrics.options import EvalOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grouping:
    """A field `eval --by` can group records by."""

    name: str
    """The `--by` value, e.g. 'user'."""
    plural: str
    record_field: str
    """The record field the groups come from, e.g. 'user_id'."""
    missing: str
    """The group of records without the field (reported, never in the macro average)."""
    keys: Callable[[EvalData], list[str | None]]


GROUPINGS: dict[str, Grouping] = {
    "user": Grouping(
        name="user",
        plural="users",
        record_field="user_id",
        missing="(no user)",
        keys=lambda data: list(data.users),
    ),
}

RECOMPUTED_PER_GROUP = ("sbleu",)
"""Metrics recomputed on each group's records (the others aggregate the whole set's statistics
over the group's rows, which gives the same number)."""


def check_by(by: str) -> Grouping:
    """The grouping named BY, or a UsageError naming the allowed values."""
    grouping = GROUPINGS.get(by)
    if grouping is None:
        raise UsageError(f"--by {by!r}: expected one of {', '.join(GROUPINGS)}")
    return grouping


def check_min_records(min_records: int) -> None:
    if min_records < 1:
        raise UsageError(f"--min-user-records: expected at least 1, got {min_records}")


def check_grouping(by: str | None, min_records: int) -> Grouping | None:
    """The grouping of `--by BY` (None without one), its minimum group size checked."""
    if by is None:
        return None
    grouping = check_by(by)
    check_min_records(min_records)
    return grouping


@dataclass
class GroupTable:
    """Every metric on every group of an evaluated set."""

    by: str
    keys: list[str]
    """Group labels: the sorted field values, then the missing-field group (if any)."""
    sizes: np.ndarray
    in_macro: np.ndarray
    """Per group: whether it counts in the macro average."""
    excluded: dict[str, str]
    """Group label → why it is left out of the macro average."""
    min_records: int
    values: dict[str, np.ndarray] = field(default_factory=dict)
    """Metric → its value on each group (NaN where undefined)."""

    def macro_values(self, name: str) -> dict[str, float]:
        """{group: value} of METRIC over the groups in the macro average with a finite value."""
        v = self.values[name]
        return {
            k: float(v[g])
            for g, k in enumerate(self.keys)
            if self.in_macro[g] and np.isfinite(v[g])
        }


def group_rows(data: EvalData, grouping: Grouping) -> tuple[list[str], list[list[int]], bool]:
    """(labels, rows of each group, whether the last group is the missing-field one)."""
    rows: dict[str, list[int]] = {}
    missing: list[int] = []
    for i, key in enumerate(grouping.keys(data)):
        if key is None:
            missing.append(i)
        elif key == grouping.missing:
            raise UsageError(
                f"--by {grouping.name}: a record's {grouping.record_field} is {key!r}, the name of "
                f"the group of records without {grouping.record_field}"
            )
        else:
            rows.setdefault(key, []).append(i)
    labels = sorted(rows)
    out = [rows[k] for k in labels]
    if missing:
        labels.append(grouping.missing)
        out.append(missing)
    return labels, out, bool(missing)


def _recompute(name: str, data: EvalData, rows: list[int], opts: EvalOptions) -> float:
    if name == "sbleu" and len(rows) < 2:
        return float("nan")  # no other generation of the group to compare against
    try:
        return float(make_metric(name, opts).compute(data.subset(rows)).aggregate(None))
    except ValueError:
        return float("nan")


def score_groups(
    data: EvalData,
    prepared: dict[str, Computed],
    opts: EvalOptions,
    *,
    by: str = "user",
    min_records: int = 1,
) -> GroupTable:
    """Every prepared metric on every group of DATA (see the module docstring)."""
    grouping = check_by(by)
    check_min_records(min_records)
    labels, rows, has_missing = group_rows(data, grouping)
    sizes = np.array([len(r) for r in rows], dtype=np.int64)
    in_macro = sizes >= min_records
    excluded: dict[str, str] = {}
    for g, label in enumerate(labels):
        records = f"{sizes[g]:,} record" + ("" if sizes[g] == 1 else "s")
        if has_missing and g == len(labels) - 1:
            in_macro[g] = False
            excluded[label] = f"{records} without {grouping.record_field}"
        elif not in_macro[g]:
            excluded[label] = f"{records}, fewer than --min-user-records {min_records}"
    table = GroupTable(
        by=by,
        keys=labels,
        sizes=sizes,
        in_macro=in_macro,
        excluded=excluded,
        min_records=min_records,
    )
    for name, computed in prepared.items():
        if name in RECOMPUTED_PER_GROUP:
            v = [_recompute(name, data, r, opts) for r in rows]
        else:
            v = [float(computed.aggregate(np.array(r, dtype=np.int64))) for r in rows]
        table.values[name] = np.array(v, dtype=float)
    logger.info(
        "by %s: %d %s, %d in the macro average",
        by,
        len(labels) - int(has_missing),
        grouping.plural,
        int(in_macro.sum()),
    )
    if not in_macro.any():
        logger.warning(
            "by %s: no %s with %s and %d or more records; no macro average",
            by,
            grouping.name,
            grouping.record_field,
            min_records,
        )
    return table


def _signature(base: str, table: GroupTable) -> str:
    """BASE (`...|v:<version>`) with `by:<field>` (and `min-records:N` when N > 1) before the version."""
    head, sep, version = base.rpartition("|v:")
    extra = f"|by:{table.by}" + (
        f"|min-records:{table.min_records}" if table.min_records > 1 else ""
    )
    return f"{head}{extra}{sep}{version}" if sep else base + extra


def _round(v: float) -> float | None:
    return round(v, 6) if np.isfinite(v) else None


def _per_group(values: dict[str, float]) -> Computed:
    v = np.array(list(values.values()), dtype=float)
    return mean_computed(v, scale=1.0, n=len(v))


def macro_report(
    table: GroupTable,
    scores: dict[str, Score],
    prepared: dict[str, Computed],
    opts: EvalOptions,
) -> dict[str, Any]:
    """{metric: {value, low, high, users, signature, ...}}: the macro average over the groups in the
    macro average, with its 95% group-bootstrap interval when --bootstrap asks for one."""
    out: dict[str, Any] = {}
    label = GROUPINGS[table.by].plural
    for name, score in scores.items():
        values = table.macro_values(name)
        computed = _per_group(values)
        value = computed.aggregate(None)
        entry: dict[str, Any] = {"value": _round(value), "low": None, "high": None}
        samples = opts.bootstrap or prepared[name].default_replicates
        ci = interval_ci(computed, len(values), samples, opts.seed) if samples else None
        if ci is not None:
            (lo, hi), method = ci
            entry.update(
                low=round(lo, 6), high=round(hi, 6), ci95_method=f"{method}:clusters={table.by}"
            )
        entry[label] = len(values)
        entry["signature"] = _signature(score.signature, table)
        entry["higher_is_better"] = score.higher_is_better
        out[name] = entry
    return out


def group_report(table: GroupTable) -> dict[str, Any]:
    """{group: {"n": records, "in_macro": bool, metric: value, ...}} (None where undefined)."""
    return {
        key: {
            "n": int(table.sizes[g]),
            "in_macro": bool(table.in_macro[g]),
            **{name: _round(float(v[g])) for name, v in table.values.items()},
        }
        for g, key in enumerate(table.keys)
    }


def grouping_report(table: GroupTable) -> dict[str, Any]:
    """How the groups were formed and which are left out of the macro average (and why)."""
    grouping = GROUPINGS[table.by]
    missing = grouping.missing in table.keys
    return {
        "by": table.by,
        "field": grouping.record_field,
        grouping.plural: len(table.keys) - int(missing),
        "records_without_field": int(table.sizes[-1]) if missing else 0,
        "in_macro": int(table.in_macro.sum()),
        "min_records": table.min_records,
        "macro": f"mean over {grouping.plural} (each {grouping.name} weighs the same)",
        "excluded": dict(table.excluded),
    }


def add_group_sections(
    report: dict[str, Any],
    table: GroupTable,
    scores: dict[str, Score],
    prepared: dict[str, Computed],
    opts: EvalOptions,
) -> None:
    """Put `grouping`, `by_<field>` and `macro` into REPORT."""
    report["grouping"] = grouping_report(table)
    report[f"by_{table.by}"] = group_report(table)
    report["macro"] = macro_report(table, scores, prepared, opts)


def check_same_groups(systems: Sequence[tuple[str, EvalData]], grouping: Grouping) -> None:
    """Systems compared by group must put every example in the same group (rows already aligned by id)."""
    base_path, base = systems[0]
    base_keys = grouping.keys(base)
    for path, data in systems[1:]:
        for rid, a, b in zip(base.ids, base_keys, grouping.keys(data)):
            if a != b:
                raise UsageError(
                    f"--compare --by {grouping.name}: example {rid!r} has {grouping.record_field} "
                    f"{a!r} in {base_path} but {b!r} in {path}"
                )


def paired_macro_difference(
    a: GroupTable, b: GroupTable, *, samples: int, seed: int = 0
) -> dict[str, Any]:
    """{metric: {diff, ci95, p, method, users}}: A's macro average minus B's over the groups both
    average (paired by group key), with a paired bootstrap over resampled groups."""
    out: dict[str, Any] = {}
    label = GROUPINGS[a.by].plural
    for name in a.values:
        if name not in b.values:
            continue
        va, vb = a.macro_values(name), b.macro_values(name)
        common = [k for k in va if k in vb]
        d = paired_difference(
            _per_group({k: va[k] for k in common}),
            _per_group({k: vb[k] for k in common}),
            len(common),
            samples,
            seed,
        )
        if d is None:
            logger.info(
                "by %s: no paired difference of %s macro averages: %d %s in both, 4 needed",
                a.by,
                name,
                len(common),
                label,
            )
            continue
        d["method"] = f"{d['method']}:clusters={a.by}"
        d[label] = len(common)
        out[name] = d
    return out
