"""`personadlg eval --compare`: several systems on the same examples, each later one's paired
difference from the first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from personadlg import __version__
from personadlg.data.formats import FormatOptions
from personadlg.errors import UsageError
from personadlg.metrics.base import Computed, EvalData, paired_difference
from personadlg.metrics.evaluate import evaluate_data
from personadlg.metrics.grouped import check_grouping, check_same_groups, paired_macro_difference
from personadlg.metrics.options import EvalOptions
from personadlg.metrics.plan import default_metrics
from personadlg.metrics.read import read_generations


def _aligned(data: EvalData, order: Sequence[str]) -> EvalData:
    """DATA's rows in the order of the ids ORDER (the same set of ids)."""
    where = {rid: i for i, rid in enumerate(data.ids)}
    return data.subset([where[rid] for rid in order])


def check_same_examples(loaded: Sequence[tuple[str | Path, EvalData]]) -> None:
    """Every system holds the first one's examples (ids), each once; UsageError otherwise."""
    base_path, base = loaded[0]
    base_ids = set(base.ids)
    if len(base_ids) != len(base.ids):
        raise UsageError(f"--compare: {base_path} holds an example (and target) more than once")
    for p, data in loaded[1:]:
        ids = set(data.ids)
        if ids != base_ids or len(ids) != len(data.ids):
            only_here, only_base = sorted(ids - base_ids), sorted(base_ids - ids)
            raise UsageError(
                f"--compare: {p} and {base_path} do not hold the same examples "
                f"({len(only_here)} only in {p}, e.g. {only_here[:2]}; {len(only_base)} only in {base_path}, e.g. {only_base[:2]})"
            )


def _vs_base(
    system: dict[str, Computed], base: dict[str, Computed], *, n: int, samples: int, seed: int
) -> dict[str, Any]:
    """{metric: paired difference} of SYSTEM minus BASE on each metric both computed (where defined)."""
    out = {}
    for name, computed in system.items():
        if name in base and (d := paired_difference(computed, base[name], n, samples, seed)):
            out[name] = d
    return out


def compare_files(
    paths: Sequence[str | Path],
    *,
    metrics: Sequence[str] | None = None,
    opts: EvalOptions | None = None,
    by_target: bool = False,
    by: str | None = None,
    min_group_records: int = 1,
    on_metric: Callable[[str], None] | None = None,
    input_format: str = "auto",
    format_options: FormatOptions | None = None,
) -> dict[str, Any]:
    """Evaluate several systems on the same examples with the same settings (ids must match), and
    each later system's difference from the first on every metric: a paired 95% interval and a
    two-sided p-value (`--bootstrap` replicates, 1,000 when not given).

    BY ('user'): each system also gets its per-group values and macro average, and the comparison
    the difference of macro averages, paired by group, resampling groups
    (`comparisons["macro_vs_base"]`); every example must be in the same group in every file."""
    opts = opts or EvalOptions()
    grouping = check_grouping(by, min_group_records)
    loaded = [(p, *read_generations(p, fmt=input_format, opts=format_options)) for p in paths]
    check_same_examples([(p, data) for p, data, _ in loaded])
    base = loaded[0][1]
    names = metrics or default_metrics(base, opts)
    aligned = [(p, _aligned(data, base.ids), digest) for p, data, digest in loaded]
    if grouping is not None:
        check_same_groups([(str(p), data) for p, data, _ in aligned], grouping)
    systems: dict[str, Any] = {}
    prepared: list[dict[str, Computed]] = []
    groups: list[Any] = []
    for p, data, digest in aligned:
        r = evaluate_data(
            data,
            metrics=names,
            opts=opts,
            by_target=by_target,
            by=by,
            min_group_records=min_group_records,
            on_metric=on_metric,
        )
        r.pop("_per_example")
        prepared.append(r.pop("_prepared"))
        groups.append(r.pop("_groups", None))
        key = (
            str(p) if str(p) not in systems else f"{p}#{len(systems) + 1}"
        )  # the same file twice stays two columns
        systems[key] = {"input_sha256": digest, **r}
    samples = opts.bootstrap or 1000
    keys = list(systems)
    comparisons = {
        key: _vs_base(prep, prepared[0], n=len(base), samples=samples, seed=opts.seed)
        for key, prep in zip(keys[1:], prepared[1:])
    }
    summary: dict[str, Any] = {"base": keys[0], "n": len(base), "vs_base": comparisons}
    if by is not None:
        summary["by"] = by
        summary["macro_vs_base"] = {
            key: paired_macro_difference(g, groups[0], samples=samples, seed=opts.seed)
            for key, g in zip(keys[1:], groups[1:])
        }
    return {"version": __version__, "systems": systems, "comparisons": summary}
