"""`personadlg profile infer`: per-user profiles through any OpenAI-compatible API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from personadlg.cli._console import err, out, print_json, set_interrupt_note, table
from personadlg.cli._options import Overrides
from personadlg.cli.data import FromOpt

app = typer.Typer(
    name="profile",
    help="Per-user profiles for data without them (inferred by an OpenAI-compatible model).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("infer")
def infer(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="Dialogues (any supported format); users are their user_id."
        ),
    ],
    recipe: Annotated[
        str,
        typer.Argument(
            metavar="RECIPE_OR_KEYS",
            help="Profile recipe (YAML path or bundled name: profile/infer), or keys on top of "
            "profile/infer: 'age=teens,20s,30s;gender=female,male;occupation=free'.",
        ),
    ],
    out_path: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Output dialogues JSONL (report beside it: OUT.report.json)."
        ),
    ],
    overrides: Overrides = None,
    from_: FromOpt = "auto",
    keep_existing: Annotated[
        bool,
        typer.Option(
            "--keep-existing/--no-keep-existing",
            help="Skip users whose every record already has every key, and never overwrite a value "
            "already there; --no-keep-existing infers every user and overwrites the declared keys.",
        ),
    ] = True,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also retry the users recorded as failed.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print users, requests and the estimated cost; send nothing."
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Infer a profile for every user from a sample of their messages, and write it into each of their records.

    One request per user (exactly once across crashes and reruns: journal in OUT.cache/), concurrent,
    rate-limited and retried like `synth`. Replies that are not JSON over the declared keys and
    allowed values are retried (`profile.max_invalid`), then the user is recorded as failed: their
    records are written unchanged and listed in the report. Every input record is written once, in
    input order. The API key is read from the environment variable named by `client.api_key_env`.

    [bold]Examples[/]

      personadlg profile infer chats.jsonl --out profiled.jsonl profile/infer --dry-run
      OPENAI_API_KEY=... personadlg profile infer chats.jsonl --out profiled.jsonl profile/infer limits.concurrency=32
      personadlg profile infer chats.jsonl --out profiled.jsonl 'age=teens,20s,30s,40s+;occupation=free' client.base_url=http://localhost:8000/v1 client.model=Qwen/Qwen2.5-7B-Instruct client.api_key_env=null
    """
    from personadlg.data.profile import load_profile_recipe

    cfg = load_profile_recipe(recipe, overrides or [])
    if dry_run:
        from personadlg.data.profile import dry_run as estimate

        plan = estimate(
            cfg,
            input_path,
            out_path,
            fmt=from_,
            keep_existing=keep_existing,
            retry_failed=retry_failed,
        )
        if json_out:
            print_json(plan)
            return
        render_plan(plan)
        return
    from personadlg.cli.synth import synth_progress
    from personadlg.data.profile import infer as run

    set_interrupt_note(
        f"users inferred so far are kept in {out_path}.cache/ (no output written); "
        "rerun the same command to continue"
    )
    with synth_progress("profile") as update:
        summary = run(
            cfg,
            input_path,
            out_path,
            fmt=from_,
            keep_existing=keep_existing,
            retry_failed=retry_failed,
            on_progress=update,
        )
    if json_out:
        print_json(summary)
        return
    render_summary(summary)


def render_plan(p: dict[str, Any]) -> None:
    rows = [
        ["records", f"{p['records']:,}"],
        ["records without user_id (passed through)", f"{p['records_without_user']:,}"],
        ["users", f"{p['users']:,}"],
        ["skipped (complete profile)", f"{p['skipped']:,}"],
        ["users to infer", f"{p['to_infer']:,}"],
        ["requests to send", f"{p['requests']:,}"],
        ["prompt tokens (estimate)", f"{p['prompt_tokens_estimate']:,}"],
        ["completion tokens (estimate)", f"{p['completion_tokens_estimate']:,}"],
        [
            "cost (estimate, USD)",
            f"{p['cost_estimate']:,.2f}" if p["priced"] else "no price for this model in `prices`",
        ],
        ["template", p["template"]],
    ]
    out.print(
        table(f"profile infer --dry-run: {p['model']}", ["", "value"], rows, justify_numbers=False)
    )


def render_summary(s: dict[str, Any]) -> None:
    rows = [
        ["records", f"{s['records']:,}"],
        ["records without user_id (passed through)", f"{s['records_without_user']:,}"],
        ["records with an inferred profile", f"{s['records_updated']:,}"],
        ["users", f"{s['users']:,}"],
        ["users inferred", f"{s['inferred']:,}"],
        ["  of which in this run", f"{s['inferred_now']:,}"],
        ["failed", f"{s['failed']:,}"],
        ["skipped (complete profile)", f"{s['skipped']:,}"],
        ["still pending", f"{s['pending']:,}"],
        ["requests", f"{s['requests']:,}"],
        ["retries", ", ".join(f"{k} {v}" for k, v in s["retries"].items()) or "0"],
        ["tokens (prompt / completion)", f"{s['prompt_tokens']:,} / {s['completion_tokens']:,}"],
        ["cost (USD)", f"{s['cost']:.4f}"],
        ["time", f"{s['seconds']:.1f} s"],
    ]
    if s.get("stopped"):
        rows.append(["stopped", s["stopped"]])
    out.print(table("profile infer", ["", "value"], rows, justify_numbers=False))
    for f in s["failed_users"][:10]:
        out.print(f"failed: {f['user_id']} ({f['class']}, {f['attempts']} attempts): {f['error']}")
    if len(s["failed_users"]) > 10:
        out.print(f"... and {len(s['failed_users']) - 10} more failed users (see the report)")
    out.print(f"dialogues → {s['output']}\nreport → {s['report']}")
    if s.get("stopped"):
        err.print(
            f"stopped early ({s['stopped']}); {s['pending']} users left unchanged — rerun the same command to continue"
        )


def register(root: typer.Typer) -> None:
    root.add_typer(app, rich_help_panel="Data")
