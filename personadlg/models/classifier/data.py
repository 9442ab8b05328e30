"""Training items for classifiers: (text, optional second text, label name), from several formats.

- task `attribute`: the assistant messages of dialogue records (any supported format) labelled
  with `data.attribute`, each labelled with its dialogue's aspect;
- task `text`: `{text, label}` JSONL (also MIRACLE's `{text, labels}`), or one file per class given as
  a glob such as `style/yelp/sentiment.dev.*`: each file's suffix is its class (`model.labels[i]`
  names class i);
- task `nli`: `{premise, hypothesis, label}` JSONL, MIRACLE's `{input, output, labels}` JSONL, or the
  RCDG persona-NLI text format `utterance</s>persona sentence</s>label` (premise = the persona
  sentence, hypothesis = the utterance; positive / negative / neutral become entailment /
  contradiction / neutral).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personadlg.data.formats import FormatOptions, read_dialogues
from personadlg.data.jsonl import Bad, check_nonempty, iter_json_lines, iter_text_lines
from personadlg.errors import DataError, UsageError

RCDG_NLI = {"positive": "entailment", "negative": "contradiction", "neutral": "neutral"}
NLI_ORDER = ("entailment", "neutral", "contradiction")
MIRACLE_NLI = {0: "not_entailment", 1: "entailment"}


@dataclass(frozen=True)
class Item:
    """One classifier example."""

    text: str
    label: str
    pair: str | None = None


def _paths(pattern: str | Path) -> list[Path]:
    text = str(pattern)
    if glob.has_magic(text):
        found = sorted(Path(p) for p in glob.glob(text))
        if not found:
            raise DataError("no file matches this pattern", path=text)
        return found
    return [Path(text)]


def read_items(path: Path, cfg: Any) -> Iterator[Item]:
    """Items of PATH for the recipe CFG (a RunConfig with a ClassifierConfig model)."""
    task = cfg.model.task
    if task == "attribute":
        yield from _attribute_items(path, cfg)
    elif task == "text":
        yield from _text_items(path, cfg.model.labels)
    else:
        yield from _nli_items(path)


def _attribute_items(path: Path, cfg: Any) -> Iterator[Item]:
    attr = cfg.data.attribute
    if not attr:
        raise UsageError(
            "the attribute classifier needs data.attribute, e.g. data.attribute=language_style"
        )
    for d in read_dialogues(path, cfg.data.format, FormatOptions()):
        aspect = d.attributes.get(attr)
        if aspect is None:
            continue
        for text in d.assistant_messages:
            yield Item(text=text, label=aspect)


def _text_items(pattern: Path, names: list[str]) -> Iterator[Item]:
    files = _paths(pattern)
    if len(files) == 1 and files[0].suffix in (".jsonl", ".json"):
        yield from _jsonl_text(files[0], names)
        return
    for f in files:  # one file per class: the suffix is the class
        check_nonempty(f)
        cls = f.suffix.lstrip(".") or f.name
        label = names[int(cls)] if cls.isdigit() and int(cls) < len(names) else cls
        for item in iter_text_lines(f):
            if isinstance(item, Bad):
                raise item.error
            _, text = item
            if text.strip():
                yield Item(text=text.strip(), label=label)


def _label_name(value: Any, names: list[str], field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataError(field=field, expected="a label name or index", got=value)
    if isinstance(value, int):
        if names and value < len(names):
            return names[value]
        return str(value)
    return value


def _jsonl_text(path: Path, names: list[str]) -> Iterator[Item]:
    check_nonempty(path)
    for item in iter_json_lines(path):
        if isinstance(item, Bad):
            raise item.error
        line, _, obj = item
        try:
            if not isinstance(obj, dict):
                raise DataError(expected="an object {text, label}", got=obj)
            text = obj.get("text")
            if not isinstance(text, str):
                raise DataError(field="text", expected="a string", got=text)
            key = "label" if "label" in obj else "labels"
            yield Item(text=text, label=_label_name(obj.get(key), names, key))
        except DataError as err:
            raise err.at(path=str(path), line=line) from None


def _nli_items(pattern: Path) -> Iterator[Item]:
    for path in _paths(pattern):
        check_nonempty(path)
        if path.suffix == ".jsonl":
            for item in iter_json_lines(path):
                if isinstance(item, Bad):
                    raise item.error
                line, _, obj = item
                try:
                    yield _nli_json(obj)
                except DataError as err:
                    raise err.at(path=str(path), line=line) from None
            continue
        for row in iter_text_lines(path):
            if isinstance(row, Bad):
                raise row.error
            line, text = row
            if not text.strip():
                continue
            parts = text.split("</s>")
            if len(parts) != 3 or parts[2].strip() not in RCDG_NLI:
                raise DataError(
                    f"expected 'utterance</s>persona sentence</s>positive|negative|neutral', got {text[:60]!r}",
                    path=str(path),
                    line=line,
                )
            yield Item(
                text=parts[1].strip(), pair=parts[0].strip(), label=RCDG_NLI[parts[2].strip()]
            )


def _nli_json(obj: Any) -> Item:
    if not isinstance(obj, dict):
        raise DataError(expected="an object {premise, hypothesis, label}", got=obj)
    if "premise" in obj:
        premise, hypothesis, label = obj.get("premise"), obj.get("hypothesis"), obj.get("label")
        for name, v in (("premise", premise), ("hypothesis", hypothesis)):
            if not isinstance(v, str):
                raise DataError(field=name, expected="a string", got=v)
        if isinstance(label, str):
            label = RCDG_NLI.get(label, label)
        return Item(
            text=str(premise),
            pair=str(hypothesis),
            label=_label_name(label, list(NLI_ORDER), "label"),
        )
    premise, hypothesis, label = obj.get("input"), obj.get("output"), obj.get("labels")
    if isinstance(premise, list):
        premise = "\n".join(map(str, premise))
    if not isinstance(premise, str) or not isinstance(hypothesis, str):
        raise DataError(
            expected="{premise, hypothesis, label} or MIRACLE's {input, output, labels}", got=obj
        )
    if label not in MIRACLE_NLI:
        raise DataError(field="labels", expected="0 or 1", got=label)
    return Item(text=premise, pair=hypothesis, label=MIRACLE_NLI[label])


def label_names(items_labels: set[str], cfg: Any) -> list[str]:
    """Label order: model.labels, else the declared aspects of data.attribute, else NLI order, else sorted."""
    if cfg.model.labels:
        names = list(cfg.model.labels)
    elif cfg.model.task == "attribute" and cfg.data.attribute in cfg.data.attributes:
        names = list(cfg.data.attributes[cfg.data.attribute])
    elif cfg.model.task == "nli" and items_labels <= set(NLI_ORDER):
        names = [n for n in NLI_ORDER if n in items_labels]
    elif items_labels == set(MIRACLE_NLI.values()):
        names = [MIRACLE_NLI[0], MIRACLE_NLI[1]]
    else:
        names = sorted(items_labels)
    unknown = sorted(items_labels - set(names))
    if unknown:
        raise UsageError(f"labels {unknown} are in the data but not in model.labels {names}")
    if len(names) < 2:
        raise UsageError(f"a classifier needs at least two labels; the training data has {names}")
    return names
