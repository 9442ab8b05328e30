"""Metric plumbing: the evaluated columns, a computed metric, scores with signatures and intervals.

A metric is prepared once on the whole set (per-example statistics first), then aggregated: over
all examples for the value, over resampled examples for a 95% interval. Every number carries a
signature saying exactly how it was computed (`signature`; the README's metric table lists them).

Intervals use a method valid for the metric (`Computed.interval`):
- `bootstrap` (means of per-example statistics, corpus BLEU): the percentile interval of the
  metric over resamples of the examples with replacement;
- `half-sampling` (corpus-level statistics that duplicates would bias, Dist-n and self-BLEU): the
  delete-d jackknife with d = n/2 — the metric on random halves drawn without replacement, whose
  variance times b/(n-b) estimates the full set's — and a normal interval around the estimate.
`paired_difference` gives the same for the difference of two systems on the same examples, with
a two-sided p-value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from personadlg import __version__
from personadlg.intervals import Z95


@dataclass
class EvalData:
    """Columns of an evaluated set, one row per generation."""

    generations: list[str]
    references: list[str | None] = field(default_factory=list)
    personas: list[list[str]] = field(default_factory=list)
    contexts: list[list[dict[str, str]]] = field(default_factory=list)
    targets: list[dict[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    users: list[str | None] = field(default_factory=list)
    """The record's `user_id` (None when it has none): the groups of `eval --by user`."""
    profiles: list[dict[str, Any]] = field(default_factory=list)
    """The record's `profile` (key: value; empty when it has none): what judge-persona is shown."""

    def __post_init__(self) -> None:
        n = len(self.generations)
        self.references = self.references or [None] * n
        self.personas = self.personas or [[] for _ in range(n)]
        self.contexts = self.contexts or [[] for _ in range(n)]
        self.targets = self.targets or [{} for _ in range(n)]
        self.ids = self.ids or [str(i) for i in range(n)]
        self.users = self.users or [None] * n
        self.profiles = self.profiles or [{} for _ in range(n)]
        for name in ("references", "personas", "contexts", "targets", "ids", "users", "profiles"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: {len(getattr(self, name))} values for {n} generations")

    def __len__(self) -> int:
        return len(self.generations)

    def tokenized(
        self, column: str, tokenize: Callable[[str], list[str]], key: str
    ) -> list[list[str]]:
        """COLUMN ('generations' or 'references') tokenized once per tokenizer KEY and shared by every metric."""
        cache = self.__dict__.setdefault("_tokens", {})
        if (column, key) not in cache:
            cache[(column, key)] = [tokenize(t or "") for t in getattr(self, column)]
        return cache[(column, key)]

    def subset(self, idx: Sequence[int]) -> EvalData:
        return EvalData(
            generations=[self.generations[i] for i in idx],
            references=[self.references[i] for i in idx],
            personas=[self.personas[i] for i in idx],
            contexts=[self.contexts[i] for i in idx],
            targets=[self.targets[i] for i in idx],
            ids=[self.ids[i] for i in idx],
            users=[self.users[i] for i in idx],
            profiles=[self.profiles[i] for i in idx],
        )


@dataclass
class Computed:
    """A metric prepared on a set: `aggregate(idx)` gives its value on rows IDX (all rows when None)."""

    aggregate: Callable[[np.ndarray | None], float]
    per_example: np.ndarray | None = None
    n: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    breakdown: Callable[[np.ndarray | None], dict[str, float]] | None = None
    """Optional: the metric's parts on rows IDX (e.g. per attribute), for per-target reports."""
    interval: str = "bootstrap"
    """How its 95% interval is computed: 'bootstrap' or 'half-sampling' (see the module docstring)."""
    on_subset: Callable[[np.ndarray], float] | None = None
    """half-sampling: the metric recomputed on a subset of distinct rows (default: `aggregate`)."""
    max_replicates: int | None = None
    """At most this many replicates (for metrics that are costly to recompute, e.g. self-BLEU)."""
    default_replicates: int = 0
    """Replicates used when none were asked for (metrics that always carry an interval)."""
    cells: dict[str, np.ndarray] | None = None
    """Optional, not reported: per attribute, each row's binary verdict on its target aspect (1, 0,
    NaN when not scored): what the judge-classifier agreement (`judge/agreement.py`) compares."""


@dataclass
class Score:
    """One reported number."""

    name: str
    value: float
    signature: str
    higher_is_better: bool
    n: int
    ci95: tuple[float, float] | None = None
    ci_method: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        finite = self.value == self.value and abs(self.value) != float(
            "inf"
        )  # NaN and inf are not JSON
        out: dict[str, Any] = {
            "value": round(self.value, 6) if finite else None,
            "higher_is_better": self.higher_is_better,
            "signature": self.signature,
            "n": self.n,
        }
        if self.ci95 is not None:
            out["ci95"] = [round(self.ci95[0], 6), round(self.ci95[1], 6)]
            out["ci95_method"] = self.ci_method
        if self.details:
            out.update(self.details)
        return out


def need_references(data: EvalData, name: str) -> list[str]:
    """DATA's references; ValueError (the metric NAME cannot run) when one is missing."""
    missing = sum(1 for r in data.references if r is None)
    if missing:
        raise ValueError(f"{name} needs a reference for every generation; {missing} have none")
    return [r or "" for r in data.references]


def need_personas(data: EvalData, name: str) -> None:
    """ValueError (the metric NAME cannot run) when no example of DATA has a persona."""
    if not any(data.personas):
        raise ValueError(f"{name} needs personas; no example has one")


class Metric(Protocol):
    """What `eval` computes; its name, help and direction are declared in `personadlg.registry`."""

    name: str
    requires: tuple[str, ...]

    def signature(self) -> str: ...

    def compute(self, data: EvalData) -> Computed: ...


def signature(kind: str, **parts: Any) -> str:
    """`kind|key:value|...|v:<personadlg version>`."""
    return "|".join([kind, *(f"{k}:{v}" for k, v in parts.items()), f"v:{__version__}"])


def pairs_computed(
    values: np.ndarray, attrs: Sequence[str], *, details: dict[str, Any] | None = None, **kw: Any
) -> Computed:
    """A metric over (example, attribute) pairs: VALUES (N, len(ATTRS)) holds 0/1 (or a
    probability) per judged pair and NaN elsewhere. The value is the mean over judged pairs × 100,
    the breakdown the same per attribute, the per-example value the mean of the example's pairs,
    and `cells` each attribute's column (for agreement between judges)."""

    def agg(idx: np.ndarray | None) -> float:
        v = values if idx is None else values[idx]
        v = v[~np.isnan(v)]
        return float(v.mean() * 100) if len(v) else float("nan")

    def by_attribute(idx: np.ndarray | None) -> dict[str, float]:
        v = values if idx is None else values[idx]
        return {
            a: float(np.nanmean(v[:, j]) * 100)
            for j, a in enumerate(attrs)
            if not np.isnan(v[:, j]).all()
        }

    per_example = np.array([np.nanmean(r) if not np.isnan(r).all() else np.nan for r in values])
    return Computed(
        aggregate=agg,
        per_example=per_example,
        n=int((~np.isnan(values)).sum()),
        details={"by_attribute": by_attribute(None), **(details or {})},
        breakdown=by_attribute,
        cells={a: values[:, j].copy() for j, a in enumerate(attrs)},
        **kw,
    )


def mean_of(values: np.ndarray, scale: float = 100.0) -> Callable[[np.ndarray | None], float]:
    """Aggregate = mean of per-example values (NaN rows skipped) × SCALE."""

    def agg(idx: np.ndarray | None) -> float:
        v = values if idx is None else values[idx]
        v = v[~np.isnan(v)]
        return float(v.mean() * scale) if len(v) else float("nan")

    return agg


def mean_computed(
    values: np.ndarray, *, scale: float = 100.0, n: int | None = None, **kw: Any
) -> Computed:
    """A metric that is the mean of per-example VALUES (NaN rows skipped) × SCALE; N defaults to
    the number of scored (non-NaN) rows; KW are further `Computed` fields."""
    count = int((~np.isnan(values)).sum()) if n is None else n
    return Computed(aggregate=mean_of(values, scale), per_example=values, n=count, **kw)


def _normal_p(estimate: float, sd: float) -> float:
    import math

    if sd <= 0:
        return 0.0 if estimate != 0 else 1.0
    return math.erfc(abs(estimate) / sd / math.sqrt(2))


def _replicates(
    computed: Computed, n: int, samples: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], int]:
    """Row index sets for COMPUTED's interval method and the subset size (b) for half-sampling."""
    if computed.interval == "half-sampling":
        b = n // 2
        return [rng.choice(n, size=b, replace=False) for _ in range(samples)], b
    return [rng.integers(0, n, size=n) for _ in range(samples)], n


def _value(computed: Computed, idx: np.ndarray) -> float:
    if computed.interval == "half-sampling" and computed.on_subset is not None:
        return computed.on_subset(np.sort(idx))
    return computed.aggregate(idx)


def interval_ci(
    computed: Computed, n: int, samples: int, seed: int = 0
) -> tuple[tuple[float, float], str] | None:
    """(95% interval, method) of COMPUTED over SAMPLES seeded replicates of its N rows, or None."""
    samples = samples or computed.default_replicates
    if samples <= 0 or n < (4 if computed.interval == "half-sampling" else 2):
        return None
    samples = min(samples, computed.max_replicates or samples)
    rng = np.random.default_rng(seed)
    rows, b = _replicates(computed, n, samples, rng)
    values = np.array([_value(computed, idx) for idx in rows], dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return None
    if computed.interval == "half-sampling":
        estimate = computed.aggregate(None)
        sd = float(np.sqrt(b / (n - b) * values.var(ddof=1)))
        return (estimate - Z95 * sd, estimate + Z95 * sd), f"half-sampling-jackknife:{samples}"
    lo, hi = np.percentile(values, [2.5, 97.5])
    return (float(lo), float(hi)), f"bootstrap-percentile:{samples}"


def bootstrap_ci(
    computed: Computed, n: int, samples: int, seed: int = 0
) -> tuple[float, float] | None:
    """The 95% interval of `interval_ci` alone."""
    out = interval_ci(computed, n, samples, seed)
    return out[0] if out else None


def paired_difference(
    a: Computed, b: Computed, n: int, samples: int, seed: int = 0
) -> dict[str, Any] | None:
    """A − B on the same N rows: the difference, its 95% interval and a two-sided p-value, from
    paired replicates (the same rows for both systems) of the metrics' interval method."""
    if samples <= 0 or n < 4:
        return None
    diff = a.aggregate(None) - b.aggregate(None)
    samples = min(samples, a.max_replicates or samples, b.max_replicates or samples)
    rng = np.random.default_rng(seed)
    rows, m = _replicates(a, n, samples, rng)
    d = np.array([_value(a, idx) - _value(b, idx) for idx in rows], dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return None
    if a.interval == "half-sampling":
        sd = float(np.sqrt(m / (n - m) * d.var(ddof=1)))
        ci = (diff - Z95 * sd, diff + Z95 * sd)
        p = _normal_p(diff, sd)
        method = f"paired-half-sampling-jackknife:{samples}"
    else:
        lo, hi = np.percentile(d, [2.5, 97.5])
        ci = (float(lo), float(hi))
        # shift method: how often a resampled difference lands as far from the estimate as the
        # estimate is from 0
        p = float((1 + np.sum(np.abs(d - diff) >= abs(diff))) / (len(d) + 1))
        method = f"paired-bootstrap:{samples}"
    return {"diff": float(diff), "ci95": [float(ci[0]), float(ci[1])], "p": p, "method": method}
