"""The cvae's step of `personadlg demo`: MIRACLE, trained from the baseline's decoder, generates
every combination of target aspects for the test split, ODE-guided and unguided; both are judged by
the attribute classifiers (the controllability matrix)."""

from __future__ import annotations

from typing import Any

from personadlg.models.spec import DemoBlock, DemoRun, DemoStep, EvalView, Table

UNGUIDED = ("model.ode.guidance_scale=0",)
"""`generate --no-guidance`: the start latent decoded as is."""
COMPARED = ("personalization-acc", "dist-2", "sbleu")
"""The metrics of the guided vs unguided table."""


def run(demo: DemoRun) -> dict[str, Any]:
    """Train, generate every combination guided and unguided, evaluate both; one test example's
    generations in every combination."""
    kit = demo.kit
    result = kit.train(demo.cfg)
    section: dict[str, Any] = {"train": kit.summary(result)}
    loaded = kit.load(result.final_dir)  # once for both runs
    for key, name, overrides in (
        ("guided", demo.name, ()),
        ("unguided", f"{demo.name}-unguided", UNGUIDED),
    ):
        path = demo.generations(name)
        section[key] = {
            "generate": kit.generate(
                result.final_dir,
                demo.data("test"),
                path,
                combinations=True,
                overrides=overrides,
                loaded=loaded,
            ),
            "eval": kit.evaluate(
                path, classifiers=demo.classifiers, by_target=True, out=demo.eval_report(name)
            ),
        }
    guided = kit.records(demo.generations(demo.name))
    section["samples"] = [r for r in guided if r["id"] == guided[0]["id"]]
    return section


def render(c: dict[str, Any], *, name: str, baseline: str) -> list[DemoBlock]:
    """Training, one context in every combination, controllability, guided vs not."""
    from personadlg.data.attributes import target_key

    v = c["train"]["last_valid"]
    g = c["guided"]["generate"]
    stages = g.get("stage_seconds", {})
    ode_share = stages.get("ode", 0.0) / max(sum(stages.values()), 1e-9)
    rows = [
        ["training time (s)", round(c["train"]["seconds"], 1)],
        [
            "valid reconstruction ppl (posterior / prior z)",
            f"{v.get('ppl', float('nan')):.1f} / {v.get('ppl_prior', float('nan')):.1f}",
        ],
        ["active latent units", int(v.get("active_units", 0))],
        *[
            [f"latent head accuracy: {k[4:]}", round(val, 1)]
            for k, val in v.items()
            if k.startswith("acc_")
        ],
        ["generation (responses/s)", round(g["responses_per_s"], 1)],
        [
            "ODE evaluations per solve / share of generation time",
            f"{g['decoding'].get('latent', {}).get('nfe', 0)} / {100 * ode_share:.1f}%",
        ],
    ]
    blocks: list[DemoBlock] = [Table(f"{name} (MIRACLE)", ["", "value"], rows)]
    samples = c.get("samples") or []
    if samples:
        ctx = samples[0]["context"][-1]["content"] if samples[0]["context"] else ""
        blocks.append(
            Table(
                f"{name}, one test context in every combination (user: {ctx})",
                ["target", "generation"],
                [[target_key(r["target_attributes"]), r["generation"]] for r in samples],
            )
        )
    blocks.append(EvalView("controllability", c["guided"]["eval"]))
    blocks.append(
        Table(
            f"{name} over all 8 combinations: ODE-guided vs --no-guidance",
            ["metric", "guided", "unguided"],
            [[m, *(_value(c[k]["eval"], m) for k in ("guided", "unguided"))] for m in COMPARED],
        )
    )
    return blocks


def _value(report: dict[str, Any], metric: str) -> str:
    m = report["metrics"].get(metric)
    return "-" if m is None or m["value"] is None else f"{m['value']:.2f}"


DEMO = DemoStep(
    order=10,
    steps=40,
    chain=("model.decoder={baseline}",),
    run=run,
    render=render,
    outputs=(("loss curves", "loss.png"), ("latent space", "latent_space.png")),
)
