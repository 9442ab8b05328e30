"""`personadlg eval`: the report of a set of generations (a file or plain lists of strings).

>>> from personadlg.metrics import evaluate_texts
>>> evaluate_texts(["i love tea"], references=["i like tea"], metrics=["bleu-1", "dist-1"])["bleu-1"].value

The other parts of `eval` live next to it: which metrics (`plan.py`), reading a file (`read.py`),
computing them (`score.py`), per target (`by_target.py`) and per user (`grouped.py`), the judge's
dry run (`judge_plan.py`), `--compare` (`compare.py`) and the controllability matrix (`matrix.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personadlg import __version__
from personadlg.config import to_dict
from personadlg.data.formats import FormatOptions
from personadlg.data.jsonl import AtomicWriter, dumps
from personadlg.data.paths import check_outputs
from personadlg.errors import UsageError
from personadlg.metrics.base import EvalData, Score
from personadlg.metrics.by_target import target_table
from personadlg.metrics.collapse import collapse_report
from personadlg.metrics.grouped import add_group_sections, check_grouping, score_groups
from personadlg.metrics.judge.agreement import add_agreement
from personadlg.metrics.judge_plan import check_judge_key
from personadlg.metrics.options import EvalOptions
from personadlg.metrics.plan import (
    check_classifier_targets,
    check_metric_names,
    default_metric_plan,
    default_metrics,
)
from personadlg.metrics.read import read_generations
from personadlg.metrics.score import compute_scores


def evaluate_data(
    data: EvalData,
    *,
    metrics: Sequence[str] | None = None,
    opts: EvalOptions | None = None,
    by_target: bool = False,
    by: str | None = None,
    min_group_records: int = 1,
    on_metric: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The report for DATA: every metric with its signature (and CI), optionally per target combination.

    BY_TARGET adds every metric per target combination (`metrics/by_target.py`); BY ('user') every
    metric per group and the macro average over groups with at least MIN_GROUP_RECORDS records
    (`metrics/grouped.py`).
    """
    opts = opts or EvalOptions()
    check_grouping(by, min_group_records)
    if len(data) == 0:
        raise UsageError("nothing to evaluate: no generations")
    planned: dict[str, str] = check_classifier_targets(data, opts)
    if metrics:
        names = check_metric_names(metrics)
    else:
        names, more = default_metric_plan(data, opts)
        planned.update(more)
    check_judge_key(data, names, opts)
    scores, prepared, skipped = compute_scores(
        data, names, opts, explicit=bool(metrics), on_metric=on_metric
    )
    skipped = {**planned, **skipped}
    report: dict[str, Any] = {
        "n": len(data),
        "version": __version__,
        "settings": to_dict(opts),
        "metrics": {k: s.to_dict() for k, s in scores.items()},
    }
    if skipped:
        report["skipped"] = skipped
    add_agreement(report, prepared)
    sbleu = scores.get("sbleu")
    report["collapse"] = collapse_report(
        data.generations,
        sbleu=sbleu.value if sbleu is not None else None,
        sbleu_signature=sbleu.signature if sbleu is not None else None,
    )
    if by_target:
        report["by_target"] = target_table(data, prepared, opts)
    if by is not None:
        table_by = score_groups(data, prepared, opts, by=by, min_records=min_group_records)
        add_group_sections(report, table_by, scores, prepared, opts)
        report["_groups"] = table_by
    report["_per_example"] = {
        name: c.per_example for name, c in prepared.items() if c.per_example is not None
    }
    report["_prepared"] = prepared
    return report


def evaluate_file(
    path: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    opts: EvalOptions | None = None,
    by_target: bool = False,
    by: str | None = None,
    min_group_records: int = 1,
    out: str | Path | None = None,
    per_example: str | Path | None = None,
    on_metric: Callable[[str], None] | None = None,
    input_format: str = "auto",
    format_options: FormatOptions | None = None,
) -> dict[str, Any]:
    """Evaluate a generation file; write the report (OUT) and per-example scores (PER_EXAMPLE) atomically.

    BY ('user'): also every metric per group and the macro average (see `evaluate_data`)."""
    check_outputs({"--out": out, "--per-example": per_example}, {"generations": path})
    check_grouping(by, min_group_records)
    data, digest = read_generations(path, fmt=input_format, opts=format_options)
    report = evaluate_data(
        data,
        metrics=metrics,
        opts=opts,
        by_target=by_target,
        by=by,
        min_group_records=min_group_records,
        on_metric=on_metric,
    )
    values = report.pop("_per_example")
    report.pop("_prepared")
    report.pop("_groups", None)
    report = {
        "n": report["n"],
        "input": str(path),
        "input_sha256": digest,
        **{k: v for k, v in report.items() if k != "n"},
    }
    if out is not None:
        with AtomicWriter(out) as f:
            f.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    if per_example is not None:
        with AtomicWriter(per_example) as f:
            for i, rid in enumerate(data.ids):
                row: dict[str, Any] = {"id": rid}
                for name, v in values.items():
                    row[name] = None if np.isnan(v[i]) else round(float(v[i]), 6)
                f.write(dumps(row) + "\n")
    return report


def evaluate_texts(
    generations: Sequence[str],
    *,
    references: Sequence[str] | None = None,
    personas: Sequence[Sequence[str]] | None = None,
    contexts: Sequence[Sequence[str]] | None = None,
    targets: Sequence[dict[str, str]] | None = None,
    profiles: Sequence[dict[str, Any]] | None = None,
    metrics: Sequence[str] | None = None,
    **options: Any,
) -> dict[str, Score]:
    """Library call on plain lists: {metric: Score}. CONTEXTS are lists of turns (oldest first); OPTIONS are EvalOptions fields."""
    ctx = (
        [
            [
                {"role": "user" if (len(c) - 1 - i) % 2 == 0 else "assistant", "content": t}
                for i, t in enumerate(c)
            ]
            for c in contexts
        ]
        if contexts
        else []
    )
    data = EvalData(
        generations=list(generations),
        references=[r if r and r.strip() else None for r in references] if references else [],
        personas=[list(p) for p in personas] if personas else [],
        contexts=ctx,
        targets=[dict(t) for t in targets] if targets else [],
        profiles=[dict(p) for p in profiles] if profiles else [],
    )
    opts = EvalOptions(**options)
    names = check_metric_names(metrics) if metrics else default_metrics(data, opts)
    scores, _, _ = compute_scores(data, names, opts, explicit=bool(metrics))
    return scores
