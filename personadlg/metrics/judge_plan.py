"""The LLM judge's requests before anything is sent: `eval --judge --dry-run` and the key check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from personadlg.data.formats import FormatOptions
from personadlg.errors import UsageError
from personadlg.metrics.base import EvalData
from personadlg.metrics.catalog import make_metric
from personadlg.metrics.options import EvalOptions
from personadlg.metrics.plan import JUDGE_METRICS, check_metric_names, default_metric_plan
from personadlg.metrics.read import read_generations


def judge_plan(
    datasets: Sequence[EvalData], names: Sequence[str], opts: EvalOptions
) -> dict[str, Any]:
    """The judge requests of NAMES on DATASETS: per metric and in all, how many, how many the cache
    already answers, how many to send, and synth's token and cost estimate. Sends nothing, needs no key."""
    from personadlg.metrics.judge.metrics import host
    from personadlg.metrics.judge.requests import plan

    cfg = opts.judge_config()
    cache = cfg.cache_path(opts.judge_cache)
    per: dict[str, Any] = {}
    every = []
    for name in names:
        if name not in JUDGE_METRICS:
            continue
        metric: Any = make_metric(name, opts)
        requests = [r for data in datasets for r in metric.requests(data)]
        per[name] = {"template": metric.rubric[1], **plan(cfg, cache, requests)}
        every += requests
    return {
        "judge": {
            "model": cfg.client.model,
            "base_url": host(cfg.client.base_url),
            "recipe": cfg.source,
            "cache": str(cache),
        },
        "metrics": per,
        "total": plan(cfg, cache, every),
    }


def check_judge_key(data: EvalData, names: Sequence[str], opts: EvalOptions) -> None:
    """A missing API key stops the run before anything is computed, when a judge metric has requests to send."""
    if opts.judge is None or not any(n in JUDGE_METRICS for n in names):
        return  # without --judge, the metric itself says what it needs
    from personadlg.llm.client import api_key

    if judge_plan([data], names, opts)["total"]["to_send"]:
        api_key(opts.judge_config().client)


def judge_dry_run(
    paths: Sequence[str | Path],
    *,
    metrics: Sequence[str] | None = None,
    opts: EvalOptions,
    input_format: str = "auto",
    format_options: FormatOptions | None = None,
) -> dict[str, Any]:
    """`eval --judge --dry-run`: the judge requests the files need (the metrics asked for, else the
    default plan of the first file), those the cache answers, those to send and their estimated
    tokens and cost. Sends nothing and needs no key."""
    datasets = [read_generations(p, fmt=input_format, opts=format_options)[0] for p in paths]
    skipped: dict[str, str] = {}
    if metrics:
        names = check_metric_names(metrics)
    else:
        names, more = default_metric_plan(datasets[0], opts)
        skipped = {k: v for k, v in more.items() if k in JUDGE_METRICS}
    if not any(n in JUDGE_METRICS for n in names):
        raise UsageError(
            "--dry-run: no judge metric to estimate"
            + (f" ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else "")
        )
    plan = judge_plan(datasets, names, opts)
    plan["files"] = [str(p) for p in paths]
    if skipped:
        plan["skipped"] = skipped
    return plan
