"""Metric plumbing: the evaluated columns, a computed metric, scores with signatures and bootstrap CIs.

A metric is prepared once on the whole set (per-example statistics first), then aggregated: over
all examples for the value, over resampled examples for a 95% bootstrap interval. Every number
carries a signature saying exactly how it was computed (methods/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from personadlg import __version__


@dataclass
class EvalData:
    """Columns of an evaluated set, one row per generation."""

    generations: list[str]
    references: list[str | None] = field(default_factory=list)
    personas: list[list[str]] = field(default_factory=list)
    contexts: list[list[dict[str, str]]] = field(default_factory=list)
    targets: list[dict[str, str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.generations)
        self.references = self.references or [None] * n
        self.personas = self.personas or [[] for _ in range(n)]
        self.contexts = self.contexts or [[] for _ in range(n)]
        self.targets = self.targets or [{} for _ in range(n)]
        self.ids = self.ids or [str(i) for i in range(n)]
        for name in ("references", "personas", "contexts", "targets", "ids"):
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


@dataclass
class Score:
    """One reported number."""

    name: str
    value: float
    signature: str
    higher_is_better: bool
    n: int
    ci95: tuple[float, float] | None = None
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
        if self.details:
            out.update(self.details)
        return out


class Metric(Protocol):
    name: str
    higher_is_better: bool
    requires: tuple[str, ...]

    def signature(self) -> str: ...

    def compute(self, data: EvalData) -> Computed: ...


def signature(kind: str, **parts: Any) -> str:
    """`kind|key:value|...|v:<personadlg version>`."""
    return "|".join([kind, *(f"{k}:{v}" for k, v in parts.items()), f"v:{__version__}"])


def mean_of(values: np.ndarray, scale: float = 100.0) -> Callable[[np.ndarray | None], float]:
    """Aggregate = mean of per-example values (NaN rows skipped) × SCALE."""

    def agg(idx: np.ndarray | None) -> float:
        v = values if idx is None else values[idx]
        v = v[~np.isnan(v)]
        return float(v.mean() * scale) if len(v) else float("nan")

    return agg


def bootstrap_ci(
    computed: Computed, n: int, samples: int, seed: int = 0
) -> tuple[float, float] | None:
    """95% percentile interval of the metric over SAMPLES resamples of the N rows (seeded)."""
    if samples <= 0 or n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = [computed.aggregate(rng.integers(0, n, size=n)) for _ in range(samples)]
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)
