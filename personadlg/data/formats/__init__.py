"""Data formats: detection, reading any supported format as dialogues, and writing exports.

>>> for item in iter_items("valid_self_original_no_cands.txt"):   # format auto-detected
...     ...
>>> dialogues = list(read_dialogues("convai2.txt", fmt="parlai"))  # strict: stops on bad input
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from personadlg.data.formats.base import Format, FormatOptions, Item, Ok
from personadlg.data.jsonl import Bad, check_nonempty
from personadlg.data.schema import Dialogue, Example, expand_dialogue
from personadlg.errors import UsageError
from personadlg.registry import FORMATS

__all__ = [
    "Bad",
    "Format",
    "FormatOptions",
    "Item",
    "Ok",
    "check_table_options",
    "detect_format",
    "get_format",
    "iter_any_examples",
    "iter_items",
    "read_dialogues",
]

# detection order matters: specific shapes before generic ones
_DETECT_ORDER = (
    "csv",
    "tsv",
    "parquet",
    "rcdg",
    "parlai",
    "clv",
    "morpheus",
    "sharegpt",
    "miracle",
    "jsonl",
    "openai",
)


def get_format(name: str) -> Format:
    return FORMATS.get(name)


def _head(path: Path, size: int = 1 << 16) -> str:
    with open(path, "rb") as f:
        return f.read(size).decode("utf-8", errors="replace").lstrip("\ufeff")


def detect_format(path: str | Path) -> str:
    """Guess the format of PATH from its name and first bytes; UsageError when unsure."""
    p = Path(path)
    if p.is_dir():
        if get_format("rcdg").sniff(p, ""):
            return "rcdg"
        raise UsageError(f"{p}: is a directory (only RCDG input may be a directory)")
    check_nonempty(p)
    head = _head(p)
    for name in _DETECT_ORDER:
        if get_format(name).sniff(p, head):
            return name
    if p.suffix == ".jsonl":
        return "jsonl"  # let the reader say what is wrong with the first record
    raise UsageError(
        f"{p}: cannot detect the data format; pass --from ({', '.join(FORMATS.names())})"
    )


TABLE_FORMATS = ("csv", "tsv", "parquet")


def check_table_options(paths: list[Path], fmt: str, opts: FormatOptions | None) -> None:
    """`--column` and `--assistant` map a table's columns: refuse them (UsageError) when none of
    PATHS is a CSV / TSV / Parquet table, where they would be silently ignored."""
    if opts is None or not (opts.columns or opts.assistant):
        return
    names = [detect_format(p) if fmt == "auto" else fmt for p in paths]
    if any(n in TABLE_FORMATS for n in names):
        return
    flag = "--column" if opts.columns else "--assistant"
    label = "JSONL" if names[0] == "jsonl" else names[0]
    what = f"{paths[0]} is {label}" if len(paths) == 1 else "no input is a table"
    raise UsageError(f"{flag}: applies to CSV / TSV / Parquet inputs; {what}")


def iter_items(
    path: str | Path, fmt: str = "auto", opts: FormatOptions | None = None
) -> Iterator[Item]:
    """Read PATH in format FMT ('auto' = detect), yielding Ok(dialogue) or Bad(raw, error) items."""
    p = Path(path)
    opts = opts or FormatOptions()
    name = detect_format(p) if fmt == "auto" else fmt
    if name != "rcdg" or not p.is_dir():
        check_nonempty(p)
    yield from get_format(name).read(p, opts)


def read_dialogues(
    path: str | Path, fmt: str = "auto", opts: FormatOptions | None = None
) -> Iterator[Dialogue]:
    """Strict reading: yield dialogues, raise DataError (`FILE:LINE: ...`) on the first bad record."""
    for item in iter_items(path, fmt, opts):
        if isinstance(item, Bad):
            raise item.error
        yield item.dialogue


def iter_any_examples(
    path: str | Path,
    *,
    fmt: str = "auto",
    opts: FormatOptions | None = None,
    turns: str = "all",
    max_context_turns: int = 0,
) -> Iterator[tuple[int | None, Example] | Bad]:
    """Example records of a file in any readable format: personadlg JSONL (examples or dialogues)
    as is; any other format converted on the fly (with the same validation as `convert`) and
    expanded into one example per assistant message. A table row with a `generation` column
    becomes one example (its last assistant message) carrying that generation."""
    from personadlg.data.formats.native import iter_examples

    p = Path(path)
    name = detect_format(p) if fmt == "auto" else fmt
    if name == "jsonl":
        yield from iter_examples(p, turns=turns, max_context_turns=max_context_turns)
        return
    for item in iter_items(p, name, opts):
        if isinstance(item, Bad):
            yield item
            continue
        d = item.dialogue
        generation = d.extra.pop("generation", None)
        examples = expand_dialogue(
            d,
            turns="last" if generation is not None else turns,
            max_context_turns=max_context_turns,
        )
        for ex in examples:
            if generation is not None:
                ex.generation = str(generation)
            yield item.line, ex


def writable_formats() -> list[str]:
    return [
        n
        for n in FORMATS.names()
        if FORMATS.entry(n).available and get_format(n).writer is not None
    ]
