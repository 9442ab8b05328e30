"""The codebook's step of `personadlg demo`: MORPHEUS, trained from the baseline's decoder (three
stages), generates for the test split without persona text; its persona metrics next to the
persona-prompted baseline's, and what its two most used codes stand for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from personadlg.models.spec import DemoBlock, DemoRun, DemoStep, Table

PERSONA_METRICS = ("p-co", "p-co-lift", "dist-2", "bleu-1")


def run(demo: DemoRun) -> dict[str, Any]:
    """Train, generate for the test split, evaluate it and the baseline alike, two codes."""
    kit = demo.kit
    result = kit.train(demo.cfg)
    path = demo.generations(demo.name)
    loaded = kit.load(result.final_dir)
    generated = kit.generate(result.final_dir, demo.data("test"), path, loaded=loaded)
    metrics = list(PERSONA_METRICS)
    return {
        "train": kit.summary(result),
        "generate": generated,
        "eval": kit.evaluate(path, metrics=metrics, out=demo.eval_report(demo.name)),
        "baseline_eval": kit.evaluate(demo.baseline, metrics=metrics),
        "codes": two_codes(loaded[1], kit.examples(demo.data("train"))),
        "samples": kit.records(path)[:3],
    }


def two_codes(model: Any, examples: Sequence[Any]) -> list[dict[str, Any]]:
    """The two codes the EXAMPLES' personas use most, with their nearest persona sentences."""
    from personadlg.models.codebook.inspect import inspect_codebook

    report = inspect_codebook(model, examples, top=3, predict_limit=200)
    return report["codes"][:2]


def render(c: dict[str, Any], *, name: str, baseline: str) -> list[DemoBlock]:
    """Training, the persona numbers against the baseline, two codes."""
    v = c["train"]["last_valid"]
    rows = [
        ["training time, three stages (s)", round(c["train"]["seconds"], 1)],
        ["valid ppl (L_G)", f"{v.get('ppl', float('nan')):.1f}"],
        [
            "codes used on valid / usage perplexity",
            f"{int(v.get('codes_used', 0))} / {v.get('usage_ppl', float('nan')):.1f}",
        ],
        [
            "code prediction accuracy (majority baseline)",
            f"{v.get('code_acc', float('nan')):.1f} ({v.get('code_acc_majority', float('nan')):.1f})",
        ],
    ]
    return [
        Table(f"{name} (MORPHEUS)", ["", "value"], rows),
        Table(
            f"test split: {name} (no persona text: codes from the history) vs {baseline} "
            "(persona in the prompt)",
            ["metric", name, baseline],
            [[m, _cell(c["eval"], m), _cell(c["baseline_eval"], m)] for m in PERSONA_METRICS],
        ),
        Table(
            "two codes and the training persona sentences nearest to them",
            ["code", "persona share %", "nearest persona sentences"],
            [
                [
                    r["code"],
                    f"{r['assigned_share']:.1f}",
                    "\n".join(n["sentence"] for n in r["nearest"]),
                ]
                for r in c["codes"]
            ],
        ),
    ]


def _cell(report: dict[str, Any], metric: str) -> str:
    m = report["metrics"].get(metric) or {}
    if m.get("value") is None:
        return "-"
    ci = m.get("ci95")
    return f"{m['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


DEMO = DemoStep(
    order=20,
    steps=20,
    chain=("model.decoder={baseline}",),
    run=run,
    render=render,
    outputs=(("loss curves", "loss.png"),),
)
