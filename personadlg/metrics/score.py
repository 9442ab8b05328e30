"""Computing named metrics on a set: each metric's value, signature and 95% interval."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from personadlg.errors import UsageError
from personadlg.metrics.base import Computed, EvalData, Score, interval_ci
from personadlg.metrics.catalog import higher_is_better, make_metric
from personadlg.metrics.options import EvalOptions


def compute_scores(
    data: EvalData,
    names: Sequence[str],
    opts: EvalOptions,
    *,
    explicit: bool = True,
    on_metric: Callable[[str], None] | None = None,
) -> tuple[dict[str, Score], dict[str, Computed], dict[str, str]]:
    """(scores, prepared metrics, skipped metrics with the reason) for DATA.

    With EXPLICIT False (default metric list), a metric the data cannot support is skipped with a
    reason instead of failing the run.
    """
    scores: dict[str, Score] = {}
    prepared: dict[str, Computed] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if on_metric:
            on_metric(name)
        metric = make_metric(name, opts)
        try:
            computed = metric.compute(data)
        except ValueError as err:  # the data cannot support this metric (no references, ...)
            if explicit:
                raise UsageError(f"{name}: {err}") from None
            skipped[name] = str(err)
            continue
        score = Score(
            name=name,
            value=computed.aggregate(None),
            signature=metric.signature(),
            higher_is_better=higher_is_better(name),
            n=computed.n,
            details=computed.details,
        )
        ci = interval_ci(computed, len(data), opts.bootstrap, opts.seed)
        if ci is not None:
            score.ci95, score.ci_method = ci
        scores[name] = score
        prepared[name] = computed
    return scores, prepared, skipped
