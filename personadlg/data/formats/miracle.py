"""MIRACLE's JSONL (LZY-the-boys/MIRACLE, `dataset/dialogue` and `dataset/text`).

Dialogue lines: `{"input": [u_1..u_T], "output": [r_1..r_T], "personas": "<topic>", "tag": 0|1}`;
a T-turn conversation is stored as T lines holding its prefixes, which are merged back here. The
tag is the aspect index of one attribute (training files `dialogue_{l,a,m}`) or a list of indices,
one per attribute (the test file). Text lines: `{"text": "...", "labels": 0|1}` become
one-message dialogues labelled with the aspect, which is what attribute classifiers train on.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from personadlg.data.formats.base import (
    Format,
    FormatOptions,
    Item,
    default_prefix,
    first_json_object,
    make_id,
    validate,
)
from personadlg.data.jsonl import Bad, dumps, iter_json_lines
from personadlg.data.schema import Dialogue
from personadlg.errors import DataError, UsageError

MIRACLE_ATTRIBUTES: list[tuple[str, list[str]]] = [
    ("language_style", ["plain", "lyrical"]),
    ("attitude", ["pessimistic", "optimistic"]),
    ("mental_characteristics", ["emotional", "critical"]),
]
_SUFFIX = {"l": 0, "a": 1, "m": 2}
_ALIASES = {"languagestyle": "language_style", "mindchar": "mental_characteristics"}


def known_aspects(attribute: str) -> list[str] | None:
    """MIRACLE's aspect order for one of its attribute names (or its code-base alias)."""
    name = _ALIASES.get(attribute, attribute)
    return next((aspects for a, aspects in MIRACLE_ATTRIBUTES if a == name), None)


def tag_space(path: Path, opts: FormatOptions) -> list[tuple[str, list[str]]]:
    """The (attribute, aspects) list that names the tags: from options, else from the file name."""
    if opts.attributes:
        return opts.attributes
    m = re.search(r"(?:^|_)(?:dialogue|text)_([lam])(?:\.|$)", path.name)
    if m:
        return [MIRACLE_ATTRIBUTES[_SUFFIX[m.group(1)]]]
    return []


def read(path: Path, opts: FormatOptions) -> Iterator[Item]:
    name = str(path)
    space = tag_space(path, opts)
    prefix = default_prefix(path, opts)
    n = 0
    pending: dict[str, Any] | None = None  # the dialogue being extended by prefix lines
    for item in iter_json_lines(path):
        if isinstance(item, Bad):
            if pending:
                yield _emit(pending, name, opts)
                pending = None
            yield item
            continue
        lineno, text, obj = item
        try:
            rec = _record(obj, space, path)
        except DataError as err:
            if pending:
                yield _emit(pending, name, opts)
                pending = None
            yield Bad(name, lineno, text, err.at(path=name, line=lineno))
            continue
        if pending and opts.merge and _extends(pending, rec):
            pending.update(rec, raws=[*pending["raws"], text])
            continue
        if pending:
            yield _emit(pending, name, opts)
        n += 1
        pending = {**rec, "id": make_id(prefix, n), "line": lineno, "raws": [text]}
    if pending:
        yield _emit(pending, name, opts)


def _extends(prev: dict[str, Any], rec: dict[str, Any]) -> bool:
    if (
        "input" not in rec
        or "input" not in prev
        or rec["tagv"] != prev["tagv"]
        or rec["topic"] != prev["topic"]
    ):
        return False
    t = len(prev["input"])
    return (
        len(rec["input"]) == t + 1
        and rec["input"][:t] == prev["input"]
        and rec["output"][:t] == prev["output"]
    )


def _emit(p: dict[str, Any], name: str, opts: FormatOptions) -> Item:
    if "text" in p:
        messages = [{"role": "assistant", "content": p["text"]}]
    else:
        messages = []
        for i, (u, r) in enumerate(zip(p["input"], p["output"], strict=True)):
            if not (i == 0 and u == ""):
                messages.append({"role": "user", "content": u})
            messages.append({"role": "assistant", "content": r})
    rec = {"id": p["id"], "messages": messages, "attributes": p["attributes"]}
    if p.get("topic") is not None:
        rec["topic"] = p["topic"]
    if p.get("persona"):
        rec["persona"] = p["persona"]
    return validate(rec, name, p["line"], "\n".join(p["raws"]), opts, n_raw=len(p["raws"]))


def _tag_attrs(
    tag: Any, space: list[tuple[str, list[str]]], field: str, path: Path
) -> dict[str, str]:
    tags = tag if isinstance(tag, list) else [tag]
    if not space:
        if isinstance(tag, list) and len(tag) == len(MIRACLE_ATTRIBUTES):
            space = MIRACLE_ATTRIBUTES
        else:
            raise UsageError(
                f"{path}: MIRACLE tags are aspect indices; name the attribute with --attribute NAME "
                "(and --aspects A0,A1 unless it is language_style, attitude or mental_characteristics)"
            )
    if len(tags) != len(space):
        raise DataError(
            field=field,
            expected=f"{len(space)} tag(s) for {', '.join(a for a, _ in space)}",
            got=tag,
        )
    out = {}
    for (attr, aspects), t in zip(space, tags, strict=True):
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(aspects):
            raise DataError(
                field=field, expected=f"an aspect index 0..{len(aspects) - 1} of {attr}", got=t
            )
        out[attr] = aspects[t]
    return out


def _record(obj: Any, space: list[tuple[str, list[str]]], path: Path) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataError(expected="a JSON object", got=obj)
    if "text" in obj:
        text = obj["text"]
        if not isinstance(text, str):
            raise DataError(field="text", expected="a string", got=text)
        label = obj.get("labels", obj.get("label"))
        return {
            "text": text,
            "attributes": _tag_attrs(label, space, "labels", path),
            "tagv": label,
            "topic": None,
        }
    for key in ("input", "output"):
        v = obj.get(key)
        if not isinstance(v, list) or not v or not all(isinstance(s, str) for s in v):
            raise DataError(field=key, expected="a non-empty list of strings", got=v)
    if len(obj["input"]) != len(obj["output"]):
        raise DataError(
            field="output",
            expected=f"{len(obj['input'])} responses (one per input)",
            got=obj["output"],
        )
    personas = obj.get("personas")
    topic, persona = None, None
    if isinstance(personas, str):
        topic = personas
    elif isinstance(personas, list) and all(isinstance(s, str) for s in personas):
        persona = personas
    elif personas is not None:
        raise DataError(field="personas", expected="a string or a list of strings", got=personas)
    tag = obj.get("tag")
    return {
        "input": obj["input"],
        "output": obj["output"],
        "topic": topic,
        "persona": persona,
        "tagv": tag,
        "attributes": _tag_attrs(tag, space, "tag", path),
    }


class _Writer:
    """Writes each dialogue as MIRACLE prefix lines: line k holds turns 1..k, the last output is the target."""

    def __init__(self, f: IO[str], opts: FormatOptions) -> None:
        if not opts.attributes:
            raise UsageError(
                "--to miracle needs --attribute NAME (repeat it for list tags) to write the tag"
            )
        self.f, self.space = f, opts.attributes

    def write(self, dialogue: Dialogue) -> int:
        tags = []
        for attr, aspects in self.space:
            aspect = dialogue.attributes.get(attr)
            if aspect not in aspects:
                raise DataError(
                    field=f"attributes.{attr}",
                    expected=f"one of {', '.join(aspects)} (dialogue {dialogue.id!r})",
                    got=aspect,
                )
            tags.append(aspects.index(aspect))
        tag: int | list[int] = tags[0] if len(tags) == 1 else tags
        personas = dialogue.topic if dialogue.topic is not None else " ".join(dialogue.persona)
        inputs: list[str] = []
        outputs: list[str] = []
        last_user = ""
        n = 0
        for m in dialogue.messages:
            if m.role == "user":
                last_user = m.content if not last_user else last_user + "\n" + m.content
                continue
            inputs.append(last_user)
            outputs.append(m.content)
            last_user = ""
            self.f.write(
                dumps(
                    {
                        "input": list(inputs),
                        "output": list(outputs),
                        "personas": personas,
                        "tag": tag,
                    }
                )
                + "\n"
            )
            n += 1
        return n

    def close(self) -> None:
        pass


def sniff(path: Path, head: str) -> bool:
    obj = first_json_object(head)
    return obj is not None and (
        {"input", "output"} <= obj.keys() or ("text" in obj and ("labels" in obj or "label" in obj))
    )


FORMAT = Format(
    name="miracle",
    description="MIRACLE JSONL: {input, output, personas, tag} or {text, labels}",
    read=read,
    sniff=sniff,
    unit="lines",
    writer=_Writer,
)
