"""Data commands: convert, clean, split, stats."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from personadlg.cli._console import err, out, print_json, progress, table
from personadlg.cli._options import (
    AssistantOpt,
    ColumnOpt,
    parse_attribute_options,
    parse_attribute_space,
    parse_columns,
    split_list,
)

FromOpt = Annotated[
    str,
    typer.Option(
        "--from", "-f", help="Input format (auto-detected by default). See `personadlg ls formats`."
    ),
]


READER_COUNTS = {
    "unattributed_lines": "lines before any speaker (dropped: they belong to no one)",
    "continuation_lines": "lines without a speaker (joined to the turn before)",
    "merged_turns": "consecutive turns of one side (merged into one message)",
    "dialogues": "dialogues from transcripts",
}


def convert(
    input: Annotated[
        Path,
        typer.Argument(
            help="Input file (RCDG: one of the per-/src-/tgt- files, or their directory)."
        ),
    ],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="Output file (written atomically).")
    ],
    from_: FromOpt = "auto",
    to: Annotated[
        str,
        typer.Option(
            "--to", help="Output format: jsonl (personadlg dialogues), miracle, morpheus, sharegpt."
        ),
    ] = "jsonl",
    attribute: Annotated[
        Optional[list[str]],
        typer.Option(
            "--attribute",
            "-a",
            help="MIRACLE tag attribute: NAME or NAME=aspect0,aspect1 (repeat for list tags).",
        ),
    ] = None,
    aspects: Annotated[
        Optional[list[str]],
        typer.Option(
            "--aspects",
            help="Aspect names in tag order for the matching --attribute, e.g. plain,lyrical.",
        ),
    ] = None,
    id_prefix: Annotated[
        Optional[str],
        typer.Option(
            "--id-prefix", help="Prefix of generated dialogue ids (default: input file stem)."
        ),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="RCDG split when INPUT is a directory.")
    ] = "train",
    merge: Annotated[
        bool,
        typer.Option(
            "--merge/--no-merge", help="Merge consecutive single-turn records of one dialogue."
        ),
    ] = True,
    column: ColumnOpt = None,
    assistant: AssistantOpt = None,
    on_error: Annotated[
        str,
        typer.Option(
            "--on-error",
            help="stop: the first bad input record ends the run (exit 2, nothing written); "
            "skip: bad records are rejected (counted, written to --rejects) and the rest converts.",
        ),
    ] = "stop",
    rejects: Annotated[
        Optional[Path],
        typer.Option(
            "--rejects",
            help="With --on-error skip: the rejected records as JSONL (source, line, reason, raw) "
            "(default: OUT.rejects.jsonl).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Convert a dialogue dataset between formats. Stops at the first bad record (exit 2) unless --on-error skip.

    The summary accounts for every input record: converted (into N dialogues) or rejected.

    [bold]Examples[/]

      personadlg convert ../shared/data/convai2/valid_self_original_no_cands.txt --from parlai --out convai2-valid.jsonl
      personadlg convert ../shared/data/rcdg/per-train.txt --from rcdg --out rcdg-train.jsonl
      personadlg convert dialogue_l.raw.jsonl --from miracle --attribute language_style --out miracle-l.jsonl
      personadlg convert dialogues.jsonl --to miracle --attribute attitude --out dialogue_a.raw.jsonl
      personadlg convert dialogues.jsonl --to sharegpt --out sharegpt.json
      personadlg convert chats.csv --column "persona[User 1]=user 1 personas" --column "persona[User 2]=user 2 personas" --column "transcript=Best Generated Conversation" --assistant both --out chats.jsonl
      personadlg convert pairs.parquet --column context=prompt --column response=reply --column persona=persona --out pairs.jsonl
      personadlg convert personachat.csv --column context=ctx --column response=reply --on-error skip --rejects bad-rows.jsonl --out pc.jsonl
    """
    from personadlg.data.convert import convert as run
    from personadlg.data.formats import FormatOptions
    from personadlg.errors import DataError

    opts = FormatOptions(
        attributes=parse_attribute_options(attribute, aspects),
        id_prefix=id_prefix,
        split=split,
        merge=merge,
        columns=parse_columns(column),
        assistant=assistant,
    )
    if on_error == "skip" and rejects is None:
        rejects = out_path.with_name(out_path.name.removesuffix(".jsonl") + ".rejects.jsonl")
    try:
        with progress("converting", unit="dialogues") as update:
            summary = run(
                input,
                out_path,
                fmt=from_,
                to=to,
                options=opts,
                on_error=on_error,
                rejects=rejects,
                on_progress=update,
            )
    except DataError as bad:
        if on_error == "stop" and bad.line is not None:  # one bad record stopped the run
            raise DataError(
                f"{bad}\n  nothing was written; --on-error skip converts the good records and "
                "writes each bad one, with its line and reason, to --rejects FILE"
            ) from None
        raise
    if json_out:
        print_json(summary)
        return
    unit = summary["unit"]
    out.print(
        table(
            f"convert {summary['format']} → {summary['to']}",
            ["", "count"],
            [
                [f"{unit} read", summary["read"]],
                [f"{unit} converted", summary["converted"]],
                [f"{unit} rejected", summary["rejected"]],
                [f"dialogues (from the converted {unit})", summary["dialogues"]],
                ["assistant messages", summary["assistant_messages"]],
                ["output records written", summary["written"]],
                *[[READER_COUNTS.get(k, k), v] for k, v in summary["reader"].items()],
            ],
        )
    )
    shown = summary["first_rejected"]
    if shown:
        out.print(f"rejected {unit}:")
        for r in shown:
            row = f" (row {r['row']})" if "row" in r else ""
            out.print(f"  {r['source']}{row}: {r['reason']}", markup=False, highlight=False)
        if summary["rejected"] > len(shown):
            out.print(f"  ... and {summary['rejected'] - len(shown)} more in {summary['rejects']}")
    out.print(f"wrote {summary['out']}")
    if summary["rejects"]:
        out.print(f"rejects → {summary['rejects']}")


def clean(
    inputs: Annotated[list[Path], typer.Argument(help="Input files, any supported format.")],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="Clean dialogues (personadlg JSONL).")
    ],
    rejects: Annotated[
        Optional[Path],
        typer.Option(
            "--rejects",
            help="Rejected units with filter and reason \\[default: OUT.rejects.jsonl].",
        ),
    ] = None,
    report: Annotated[
        Optional[Path], typer.Option("--report", help="Report JSON \\[default: OUT.report.json].")
    ] = None,
    from_: FromOpt = "auto",
    disable: Annotated[
        Optional[list[str]],
        typer.Option("--disable", help="Filters to turn off (comma-separated or repeated)."),
    ] = None,
    enable: Annotated[
        Optional[list[str]],
        typer.Option("--enable", help="Filters to turn on that are off by default."),
    ] = None,
    min_words: Annotated[
        int, typer.Option(help="\\[length] Shortest message in words (>= 0).")
    ] = 1,
    max_words: Annotated[
        int, typer.Option(help="\\[length] Longest message in words (>= --min-words, >= 1).")
    ] = 256,
    min_assistant_turns: Annotated[
        int, typer.Option(help="\\[min_turns] Fewest assistant messages (>= 0).")
    ] = 1,
    refusal_pattern: Annotated[
        Optional[list[str]],
        typer.Option("--refusal-pattern", help="\\[refusal] Extra regex (repeatable)."),
    ] = None,
    max_word_run: Annotated[
        int,
        typer.Option(
            help="\\[repetition] A word repeated this many times in a row is degenerate (>= 2)."
        ),
    ] = 5,
    script: Annotated[
        str,
        typer.Option(
            help="\\[script] Expected writing system: latin, cjk, cyrillic, greek, arabic, hebrew, devanagari, thai, any."
        ),
    ] = "latin",
    min_script_share: Annotated[
        float, typer.Option(help="\\[script] Share of letters that must be in that script (0-1).")
    ] = 0.8,
    lang: Annotated[
        Optional[str],
        typer.Option(
            help="\\[language] Expected language (en, de, fr, es, it, pt, nl); turns the filter on."
        ),
    ] = None,
    persona_copy_ngram: Annotated[
        int,
        typer.Option(help="\\[persona_copy] Words copied in a row that count as a copy (>= 2)."),
    ] = 8,
    persona_copy_max_share: Annotated[
        float,
        typer.Option(
            help="\\[persona_copy] Reject above this share of copying assistant messages (0-1)."
        ),
    ] = 0.5,
    attribute: Annotated[
        Optional[list[str]],
        typer.Option(
            "--attribute",
            "-a",
            help="\\[attributes] Declared attribute: NAME=aspect,aspect (repeatable).",
        ),
    ] = None,
    attributes_file: Annotated[
        Optional[Path],
        typer.Option(
            help="\\[attributes] YAML/JSON {attribute: \\[aspects]} (or a recipe with data.attributes)."
        ),
    ] = None,
    near_dup_threshold: Annotated[
        float,
        typer.Option(help="\\[near_dup] Estimated Jaccard similarity of word shingles (0-1, > 0)."),
    ] = 0.8,
    num_perm: Annotated[
        int,
        typer.Option(
            help="\\[near_dup] MinHash permutations, 8-1024: the estimate's error is ~1/sqrt(N) "
            "(3% at 1,024); more only costs time, memory and disk per record."
        ),
    ] = 128,
    shingle_size: Annotated[
        int,
        typer.Option(
            help="\\[near_dup] Words per shingle, 1-32 (longer shingles match only verbatim text)."
        ),
    ] = 3,
    strip_prefixes: Annotated[
        bool,
        typer.Option(
            "--strip-prefixes/--keep-prefixes", help="Remove speaker prefixes such as 'PersonB:'."
        ),
    ] = True,
    merge_same_role: Annotated[
        bool,
        typer.Option(
            "--merge-same-role/--keep-same-role", help="Merge consecutive same-role messages."
        ),
    ] = True,
    attr_tags: Annotated[
        Optional[list[str]],
        typer.Option(
            "--tag-attribute", help="For MIRACLE input: the tag attribute NAME or NAME=a,b."
        ),
    ] = None,
    column: ColumnOpt = None,
    assistant: AssistantOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Validate, normalize, filter and dedup dialogues. Every input unit ends in OUT or in REJECTS.

    Unreadable lines (not JSON, not a valid record) go to REJECTS with their raw text; the run
    does not stop. Filters (see `personadlg ls filters`): length, min_turns, refusal, repetition,
    script, language, persona_copy, attributes, exact_dup, near_dup.

    [bold]Examples[/]

      personadlg clean raw.jsonl --out clean.jsonl
      personadlg clean a.jsonl b.txt --out clean.jsonl --rejects rejects.jsonl --report report.json --lang en
      personadlg clean synth.jsonl --out clean.jsonl --attribute language_style=plain,lyrical --disable near_dup
      personadlg clean pairs.csv --column context=prompt --column response=reply --out clean.jsonl
    """
    from personadlg.data.clean import CleanConfig
    from personadlg.data.clean import clean as run
    from personadlg.data.formats import FormatOptions

    space = parse_attribute_space(attribute, attributes_file)
    cfg = CleanConfig(
        enable=split_list(enable),
        disable=split_list(disable),
        strip_speaker_prefixes=strip_prefixes,
        merge_same_role=merge_same_role,
        min_words=min_words,
        max_words=max_words,
        min_assistant_turns=min_assistant_turns,
        extra_refusal_patterns=list(refusal_pattern or []),
        max_word_run=max_word_run,
        script=script,
        min_script_share=min_script_share,
        lang=lang,
        persona_copy_ngram=persona_copy_ngram,
        persona_copy_max_share=persona_copy_max_share,
        attributes=space,
        near_dup_threshold=near_dup_threshold,
        num_perm=num_perm,
        shingle_size=shingle_size,
    )
    if out_path.name:  # (an empty --out is refused, by name, before anything is read)
        stem = out_path.name.removesuffix(".jsonl")
        rejects = rejects or out_path.with_name(stem + ".rejects.jsonl")
        report = report or out_path.with_name(stem + ".report.json")
    opts = FormatOptions(
        attributes=parse_attribute_options(attr_tags),
        columns=parse_columns(column),
        assistant=assistant,
    )
    with progress("cleaning", unit="dialogues") as update:
        rep = run(
            inputs,
            out=out_path,
            rejects=rejects,
            report=report,
            config=cfg,
            fmt=from_,
            format_options=opts,
            on_progress=update,
        )
    if json_out:
        print_json(rep.to_dict())
        return
    rows = [["clean", rep.clean], ["rejected", rep.rejected]]
    rows += [[f"  {name}", n] for name, n in rep.rejected_by_filter.items()]
    out.print(table(f"clean: {rep.units:,} dialogues in {rep.seconds:.1f}s", ["", "count"], rows))
    if rep.normalized:
        out.print(
            table(
                "normalized (repaired, kept)",
                ["", "count"],
                [[k, v] for k, v in rep.normalized.items()],
            )
        )
    out.print(f"clean → {out_path}\nrejects → {rejects}\nreport → {report}")


def split(
    input: Annotated[Path, typer.Argument(help="Dialogues, any supported format.")],
    out_dir: Annotated[
        Path,
        typer.Option("--out-dir", "-o", help="Writes train.jsonl, valid.jsonl, test.jsonl here."),
    ],
    valid: Annotated[
        float, typer.Option(help="Share of dialogues for validation, in [0, 1).")
    ] = 0.05,
    test: Annotated[
        float, typer.Option(help="Share of dialogues for test, in [0, 1); with --valid below 1.")
    ] = 0.05,
    by: Annotated[
        str,
        typer.Option(
            help="Group by dialogue, user, persona, or any field path (e.g. meta.conversation); "
            "a group never spans two splits. A record without the key is a group of its own; "
            "a key no record has is an error."
        ),
    ] = "dialogue",
    persona_overlap: Annotated[
        int,
        typer.Option(
            help="--by persona: personas sharing at least this many (normalised) sentences are one "
            "group, transitively; 0 = only identical sentence sets."
        ),
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the group order.")] = 0,
    from_: FromOpt = "auto",
    column: ColumnOpt = None,
    assistant: AssistantOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Split dialogues into train / valid / test, deterministically and without leakage.

    [bold]Examples[/]

      personadlg split clean.jsonl --out-dir data/ --valid 0.05 --test 0.05
      personadlg split clean.jsonl --out-dir data/ --by persona --seed 1   # unseen roles at test time (MORPHEUS)
      personadlg split both.jsonl --out-dir data/ --by meta.conversation    # both speakers' views together
      personadlg split chats.csv --column "transcript=dialogue" --assistant both --out-dir data/ --by meta.conversation
    """
    from personadlg.data.formats import FormatOptions
    from personadlg.data.split import split as run

    opts = FormatOptions(columns=parse_columns(column), assistant=assistant)
    with progress("splitting", unit="dialogues") as update:
        rep = run(
            input,
            out_dir=out_dir,
            valid=valid,
            test=test,
            by=by,
            persona_overlap=persona_overlap,
            seed=seed,
            fmt=from_,
            format_options=opts,
            on_progress=update,
        )
    if json_out:
        print_json(rep.to_dict())
        return
    rows = [
        [s, rep.dialogues[s], rep.groups[s], rep.assistant_messages[s]]
        for s in ("train", "valid", "test")
    ]
    out.print(
        table(
            f"split by {rep.by} (seed {rep.seed})",
            ["split", "dialogues", f"{rep.by} groups", "assistant msgs"],
            rows,
        )
    )
    if rep.persona_overlap is not None:
        groups = rep.persona_sets - rep.groups_merged
        out.print(
            f"{rep.persona_sets:,} distinct persona sets in {groups:,} groups: {rep.groups_merged:,} "
            f"merged into the group of a persona they share >= {rep.persona_overlap} sentence(s) with"
        )
    if rep.ungrouped:
        err.print(
            f"note: {rep.ungrouped} dialogue(s) have no {rep.by} key and were grouped by dialogue id"
        )
    out.print(f"wrote {out_dir}/{{train,valid,test}}.jsonl")


def stats(
    file: Annotated[
        Path,
        typer.Argument(help="Dialogue file (any supported format) or example/generation file."),
    ],
    from_: FromOpt = "auto",
    column: ColumnOpt = None,
    assistant: AssistantOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """Counts, lengths, attributes, users and personas of a data file. Stops at the first bad record (exit 2).

    [bold]Examples[/]

      personadlg stats clean.jsonl
      personadlg stats ../shared/data/convai2/valid_self_original_no_cands.txt --json
      personadlg stats pairs.parquet --column context=prompt --column response=reply
    """
    from personadlg.data.formats import FormatOptions
    from personadlg.data.stats import stats as run

    opts = FormatOptions(columns=parse_columns(column), assistant=assistant)
    with progress("reading", unit="dialogues") as update:
        s = run(file, fmt=from_, format_options=opts, on_progress=update)
    if json_out:
        print_json(s)
        return
    render_stats(s)


def render_stats(s: dict) -> None:
    def dist(d: dict) -> str:
        if not d.get("n"):
            return "-"
        return f"min {d['min']:g} · mean {d['mean']:g} · median {d['median']:g} · p90 {d['p90']:g} · max {d['max']:g}"

    if s["kind"] == "examples":
        rows = [
            ["examples", f"{s['examples']:,}"],
            ["dialogues", f"{s['dialogues']:,}"],
            ["with generation", f"{s['with_generation']:,}"],
            ["context messages", dist(s["context_messages"])],
            ["words / reference", dist(s["words_per_reference"])],
            ["words / generation", dist(s["words_per_generation"])],
        ]
        rows += [[f"target {k}", f"{v:,}"] for k, v in s["target_attributes"].items()]
        out.print(table(s["file"], ["", "value"], rows, justify_numbers=False))
        return
    rows = [
        ["dialogues", f"{s['dialogues']:,}"],
        ["messages", f"{s['messages']:,}"],
        ["user / assistant messages", f"{s['user_messages']:,} / {s['assistant_messages']:,}"],
        ["messages / dialogue", dist(s["messages_per_dialogue"])],
        ["assistant messages / dialogue", dist(s["assistant_messages_per_dialogue"])],
        ["words / user message", dist(s["words_per_message"]["user"])],
        ["words / assistant message", dist(s["words_per_message"]["assistant"])],
        [
            "users",
            f"{s['users']['count']:,} ({dist(s['users']['dialogues_per_user'])} dialogues each)"
            if s["users"]["count"]
            else "-",
        ],
        [
            "unique personas (sentence sets)",
            f"{s['personas']['unique']:,}"
            + (
                f" ({dist(s['personas']['sentences_per_persona'])} sentences; "
                f"{s['personas']['unique_sentences']:,} distinct sentences)"
                if s["personas"]["unique"]
                else ""
            ),
        ],
        ["topics", f"{s['topics']:,}"],
        ["profile keys", ", ".join(f"{k} ({v:,})" for k, v in s["profile_keys"].items()) or "-"],
    ]
    out.print(table(s["file"], ["", "value"], rows, justify_numbers=False))
    if s["attributes"]:
        arows = [[a, asp, n] for a, counts in s["attributes"].items() for asp, n in counts.items()]
        arows.append(["(unlabelled)", "", s["unlabelled_dialogues"]])
        out.print(table("attributes", ["attribute", "aspect", "dialogues"], arows))


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Data")(convert)
    app.command(rich_help_panel="Data")(clean)
    app.command(rich_help_panel="Data")(split)
    app.command(rich_help_panel="Data")(stats)
