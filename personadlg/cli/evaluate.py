"""`personadlg eval`: score generation files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from personadlg.cli._console import out, print_json, progress, table
from personadlg.cli._options import (
    AllowPickle,
    AssistantOpt,
    ColumnOpt,
    InputFormat,
    TrustRemoteCode,
    parse_columns,
)
from personadlg.cli._render import render_report


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
    by: Annotated[
        Optional[str],
        typer.Option(
            "--by",
            metavar="FIELD",
            help="Also score every metric per group of records and its macro average over groups "
            "(each group weighs the same), next to the overall value. FIELD: user (the records' "
            "user_id; records without one form the group '(no user)', reported but not averaged). "
            "The table shows the overall and macro values; --per-user adds a row per user; --json "
            "and --out always hold every user (`by_user`, `macro`, `grouping`). With --bootstrap "
            "the macro average gets an interval resampling users; with --compare the paired "
            "difference of macro averages resamples users.",
        ),
    ] = None,
    min_user_records: Annotated[
        int,
        typer.Option(
            "--min-user-records",
            "--min-group-records",
            metavar="N",
            help="With --by: groups (users) with fewer records are reported but left out of the "
            "macro average.",
        ),
    ] = 1,
    per_user: Annotated[
        bool,
        typer.Option(
            "--per-user",
            "--per-group",
            help="With --by: print a row per group (user) in the table too.",
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
    judge: Annotated[
        Optional[str],
        typer.Option(
            "--judge",
            metavar="RECIPE",
            help="LLM judge recipe (YAML path or bundled name: judge/default): judge-persona, "
            "judge-attributes, judge-coherence through any OpenAI-compatible model (key from the "
            "recipe's client.api_key_env). Every judgement is cached: re-evaluating costs nothing.",
        ),
    ] = None,
    judge_cache: Annotated[
        Optional[Path],
        typer.Option(
            "--judge-cache",
            metavar="DIR",
            help="The judge cache (default: the recipe's cache_dir, else ~/.cache/personadlg/judge).",
        ),
    ] = None,
    judge_set: Annotated[
        Optional[list[str]],
        typer.Option(
            "--judge-set",
            metavar="KEY=VALUE",
            help="Dotted override of the judge recipe (repeatable), e.g. --judge-set "
            "client.model=gpt-4o --judge-set client.base_url=http://localhost:11434/v1.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="With --judge: print the judge requests not yet cached and their estimated "
            "tokens and cost; send nothing (no key needed).",
        ),
    ] = False,
    from_: InputFormat = "auto",
    column: ColumnOpt = None,
    assistant: AssistantOpt = None,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Score generations: BLEU, ROUGE-L, Dist, self-BLEU, P-Co, NLI, C-score, personalization accuracy, PPL, embedding similarity, LLM judges.

    Every number carries a signature saying how it was computed. Definitions: `personadlg ls metrics`.
    With --judge, an OpenAI-compatible model rates persona fit and coherence (1-5) and whether each
    targeted aspect shows (yes/no); failed judgements are reported, never dropped, and every
    judgement is cached so re-evaluating (or --compare) costs nothing twice.

    [bold]Examples[/]

      personadlg eval gen.jsonl
      personadlg eval gen.jsonl --classifier language_style=runs/cls-ls/final --classifier attitude=runs/cls-att/final --by-target
      personadlg eval gen.jsonl --nli runs/nli/final --lm gpt2 --bootstrap 1000 --out report.json
      personadlg eval base.jsonl --compare cvae.jsonl --metrics bleu-1,bleu-2,rouge-l,dist-2,sbleu
      personadlg eval gen.jsonl --metrics p-co,p-co-lift --p-co-stopwords none --bootstrap 1000
      personadlg eval gen.jsonl --by user --min-user-records 5 --bootstrap 1000 --per-user
      personadlg eval scored.csv --column context=ctx --column response=reply --column generation=gen
      personadlg eval gen.jsonl --judge judge/default --dry-run
      OPENAI_API_KEY=... personadlg eval gen.jsonl --judge judge/default --classifier attitude=runs/cls-att/final --per-example scores.jsonl
      personadlg eval base.jsonl --compare cvae.jsonl --judge judge/default --metrics judge-persona,judge-coherence
      personadlg eval gen.jsonl --judge judge/default --judge-set client.base_url=http://localhost:11434/v1 --judge-set client.model=llama3.1 --judge-set client.api_key_env=null
    """
    import json

    from personadlg.cli._options import split_list
    from personadlg.data.attributes import parse_targets
    from personadlg.data.formats import FormatOptions
    from personadlg.data.jsonl import AtomicWriter
    from personadlg.data.paths import check_outputs
    from personadlg.errors import UsageError
    from personadlg.metrics.compare import compare_files
    from personadlg.metrics.evaluate import evaluate_file
    from personadlg.metrics.grouped import check_by, check_min_records
    from personadlg.metrics.judge.config import check_judge_cache
    from personadlg.metrics.options import EvalOptions
    from personadlg.models.loading import load_policy

    if by is not None:
        check_by(by)
        check_min_records(min_user_records)
    elif per_user or min_user_records != 1:
        raise UsageError("--per-user and --min-user-records need --by user")
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
        judge=judge,
        judge_cache=str(judge_cache) if judge_cache else None,
        judge_overrides=tuple(judge_set or ()),
    )
    if judge is not None:
        check_judge_cache(opts.judge_config().cache_path(opts.judge_cache), report, per_example)
    reading: dict[str, Any] = {
        "input_format": from_,
        "format_options": FormatOptions(columns=parse_columns(column), assistant=assistant),
    }
    names = split_list([metrics]) if metrics else None
    if dry_run:
        from personadlg.metrics.judge_plan import judge_dry_run

        if judge is None:
            raise UsageError("--dry-run estimates the judge's requests: it needs --judge RECIPE")
        plan = judge_dry_run([generations, *(compare or [])], metrics=names, opts=opts, **reading)
        if json_out:
            print_json(plan)
        else:
            render_judge_plan(plan)
        return
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
                by=by,
                min_group_records=min_user_records,
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
                by=by,
                min_group_records=min_user_records,
                out=report,
                per_example=per_example,
                on_metric=step,
                **reading,
            )
    if json_out:
        print_json(result)
        return
    render_report(result)
    if by is not None:
        render_groups(result, by=by, per_group=per_user)
    if report:
        out.print(f"report → {report}")


def render_judge_plan(plan: dict[str, Any]) -> None:
    """--dry-run: per judge metric, the requests, those cached, those to send and the estimate."""
    j = plan["judge"]
    rows = []
    for name, p in [*plan["metrics"].items(), ("total", plan["total"])]:
        cost = f"{p['cost_estimate']:,.4f}" if p["priced"] else "no price for this model"
        rows.append(
            [
                name,
                p["requests"],
                p["cached"],
                p["to_send"],
                p["prompt_tokens_estimate"],
                p["completion_tokens_estimate"],
                cost,
            ]
        )
    out.print(
        table(
            f"eval --judge --dry-run: {j['model']} at {j['base_url']} (nothing sent)",
            [
                "metric",
                "requests",
                "cached",
                "to send",
                "prompt tokens",
                "completion tokens",
                "USD",
            ],
            rows,
        )
    )
    for name, why in plan.get("skipped", {}).items():
        out.print(f"{name}: skipped ({why})", markup=False, highlight=False)
    out.print(f"cache: {j['cache']}", markup=False, highlight=False)


def render_groups(result: dict[str, Any], *, by: str, per_group: bool = False) -> None:
    """The macro average over groups next to the overall value (and, with PER_GROUP, every group's
    row); with --compare, each system's macro average and its paired difference from the first."""
    from personadlg.metrics.grouped import GROUPINGS

    plural = GROUPINGS[by].plural
    systems = result.get("systems") or {result.get("input", "generations"): result}
    short = {k: str(k).rsplit("/", 1)[-1] for k in systems}
    first = next(iter(systems.values()))
    info = first["grouping"]
    names = list(first["macro"])
    title = (
        f"by {by}: macro average over {info['in_macro']:,} of {info[plural]:,} {plural} (each "
        f"{by} weighs the same) next to the overall value over all {first['n']:,} records"
    )
    if info.get("records_without_field"):
        title += (
            f"; {info['records_without_field']:,} of the {first['n']:,} records have no "
            f"{info['field']} (the group {GROUPINGS[by].missing}: in the overall value, never in "
            "the macro average)"
        )
    if len(systems) == 1:
        rows: list[list[Any]] = []
        for name in names:
            m = first["macro"][name]
            ci = "" if m["low"] is None else f"[{m['low']:.2f}, {m['high']:.2f}]"
            overall = first["metrics"][name]["value"]
            rows.append([name, overall, m["value"], ci, m[plural]])
        cols = ["metric", "overall", "macro", "95% CI", plural]
    else:
        rows = []
        for name in names:
            row: list[Any] = [name]
            for sys_ in systems.values():
                row += [
                    sys_["metrics"].get(name, {}).get("value"),
                    sys_["macro"].get(name, {}).get("value"),
                ]
            rows.append(row)
        cols = ["metric", *[f"{short[k]} {part}" for k in systems for part in ("overall", "macro")]]
    out.print(table(title, cols, rows))
    if info["excluded"]:
        left_out = "; ".join(f"{g} ({why})" for g, why in info["excluded"].items())
        out.print(
            f"not in the macro average (but reported): {left_out}", markup=False, highlight=False
        )
    if per_group:
        for key, sys_ in systems.items():
            body = [
                [
                    group,
                    row["n"],
                    *[row.get(n) for n in names],
                    "yes" if row["in_macro"] else "no",
                ]
                for group, row in sys_[f"by_{by}"].items()
            ]
            head = f"per {by}" + (f": {short[key]}" if len(systems) > 1 else "")
            out.print(table(head, [by, "n", *names, "in macro"], body))
    else:
        out.print(
            f"(a row per {by}: --per-{by}; every {by} is in the --json / --out report)",
            markup=False,
            highlight=False,
        )
    comp = (result.get("comparisons") or {}).get("macro_vs_base")
    if comp is None:
        return
    rows = []
    for system, metrics in comp.items():
        for name, d in metrics.items():
            lo, hi = d["ci95"]
            rows.append(
                [
                    short.get(system, str(system).rsplit("/", 1)[-1]),
                    name,
                    f"{d['diff']:+.2f}",
                    f"[{lo:+.2f}, {hi:+.2f}]",
                    f"{d['p']:.4f}",
                    d[plural],
                    d["method"],
                ]
            )
    base = str(result["comparisons"]["base"]).rsplit("/", 1)[-1]
    if not rows:
        out.print(
            f"no paired difference of macro averages from {base}: it needs 4 or more {plural} "
            "in both macro averages",
            markup=False,
            highlight=False,
        )
        return
    out.print(
        table(
            f"difference of macro averages from {base} (paired by {by}, resampling {plural})",
            ["system", "metric", "Δ macro", "95% CI", "p", plural, "method"],
            rows,
            justify_numbers=False,
        )
    )


def register(app: typer.Typer) -> None:
    app.command("eval", rich_help_panel="Models")(evaluate)
