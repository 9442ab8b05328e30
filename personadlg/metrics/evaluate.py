"""`personadlg eval`: score generation files (or plain lists) and build the report of ARCHITECTURE §2.3.

>>> from personadlg.metrics import evaluate_texts
>>> evaluate_texts(["i love tea"], references=["i like tea"], metrics=["bleu-1", "dist-1"])["bleu-1"].value
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from personadlg import __version__
from personadlg.config import to_dict
from personadlg.data.attributes import target_key
from personadlg.data.formats import FormatOptions, iter_any_examples
from personadlg.data.jsonl import AtomicWriter, Bad, check_nonempty, dumps
from personadlg.data.paths import check_outputs
from personadlg.errors import DataError, UsageError
from personadlg.metrics.base import Computed, EvalData, Score, interval_ci, paired_difference
from personadlg.metrics.catalog import EvalOptions
from personadlg.metrics.collapse import collapse_report
from personadlg.metrics.grouped import (
    add_group_sections,
    check_by,
    check_min_records,
    check_same_groups,
    paired_macro_difference,
    score_groups,
)
from personadlg.metrics.judge.agreement import add_agreement
from personadlg.registry import METRICS, did_you_mean

logger = logging.getLogger(__name__)

LEXICAL = ("bleu-1", "bleu-2", "rouge-l", "dist-1", "dist-2", "sbleu")
PERSONA = ("p-co", "p-co-lift", "persona-copy")


def default_metrics(data: EvalData, opts: EvalOptions) -> list[str]:
    """Lexical and persona metrics the data allow, plus each model-based metric whose model is given."""
    return default_metric_plan(data, opts)[0]


def default_metric_plan(data: EvalData, opts: EvalOptions) -> tuple[list[str], dict[str, str]]:
    """(metrics to compute, {metric left out: why}) for the default metric set."""
    missing_refs = sum(1 for r in data.references if r is None)
    has_refs = missing_refs == 0
    with_persona = sum(1 for p in data.personas if p)
    has_persona = with_persona > 0
    names: list[str] = []
    skipped: dict[str, str] = {}
    no_refs = f"{missing_refs:,} of {len(data):,} records have no reference (missing or empty)"
    no_persona = "no record has a persona"
    for m in LEXICAL:
        if has_refs or m in ("dist-1", "dist-2", "sbleu"):
            names.append(m)
        else:
            skipped[m] = no_refs
    for m in PERSONA:
        if has_persona:
            names.append(m)
        else:
            skipped[m] = no_persona
    if opts.nli:
        names += ["nli-prob", "nli-acc"]
        if has_persona:
            names.append("c-score")
        else:
            skipped["c-score"] = no_persona
    if opts.classifiers:
        names += ["personalization-acc", "personalization-prob"]
    if opts.lm:
        names.append("ppl")
    if opts.embedder:
        if has_refs:
            names.append("emb-sim")
        else:
            skipped["emb-sim"] = no_refs
        for m in ("persona-cos", "persona-cos-lift"):
            if has_persona:
                names.append(m)
            else:
                skipped[m] = no_persona
    if opts.judge:
        from personadlg.metrics.judge.prompts import has_context, has_speaker

        judged = {
            "judge-persona": (
                any(has_speaker(p, q) for p, q in zip(data.personas, data.profiles)),
                "no record has a persona or a profile",
            ),
            "judge-attributes": (
                any(data.targets),
                "no record has target_attributes or attributes",
            ),
            "judge-coherence": (
                any(has_context(c) for c in data.contexts),
                "no record has a context",
            ),
        }
        for m, (ok, why) in judged.items():
            if ok:
                names.append(m)
            else:
                skipped[m] = why
    return names, skipped


JUDGE_METRICS = ("judge-persona", "judge-attributes", "judge-coherence")


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
        metric = METRICS.get(name)(opts)
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
    from personadlg.data.synth.client import api_key

    if judge_plan([data], names, opts)["total"]["to_send"]:
        api_key(opts.judge_config().client)


def check_metric_names(names: Sequence[str]) -> list[str]:
    out = []
    for n in names:
        if n not in METRICS:
            raise UsageError(
                f"unknown metric '{n}'{did_you_mean(n, METRICS.names())}; see `personadlg ls metrics`"
            )
        out.append(n)
    return out


# metrics whose value on a subset is not the subset of the whole computation (they look at the whole set)
SET_DEPENDENT = ("sbleu", "p-co", "p-co-lift")


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
        metric = METRICS.get(name)(opts)
        try:
            computed = metric.compute(data)
        except (
            ValueError
        ) as err:  # the data cannot support this metric (no references, no personas, ...)
            if explicit:
                raise UsageError(f"{name}: {err}") from None
            skipped[name] = str(err)
            continue
        score = Score(
            name=name,
            value=computed.aggregate(None),
            signature=metric.signature(),
            higher_is_better=metric.higher_is_better,
            n=computed.n,
            details=computed.details,
        )
        ci = interval_ci(computed, len(data), opts.bootstrap, opts.seed)
        if ci is not None:
            score.ci95, score.ci_method = ci
        scores[name] = score
        prepared[name] = computed
    return scores, prepared, skipped


def _finite(v: float) -> float | None:
    return None if v != v or v in (float("inf"), float("-inf")) else round(v, 6)


def check_classifier_targets(data: EvalData, opts: EvalOptions) -> dict[str, str]:
    """--classifier ATTR=DIR must name the attribute DIR judges (a personadlg classifier's recipe
    says it) and, when no record targets ATTR, not be a misspelling of one that is targeted: both
    are errors. A real attribute this file does not target is returned as skipped, with why."""
    from personadlg.models.loading import resolve_model

    targeted = sorted({a for t in data.targets for a in t})
    skipped: dict[str, str] = {}
    for attr, ref in sorted(opts.classifiers.items()):
        recipe = Path(resolve_model(ref)) / "config.yaml"
        if recipe.is_file():
            import yaml

            conf = yaml.safe_load(recipe.read_text()) or {}
            method = conf.get("method")
            if method != "classifier":
                raise UsageError(
                    f"--classifier {attr}={ref}: a {method} checkpoint, not a classifier "
                    "(train one with `personadlg train classifier/attribute-minilm ...`)"
                )
            judged = (conf.get("data") or {}).get("attribute")
            if judged and judged != attr:
                raise UsageError(
                    f"--classifier {attr}={ref}: this classifier judges '{judged}', not '{attr}'"
                    f"{did_you_mean(attr, [judged])}"
                )
        if attr not in targeted:
            hint = did_you_mean(attr, targeted)
            if hint:
                raise UsageError(
                    f"--classifier {attr}=...: no record targets the attribute '{attr}'{hint} "
                    f"(targeted attributes: {', '.join(targeted)})"
                )
            skipped[f"personalization ({attr})"] = (
                f"no record targets '{attr}' (targeted: {', '.join(targeted) or 'none'})"
            )
    return skipped


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

    Per target, each metric is aggregated over that target's rows of the whole computation (so a
    model scores every generation once); self-BLEU and P-Co, which look at the whole set, are
    recomputed within the target's rows. BY ('user') adds every metric per group and the macro
    average over groups with at least MIN_GROUP_RECORDS records (`metrics/grouped.py`).
    """
    opts = opts or EvalOptions()
    if by is not None:
        check_by(by)
        check_min_records(min_group_records)
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
        groups: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(data.targets):
            groups[target_key(t)].append(i)
        table = {}
        for key in sorted(groups):
            rows = np.array(groups[key])
            values = {
                name: _finite(c.aggregate(rows))
                for name, c in prepared.items()
                if name not in SET_DEPENDENT
            }
            again = [n for n in prepared if n in SET_DEPENDENT]
            if again:
                sub_scores, _, _ = compute_scores(
                    data.subset(groups[key]), again, opts, explicit=False
                )
                values.update({n: _finite(s.value) for n, s in sub_scores.items()})
            entry: dict[str, Any] = {"n": len(rows), **{n: values.get(n) for n in prepared}}
            parts = {n: c.breakdown(rows) for n, c in prepared.items() if c.breakdown is not None}
            if parts:
                entry["by_attribute"] = parts
            table[key or "(no target)"] = entry
        report["by_target"] = table
    if by is not None:
        table_by = score_groups(data, prepared, opts, by=by, min_records=min_group_records)
        add_group_sections(report, table_by, scores, prepared, opts)
        report["_groups"] = table_by
    report["_per_example"] = {
        name: c.per_example for name, c in prepared.items() if c.per_example is not None
    }
    report["_prepared"] = prepared
    return report


def read_generations(
    path: str | Path, *, fmt: str = "auto", opts: FormatOptions | None = None
) -> tuple[EvalData, str]:
    """EvalData and the input's sha256 from a generation file: example records with `generation`
    (as `generate` writes), or any readable format with a generation per record (a table's
    `--column generation=COL`)."""
    p = Path(path)
    check_nonempty(p)
    gens, refs, personas, contexts, targets, ids = [], [], [], [], [], []
    users: list[str | None] = []
    profiles: list[dict[str, Any]] = []
    for item in iter_any_examples(p, fmt=fmt, opts=opts):
        if isinstance(item, Bad):
            raise item.error
        line, ex = item
        if ex.generation is None:
            raise DataError(
                field="generation",
                expected="a string (a generation record, as written by personadlg generate)",
                got_text="nothing (missing)",
            ).at(path=str(p), line=line)
        gens.append(ex.generation)
        refs.append(ex.reference if ex.reference and ex.reference.strip() else None)
        personas.append(ex.persona)
        contexts.append([m.to_dict() for m in ex.context])
        targets.append(ex.target_attributes if ex.target_attributes is not None else ex.attributes)
        ids.append(ex.id + ("|" + target_key(ex.target_attributes) if ex.target_attributes else ""))
        users.append(ex.user_id)
        profiles.append(dict(ex.profile))
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return EvalData(
        generations=gens,
        references=refs,
        personas=personas,
        contexts=contexts,
        targets=targets,
        ids=ids,
        users=users,
        profiles=profiles,
    ), digest


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
    if by is not None:
        check_by(by)
        check_min_records(min_group_records)
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


def _aligned(data: EvalData, order: Sequence[str]) -> EvalData:
    """DATA's rows in the order of the ids ORDER (the same set of ids)."""
    where = {rid: i for i, rid in enumerate(data.ids)}
    return data.subset([where[rid] for rid in order])


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
    grouping = None
    if by is not None:
        grouping = check_by(by)
        check_min_records(min_group_records)
    loaded = [(p, *read_generations(p, fmt=input_format, opts=format_options)) for p in paths]
    base_path, base, _ = loaded[0]
    base_ids = set(base.ids)
    if len(base_ids) != len(base.ids):
        raise UsageError(f"--compare: {base_path} holds an example (and target) more than once")
    for p, data, _ in loaded[1:]:
        ids = set(data.ids)
        if ids != base_ids or len(ids) != len(data.ids):
            only_here, only_base = sorted(ids - base_ids), sorted(base_ids - ids)
            raise UsageError(
                f"--compare: {p} and {base_path} do not hold the same examples "
                f"({len(only_here)} only in {p}, e.g. {only_here[:2]}; {len(only_base)} only in {base_path}, e.g. {only_base[:2]})"
            )
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
    comparisons: dict[str, Any] = {}
    for key, prep in zip(keys[1:], prepared[1:]):
        comparisons[key] = {
            name: d
            for name in prep
            if name in prepared[0]
            and (
                d := paired_difference(prep[name], prepared[0][name], len(base), samples, opts.seed)
            )
        }
    summary: dict[str, Any] = {"base": keys[0], "n": len(base), "vs_base": comparisons}
    if by is not None:
        summary["by"] = by
        summary["macro_vs_base"] = {
            key: paired_macro_difference(g, groups[0], samples=samples, seed=opts.seed)
            for key, g in zip(keys[1:], groups[1:])
        }
    return {"version": __version__, "systems": systems, "comparisons": summary}


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
