"""`personadlg synth`: dialogue data from an LLM API, aspect by aspect."""

from __future__ import annotations

from typing import Annotated

import typer

from personadlg.cli._console import err, out, print_json, table
from personadlg.cli._options import Overrides


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
        typer.Option(
            "--collect", help="Batch mode: poll, download and merge the recorded batches."
        ),
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry the units recorded as failed.")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Synthesize aspect-level dialogues through any OpenAI-compatible API (MIRACLE's data method).

    Concurrent, rate-limited, resumable (a killed run continues where it stopped; completed units are
    never paid for twice), cost-aware (`limits.max_cost`, `--dry-run`), and batch-API capable
    (`mode=batch`, then `--collect`). The API key is read from the environment variable named by
    `client.api_key_env` and never written anywhere.

    [bold]Examples[/]

      personadlg synth synth/miracle --dry-run
      OPENAI_API_KEY=... personadlg synth synth/miracle output=data/raw.jsonl limits.concurrency=32
      personadlg synth synth/miracle client.base_url=http://localhost:8000/v1 client.model=Qwen/Qwen2.5-7B-Instruct client.api_key_env=null
      personadlg synth synth/miracle mode=batch && personadlg synth synth/miracle mode=batch --collect
    """
    from personadlg.data.synth import load_synth_recipe

    cfg = load_synth_recipe(recipe, overrides or [])
    if dry_run:
        from personadlg.data.synth.runner import dry_run as estimate

        plan = estimate(cfg, retry_failed=retry_failed)
        if json_out:
            print_json(plan)
            return
        out.print(
            table(
                f"synth --dry-run: {cfg.client.model} ({cfg.mode})",
                ["", "value"],
                [
                    ["units (topics × targets × per_target)", f"{plan['units']:,}"],
                    ["to request", f"{plan['pending']:,}"],
                    ["prompt tokens (estimate)", f"{plan['prompt_tokens_estimate']:,}"],
                    ["completion tokens (estimate)", f"{plan['completion_tokens_estimate']:,}"],
                    [
                        "cost (estimate, USD)",
                        f"{plan['cost_estimate']:,.2f}"
                        if plan["priced"]
                        else "no price for this model in `prices`",
                    ],
                    ["template", plan["template"]],
                ],
                justify_numbers=False,
            )
        )
        return
    if cfg.mode == "batch" or collect:
        from personadlg.data.synth.batch import collect as run_collect
        from personadlg.data.synth.batch import submit

        summary = run_collect(cfg) if collect else submit(cfg, retry_failed=retry_failed)
    else:
        from personadlg.data.synth.runner import synthesize

        with synth_progress() as update:
            summary = synthesize(cfg, retry_failed=retry_failed, on_progress=update)
    if json_out:
        print_json(summary)
        return
    render_synth(summary)


def synth_progress(label: str = "synth"):  # type: ignore[no-untyped-def]
    """A progress bar for synth's request runs: done / failed / in flight / retrying, tokens and cost."""
    from contextlib import contextmanager

    @contextmanager
    def ctx():  # type: ignore[no-untyped-def]
        if not err.is_terminal:
            yield lambda view: None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            SpinnerColumn(),
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task(label, total=None, info="")

            def update(v: dict) -> None:
                info = f"failed {v['failed']} · in flight {v['in_flight']} · retries {v['retrying']} · {v['tokens']:,} tok · ${v['cost']:.2f}"
                bar.update(task, completed=v["done"] + v["failed"], total=v["total"], info=info)

            yield update

    return ctx()


def render_synth(s: dict) -> None:
    rows = [
        ["units", f"{s['units']:,}"],
        ["already done before this run", f"{s['already_done']:,}"],
        ["ok now", f"{s['ok_now']:,}"],
        ["failed now", ", ".join(f"{k} {v}" for k, v in s["failed_now"].items()) or "0"],
        ["retries", ", ".join(f"{k} {v}" for k, v in s["retries"].items()) or "0"],
        ["requests", f"{s['requests']:,}"],
        ["tokens (prompt / completion)", f"{s['prompt_tokens']:,} / {s['completion_tokens']:,}"],
        ["cost (USD)", f"{s['cost']:.4f}"],
        ["time", f"{s['seconds']:.1f} s"],
        ["dialogues in the output", f"{s['output_dialogues']:,}"],
        ["failed units", f"{s['failed_units']:,}"],
        ["still pending", f"{s['pending']:,}"],
    ]
    if s.get("batches_created"):
        rows.append(["batches created", ", ".join(b["id"] for b in s["batches_created"])])
    if s.get("batches"):
        rows.append(["batches", ", ".join(f"{k}: {v}" for k, v in s["batches"].items())])
    if s.get("stopped"):
        rows.append(["stopped", s["stopped"]])
    out.print(table("synth", ["", "value"], rows, justify_numbers=False))
    out.print(f"dialogues → {s['output']}\nfailures → {s['failed_file']}")
    if s.get("stopped"):
        err.print(f"stopped early ({s['stopped']}); rerun the same command to continue")


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Models")(synth)
