"""Parsing helpers shared by commands (no heavy imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from personadlg.data.attributes import parse_targets
from personadlg.errors import UsageError

__all__ = ["parse_attribute_options", "parse_attribute_space", "parse_targets", "split_list"]


def parse_attribute_options(
    attributes: list[str] | None, aspects: list[str] | None = None
) -> list[tuple[str, list[str]]]:
    """`--attribute NAME=a,b` (or `--attribute NAME --aspects a,b`, paired by position) → [(NAME, [a, b])].

    A bare MIRACLE attribute name (language_style, attitude, mental_characteristics) gets MIRACLE's aspects.
    """
    from personadlg.data.formats.miracle import known_aspects

    attributes, aspects = list(attributes or []), list(aspects or [])
    if len(aspects) > len(attributes):
        raise UsageError(
            "--aspects given more often than --attribute; pair each --aspects with an --attribute"
        )
    out = []
    for i, text in enumerate(attributes):
        name, sep, rest = text.partition("=")
        name = name.strip()
        if not name:
            raise UsageError(f"--attribute {text!r}: expected NAME or NAME=aspect0,aspect1")
        if sep:
            names = [a.strip() for a in rest.split(",") if a.strip()]
        elif i < len(aspects):
            names = [a.strip() for a in aspects[i].split(",") if a.strip()]
        else:
            names = known_aspects(name) or []
            if not names:
                raise UsageError(
                    f"--attribute {name}: give its aspects in tag order, e.g. --attribute {name}=aspect0,aspect1"
                )
        if len(names) < 2 or len(set(names)) != len(names):
            raise UsageError(
                f"--attribute {name}: expected at least two distinct aspects, got {names}"
            )
        out.append((name, names))
    return out


def parse_attribute_space(
    attributes: list[str] | None, attributes_file: Path | None
) -> dict[str, list[str]]:
    """An attribute space from `--attribute NAME=a,b` options and/or a YAML/JSON file {attr: [aspects]}."""
    space: dict[str, list[str]] = {}
    if attributes_file is not None:
        import yaml

        from personadlg.config import coerce, load_yaml_text

        try:
            data = load_yaml_text(Path(attributes_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise UsageError(f"--attributes-file {attributes_file}: {err}") from None
        # a recipe: synth (attributes at the top) or training (data.attributes)
        if isinstance(data, dict) and isinstance(data.get("attributes"), dict):
            data = data["attributes"]
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"].get("attributes", data)
        # synth recipes map each aspect to its description: keep the aspect names
        if isinstance(data, dict):
            data = {a: list(v) if isinstance(v, dict) else v for a, v in data.items()}
        space.update(coerce(data, dict[str, list[str]], str(attributes_file)))
    for name, aspects in parse_attribute_options(attributes):
        space[name] = aspects
    return space


def parse_columns(values: list[str] | None) -> dict[str, str]:
    """`--column KEY=COLUMN` (repeatable) → {KEY: COLUMN}; `persona[User 1]=user 1 personas` works."""
    out: dict[str, str] = {}
    for text in values or []:
        key, sep, column = text.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise UsageError(
                f"--column {text!r}: expected KEY=COLUMN, e.g. --column transcript=dialogue"
            )
        out[key.strip()] = column.strip()
    return out


ColumnOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--column",
        help="Tables (csv, tsv, parquet): KEY=COLUMN, repeatable. Keys: transcript (Speaker: text "
        "lines), context + response, persona (one sentence per line), persona[SPEAKER], id, "
        "user_id, topic, generation, attributes.NAME, profile.KEY, meta.KEY.",
    ),
]
AssistantOpt = Annotated[
    Optional[str],
    typer.Option(
        "--assistant",
        help="Tables with a transcript: the personalized speaker (e.g. \"User 2\"), or 'both' "
        "(each conversation once per speaker, sharing meta.conversation).",
    ),
]


def split_list(values: list[str] | None) -> list[str]:
    """Repeatable and comma-separated options → one list."""
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


# -- loading opt-ins: the only way to run code from a model directory or to unpickle weights ------


TrustRemoteCode = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Allow models that ship their own Python code (auto_map) to run it; the files are named "
        "before they run. Never enabled by a recipe or a checkpoint.",
    ),
]
AllowPickle = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="UNSAFE: also load weights stored as pickles (pytorch_model.bin), which can run code "
        "when loaded. Default: safetensors only.",
    ),
]


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
