"""Model commands: synth, train, generate, eval, chat, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from personadlg.cli._console import out, print_json, table

Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="KEY=VALUE overrides with dotted keys.", show_default=False),
]


def _not_yet(what: str, issue: str) -> None:
    from personadlg.errors import NotAvailableError

    raise NotAvailableError(f"{what} is not available in personadlg 0.1.0 yet ({issue})")


def synth(
    recipe: Annotated[
        str, typer.Argument(help="Synth recipe: YAML path or bundled name (synth/miracle).")
    ],
    overrides: Overrides = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print units, estimated tokens and cost; send nothing."),
    ] = False,
    collect: Annotated[
        bool,
        typer.Option("--collect", help="Batch mode: poll, download and merge finished batches."),
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry the units recorded as failed.")
    ] = False,
) -> None:
    """Synthesize aspect-level dialogues through any OpenAI-compatible API (MIRACLE's data method).

    [bold]Examples[/]

      OPENAI_API_KEY=... personadlg synth synth/miracle output=raw.jsonl limits.concurrency=32
      personadlg synth synth/miracle --dry-run
    """
    _not_yet("`personadlg synth`", "it lands with the synth issue")


def train(
    recipe: Annotated[
        str,
        typer.Argument(help="A YAML path or a bundled recipe name (see `personadlg ls recipes`)."),
    ],
    overrides: Overrides = None,
    resume: Annotated[
        Optional[str],
        typer.Option(
            "--resume",
            help="'auto' (newest complete checkpoint in train.output_dir) or a checkpoint dir.",
        ),
    ] = None,
    debug_tokens: Annotated[
        int,
        typer.Option(
            "--debug-tokens",
            help="Print the first N training examples token by token with their labels.",
        ),
    ] = 0,
) -> None:
    """Train a method from a recipe. The same command runs under `accelerate launch -m personadlg train`.

    [bold]Examples[/]

      personadlg train finetune/tiny
      personadlg train recipes/finetune/gpt2.yaml data.train=train.jsonl train.lr=3e-5
      personadlg train finetune/tiny --resume auto
    """
    from personadlg.config import load_recipe

    load_recipe(recipe, overrides or [])
    _not_yet("training", "the recipe is valid; the training engine lands with the trainer issue")


def generate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint dir, e.g. runs/x/final.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Dialogue or example file.")],
    out_path: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Generations (example records), streamed; rerun to resume."
        ),
    ],
    attributes: Annotated[
        Optional[str],
        typer.Option(
            "--attributes", help="Target aspects, e.g. language_style=lyrical,attitude=optimistic."
        ),
    ] = None,
    all_combinations: Annotated[
        bool,
        typer.Option(
            "--all-combinations", help="Every combination of aspects of the declared attributes."
        ),
    ] = False,
    turns: Annotated[
        str,
        typer.Option(
            "--turns",
            help="Dialogue input: generate for every assistant message (all) or the last one.",
        ),
    ] = "all",
    overrides: Overrides = None,
) -> None:
    """Generate responses with a trained checkpoint (targets, inferred personas or user adapters).

    [bold]Examples[/]

      personadlg generate runs/finetune-tiny/final --input data/test.jsonl --out gen.jsonl
      personadlg generate runs/cvae/final --input test.jsonl --out gen.jsonl --all-combinations generate.do_sample=true
    """
    _not_yet("`personadlg generate`", "it lands with the trainer issue")


def evaluate(
    generations: Annotated[
        Path, typer.Argument(help="Generation file (example records with `generation`).")
    ],
    metrics: Annotated[
        Optional[str],
        typer.Option(
            "--metrics", help="Comma-separated metric names (see `personadlg ls metrics`)."
        ),
    ] = None,
    classifier: Annotated[
        Optional[list[str]],
        typer.Option("--classifier", help="ATTR=DIR attribute classifier (repeatable)."),
    ] = None,
    nli: Annotated[Optional[Path], typer.Option("--nli", help="NLI model dir.")] = None,
    lm: Annotated[
        Optional[Path], typer.Option("--lm", help="Language model dir for perplexity.")
    ] = None,
    embedder: Annotated[
        Optional[Path], typer.Option("--embedder", help="Sentence embedding model dir.")
    ] = None,
    report: Annotated[Optional[Path], typer.Option("--out", help="Report JSON.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Score generations: BLEU, ROUGE-L, Dist, self-BLEU, P-Co, NLI, personalization accuracy, PPL, embedding similarity.

    [bold]Examples[/]

      personadlg eval gen.jsonl
      personadlg eval gen.jsonl --classifier language_style=runs/cls-ls/final --nli runs/nli/final --out report.json
    """
    _not_yet("`personadlg eval`", "it lands with the eval issue")


def chat(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint dir, e.g. runs/x/final.")],
    attributes: Annotated[
        Optional[str],
        typer.Option("--attributes", help="Target aspects, e.g. attitude=optimistic."),
    ] = None,
    persona: Annotated[
        Optional[list[str]], typer.Option("--persona", help="A persona sentence (repeatable).")
    ] = None,
    user: Annotated[
        Optional[str], typer.Option("--user", help="User id (lora: selects the user's adapter).")
    ] = None,
) -> None:
    """Talk to a trained model in the terminal (/reset, /persona, /attributes)."""
    _not_yet("`personadlg chat`", "it lands with the trainer issue")


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-o", help="Where the demo writes everything.")
    ] = Path("runs/demo"),
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the pipeline on the bundled demo corpus, offline, on a CPU.

    Today: stats → clean → split. Training, generation and evaluation join as their issues land.
    """
    from personadlg.cli.data import render_stats
    from personadlg.demo import run_demo

    summary = run_demo(out_dir)
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
    out.print(f"demo outputs in {out_dir}/")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Models")(synth)
    app.command(rich_help_panel="Models")(train)
    app.command(rich_help_panel="Models")(generate)
    app.command("eval", rich_help_panel="Models")(evaluate)
    app.command(rich_help_panel="Models")(chat)
    app.command(rich_help_panel="Models")(demo)
