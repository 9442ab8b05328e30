"""`personadlg codebook inspect`: what the codes of a trained codebook stand for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from personadlg.cli._console import out, print_json
from personadlg.cli._options import AllowPickle, Overrides, TrustRemoteCode
from personadlg.errors import UsageError

app = typer.Typer(
    name="codebook",
    help="Inspect a codebook (MORPHEUS) checkpoint.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("inspect")
def inspect(
    checkpoint: Annotated[
        Path, typer.Argument(help="A codebook checkpoint dir, e.g. runs/x/final.")
    ],
    data: Annotated[
        Path, typer.Option("--data", "-d", help="Dialogues (or examples) with personas.")
    ],
    code: Annotated[
        Optional[int],
        typer.Option("--code", help="Show one code, with sample generations conditioned on it."),
    ] = None,
    top: Annotated[int, typer.Option("--top", help="Nearest persona sentences per code.")] = 3,
    contexts: Annotated[
        int, typer.Option("--contexts", help="With --code: contexts to generate for.")
    ] = 3,
    limit: Annotated[
        int, typer.Option("--limit", help="Examples whose histories predict codes (usage).")
    ] = 500,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
    overrides: Overrides = None,
) -> None:
    """For each code: its usage (share of the data's persona segments nearest to it, and of the
    codes the predictor chooses from the histories) and the persona sentences nearest to it;
    with --code K, that code alone and sample generations with K in every slot.

    [bold]Examples[/]

      personadlg codebook inspect runs/codebook-tiny/final --data data/train.jsonl
      personadlg codebook inspect runs/codebook-tiny/final --data data/train.jsonl --code 3 --contexts 5
    """
    from rich.table import Table

    from personadlg.generation.generate import decoding_config, load_examples
    from personadlg.models.codebook.inspect import inspect_codebook
    from personadlg.models.loading import load_policy
    from personadlg.training.checkpoint import load_config, load_model

    cfg = load_config(checkpoint)
    if cfg.method != "codebook":
        raise UsageError(
            f"{checkpoint}: a {cfg.method} checkpoint; this command inspects codebook checkpoints"
        )
    examples = load_examples(data, "all")
    decoding = decoding_config(cfg.generate, overrides or [])
    with load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle):
        model = load_model(checkpoint, cfg)
    report = inspect_codebook(
        model,
        examples,
        top=top,
        code=code,
        contexts=contexts,
        predict_limit=limit,
        decoding=decoding,
    )
    if as_json:
        print_json(report)
        return
    a, p = report["assigned"], report["predicted"]
    out.print(
        f"{checkpoint}: {int(a['codes'])} codes; {report['sentences']:,} distinct persona sentences "
        f"use {int(a['used'])} (usage perplexity {a['usage_ppl']:.1f}); the predictor chooses "
        f"{int(p['used'])} over {report['examples']:,} histories (perplexity {p['usage_ppl']:.1f})"
    )
    table = Table(header_style="bold", show_lines=False)
    for col in ("code", "persona share %", "predicted %", "nearest persona sentences"):
        table.add_column(col)
    for row in report["codes"]:
        near = "\n".join(
            f"{n['sentence']} ({n['distance']:.2f}{'' if n['own'] else ', nearer another code'})"
            for n in row["nearest"]
        )
        table.add_row(
            str(row["code"]), f"{row['assigned_share']:.1f}", f"{row['predicted_share']:.1f}", near
        )
    out.print(table)
    for g in report.get("generations", []):
        out.print(
            f"[bold]{escape(g['id'])}[/] user: {escape(g['context'])}\n"
            f"  code {code}: {escape(g['generation'])}"
        )


def register(root: typer.Typer) -> None:
    root.add_typer(app, rich_help_panel="Models")
