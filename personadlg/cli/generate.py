"""`personadlg generate`: responses for every example of a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from personadlg.cli._console import err, out, print_json, progress, set_interrupt_note, table
from personadlg.cli._options import (
    AllowPickle,
    AssistantOpt,
    ColumnOpt,
    InputFormat,
    Overrides,
    TrustRemoteCode,
    parse_columns,
)


def generate(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint dir, e.g. runs/x/final, or a `method: api` recipe (path or bundled "
            "name, e.g. api/persona): an OpenAI-compatible chat model, no training."
        ),
    ],
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
            "--turns", help="Dialogue input: every assistant message (all) or only the last."
        ),
    ] = "all",
    limit: Annotated[int, typer.Option("--limit", help="Only the first N examples (0 = all).")] = 0,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Start --out afresh (default: append the missing responses to an earlier output of "
            "the same checkpoint and settings, and refuse anything else).",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="api recipes: print the requests still to send and their estimated tokens and cost; "
            "send nothing, need no key.",
        ),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="api recipes: also request again the (example, target) pairs that failed before "
            "(listed in OUT.failed.jsonl).",
        ),
    ] = False,
    from_: InputFormat = "auto",
    column: ColumnOpt = None,
    assistant: AssistantOpt = None,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
    overrides: Overrides = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Generate responses with a trained checkpoint, or with an OpenAI-compatible model through a `method: api` recipe.

    Checkpoint overrides: max_new_tokens, do_sample, temperature, top_k, top_p, num_beams,
    repetition_penalty, no_repeat_ngram_size, batch_size, seed (with or without the `generate.`
    prefix); for cvae checkpoints also model.ode.* (guidance_scale, solver, atol, rtol, start,
    weights.ATTR, ...). Api recipe overrides: any dotted recipe key (client.base_url=...,
    client.model=..., limits.concurrency=32, limits.max_cost=2, prompt.context_turns=4); a bare
    key is a sampling parameter (temperature=0.2 top_p=0.9; max_new_tokens → max_tokens; seed →
    prompt.seed). The API key is read from the environment variable the recipe names
    (client.api_key_env), never from the command line.

    [bold]Examples[/]

      personadlg generate runs/finetune-tiny/final --input data/test.jsonl --out gen.jsonl
      personadlg generate runs/finetune-tiny/final -i test.jsonl -o gen.jsonl --turns last do_sample=true top_p=0.9 seed=1
      personadlg generate runs/finetune-tiny/final -i test.jsonl -o beam.jsonl num_beams=4 repetition_penalty=1.2
      personadlg generate runs/cvae-tiny/final -i test.jsonl -o lyrical.jsonl --attributes language_style=lyrical,attitude=optimistic
      personadlg generate runs/cvae-tiny/final -i test.jsonl -o all.jsonl --all-combinations model.ode.guidance_scale=8
      personadlg generate runs/cvae-tiny/final -i test.jsonl -o base.jsonl --all-combinations --no-guidance
      personadlg generate runs/finetune-tiny/final -i pairs.csv --column context=ctx --column response=reply -o gen.jsonl
      personadlg generate runs/finetune-tiny/final -i test.jsonl -o gen.jsonl top_p=0.8 --overwrite
      personadlg generate api/persona -i test.jsonl -o gpt.jsonl --dry-run
      OPENAI_API_KEY=... personadlg generate api/attributes -i test.jsonl -o gpt.jsonl --all-combinations limits.max_cost=2
      personadlg generate api/profile -i test.jsonl -o llama.jsonl client.base_url=http://localhost:11434/v1 client.model=llama3.1 client.api_key_env=null
    """
    from personadlg.cli._method_flags import check_method, overrides_of, split_flags
    from personadlg.data.attributes import parse_targets
    from personadlg.data.formats import FormatOptions

    flags, rest = split_flags("generate", overrides)
    from personadlg.generation.generate import generate_file
    from personadlg.models.loading import load_policy

    set_interrupt_note(
        f"the responses written so far are kept in {out_path}; the same command continues"
    )
    with (
        load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle),
        progress("generating", unit="responses") as update,
    ):
        summary = generate_file(
            checkpoint,
            input,
            out_path,
            overrides=[*rest, *overrides_of("generate", flags)],
            method_check=lambda method: check_method("generate", flags, method),
            turns=turns,
            targets=parse_targets(attributes),
            combinations=all_combinations,
            limit=limit,
            overwrite=overwrite,
            retry_failed=retry_failed,
            dry_run=dry_run,
            input_format=from_,
            format_options=FormatOptions(columns=parse_columns(column), assistant=assistant),
            on_progress=update,
        )
    if json_out:
        print_json(summary)
        return
    if summary.get("dry_run"):
        _print_dry_run(summary)
        return
    out.print(
        table(
            "generate",
            ["", "value"],
            [
                ["examples × targets", f"{summary['examples']:,} × {summary['targets']:,}"],
                ["generated now", f"{summary['generated']:,}"],
                ["already in the output", f"{summary['skipped_done']:,}"],
                ["responses / s", f"{summary['responses_per_s']:.1f}"],
                [
                    "decoding",
                    ", ".join(f"{k}={v}" for k, v in summary["decoding"].items() if k != "latent"),
                ],
                *(
                    [["latent", ", ".join(f"{k}={v}" for k, v in latent.items())]]
                    if (latent := summary["decoding"].get("latent"))
                    else []
                ),
                *(
                    [["seconds per stage", ", ".join(f"{k} {v:.2f}" for k, v in stages.items())]]
                    if (stages := summary.get("stage_seconds"))
                    else []
                ),
                *(_api_rows(summary) if summary.get("method") == "api" else []),
            ],
            justify_numbers=False,
        )
    )
    out.print(f"wrote {summary['out']}")
    if summary["collapse"].get("alarm"):
        err.print(f"warning: {summary['collapse']['message']}", markup=False, highlight=False)
    if summary.get("method") == "api":
        if summary["failed"]:
            err.print(
                f"{summary['failed']:,} requests failed (listed in {summary['failed_file']}); "
                "rerun with --retry-failed to request them again",
                markup=False,
                highlight=False,
            )
        if summary.get("stopped") or summary["pending"]:
            err.print(
                f"stopped early ({summary.get('stopped') or 'interrupted'}): {summary['pending']:,} "
                "responses still to request; rerun the same command to continue",
                markup=False,
                highlight=False,
            )


def _api_rows(summary: dict) -> list[list[str]]:
    return [
        [
            "in the output",
            f"{summary['output_records'] - summary['kept_from_earlier_runs']:,} of "
            f"{summary['total']:,}"
            + (
                f" (+ {summary['kept_from_earlier_runs']:,} of earlier runs: other targets or examples)"
                if summary["kept_from_earlier_runs"]
                else ""
            ),
        ],
        ["failed", f"{summary['failed']:,}"],
        ["requests sent (with retries)", f"{summary['requests']:,}"],
        [
            "tokens (prompt + completion)",
            f"{summary['prompt_tokens']:,} + {summary['completion_tokens']:,}",
        ],
        ["cost", f"${summary['cost']:.4f}"],
        ["template", summary["template"]],
    ]


def _print_dry_run(summary: dict) -> None:
    rows = [
        ["examples × targets", f"{summary['examples']:,} × {summary['targets']:,}"],
        ["requests to send", f"{summary['requests']:,} of {summary['total']:,}"],
        ["model", summary["model"]],
        ["template", summary["template"]],
        ["prompt tokens (estimate)", f"{summary['prompt_tokens_estimate']:,}"],
        ["completion tokens (estimate)", f"{summary['completion_tokens_estimate']:,}"],
        [
            "cost (estimate)",
            f"${summary['cost_estimate']:.4f}"
            if summary["priced"]
            else f"unknown (no prices for {summary['model']} in the recipe)",
        ],
    ]
    out.print(
        table("generate --dry-run (nothing sent)", ["", "value"], rows, justify_numbers=False)
    )


def register(app: typer.Typer) -> None:
    from personadlg.cli._method_flags import help_text

    app.command(
        rich_help_panel="Models",
        help=(generate.__doc__ or "") + help_text("generate"),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(generate)
