"""Which metrics `eval` computes: the names asked for (checked), else the default set the data and
the given models allow, with why each default metric is left out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from personadlg.errors import UsageError
from personadlg.metrics.base import EvalData
from personadlg.metrics.options import EvalOptions
from personadlg.registry import METRICS, did_you_mean

LEXICAL = ("bleu-1", "bleu-2", "rouge-l", "dist-1", "dist-2", "sbleu")
PERSONA = ("p-co", "p-co-lift", "persona-copy")
JUDGE_METRICS = ("judge-persona", "judge-attributes", "judge-coherence")


def default_metrics(data: EvalData, opts: EvalOptions) -> list[str]:
    """Lexical and persona metrics the data allow, plus each model-based metric whose model is given."""
    return default_metric_plan(data, opts)[0]


def default_metric_plan(data: EvalData, opts: EvalOptions) -> tuple[list[str], dict[str, str]]:
    """(metrics to compute, {metric left out: why}) for the default metric set."""
    missing_refs = sum(1 for r in data.references if r is None)
    has_refs = missing_refs == 0
    has_persona = any(data.personas)
    no_refs = f"{missing_refs:,} of {len(data):,} records have no reference (missing or empty)"
    no_persona = "no record has a persona"
    plan: dict[str, tuple[bool, str]] = {
        **{m: (has_refs or m in ("dist-1", "dist-2", "sbleu"), no_refs) for m in LEXICAL},
        **{m: (has_persona, no_persona) for m in PERSONA},
    }
    if opts.nli:
        plan.update(
            {"nli-prob": (True, ""), "nli-acc": (True, ""), "c-score": (has_persona, no_persona)}
        )
    if opts.classifiers:
        plan.update({"personalization-acc": (True, ""), "personalization-prob": (True, "")})
    if opts.lm:
        plan["ppl"] = (True, "")
    if opts.embedder:
        plan["emb-sim"] = (has_refs, no_refs)
        plan.update({m: (has_persona, no_persona) for m in ("persona-cos", "persona-cos-lift")})
    if opts.judge:
        plan.update(_judge_inputs(data))
    names = [m for m, (ok, _) in plan.items() if ok]
    skipped = {m: why for m, (ok, why) in plan.items() if not ok}
    return names, skipped


def _judge_inputs(data: EvalData) -> dict[str, tuple[bool, str]]:
    """Each judge metric: whether DATA has what it is shown, and why not."""
    from personadlg.metrics.judge.prompts import has_context, has_speaker

    return {
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


def check_metric_names(names: Sequence[str]) -> list[str]:
    """NAMES, each a registered metric; UsageError (with a did-you-mean) otherwise."""
    for n in names:
        if n not in METRICS:
            raise UsageError(
                f"unknown metric '{n}'{did_you_mean(n, METRICS.names())}; see `personadlg ls metrics`"
            )
    return list(names)


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
            _check_classifier_recipe(attr, ref, recipe)
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


def _check_classifier_recipe(attr: str, ref: str, recipe: Path) -> None:
    """The checkpoint REF (its RECIPE) is a classifier of the attribute ATTR."""
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
