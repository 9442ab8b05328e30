"""What every data format provides: a reader yielding `Ok | Bad` items and, optionally, a writer.

Readers never raise on a bad record: they yield `Bad` (location, raw text, error) so that `clean`
can route it to its rejects file, `convert --on-error skip` to its, while `convert`, `stats` and
`train` stop on it with exit code 2. Every item says how many input records (the format's `unit`:
rows, lines, episodes, ...) it accounts for, so a caller can account for every one of them.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from personadlg.data.jsonl import Bad
from personadlg.data.schema import Dialogue
from personadlg.errors import DataError


@dataclass(slots=True)
class Ok:
    """A dialogue read from PATH, starting at LINE, built from N_RAW input records (merged turns).

    N_RAW is 0 for a further dialogue of a record already counted (e.g. the second speaker's view
    of a table row under `--assistant both`); RAW is the input text, for reports.
    """

    dialogue: Dialogue
    path: str
    line: int | None
    n_raw: int = 1
    raw: str = ""
    generated_id: bool = False
    """True when the reader made the id up (a record without one) in a format that can also
    carry ids, so a clash with a record's own id can be explained."""

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path


@dataclass(slots=True)
class BadRecords(Bad):
    """A `Bad` that stands for N_RAW input records (a dialogue merged from several that failed)."""

    n_raw: int = 1


Item = Ok | Bad

REST_UNREADABLE = "the rest of the file cannot be read"
SYSTEM_SEP = "\n\n"
"""Several system messages of one record are kept in `meta.system` as one text, joined by this."""


def records_of(item: Item) -> int:
    """How many input records ITEM accounts for (a plain `Bad` is one)."""
    return int(getattr(item, "n_raw", 1))


def ends_input(item: Bad) -> bool:
    """True when nothing after this Bad can be read (a JSON list broken in the middle)."""
    return item.error.detail.endswith(REST_UNREADABLE)


@dataclass
class FormatOptions:
    """Options some formats need. Unused options are ignored by formats that do not need them."""

    attributes: list[tuple[str, list[str]]] = field(default_factory=list)
    """(attribute, aspects in tag order) for MIRACLE tags: tag i means aspects[i]."""
    id_prefix: str | None = None
    """Prefix for generated dialogue ids (default: the input file's stem)."""
    split: str = "train"
    """RCDG split when INPUT is a directory."""
    strict_roles: bool = True
    """Require alternating roles and non-empty messages (False for `clean`, which repairs them)."""
    merge: bool = True
    """Merge consecutive single-turn records of the same dialogue back into one dialogue."""
    json_list: bool = False
    """Writers: emit one JSON list instead of JSONL, where the format allows both."""
    columns: dict[str, str] = field(default_factory=dict)
    """Tables (csv, tsv, parquet): record key -> column name (`--column KEY=COLUMN`)."""
    assistant: str | None = None
    """Tables with a transcript: the personalized speaker, or 'both' (one dialogue per speaker)."""
    counters: Counter[str] = field(default_factory=Counter)
    """What a reader noticed and repaired (e.g. unattributed or continuation lines), for reports."""


class Sink(Protocol):
    """A format writer bound to an open text file."""

    def write(self, dialogue: Dialogue) -> int:
        """Write one dialogue; return the number of output records it became.

        A dialogue the format cannot express raises DataError before anything is written.
        """

    def close(self) -> None:
        """Finish the file (e.g. close a JSON list)."""


@dataclass(frozen=True)
class Format:
    """A named data format: how to detect, read and (optionally) write it."""

    name: str
    description: str
    read: Callable[[Path, FormatOptions], Iterator[Item]]
    sniff: Callable[[Path, str], bool]
    writer: Callable[[IO[str], FormatOptions], Sink] | None = None
    unit: str = "records"
    """What one input record is called in reports (rows, lines, episodes, blocks, records)."""


def default_prefix(path: Path, opts: FormatOptions) -> str:
    """Id prefix for generated ids: the option, else the file name without extensions."""
    if opts.id_prefix:
        return opts.id_prefix
    return path.name.split(".", 1)[0] or "d"


def make_id(prefix: str, n: int) -> str:
    return f"{prefix}-{n:06d}"


def validate(
    dialogue_dict: dict[str, Any],
    path: str,
    line: int | None,
    raw: str,
    opts: FormatOptions,
    n_raw: int = 1,
    generated_id: bool = False,
) -> Item:
    """Validate a dialogue dict built by a reader → Ok, or Bad with the location."""
    try:
        dialogue = Dialogue.from_dict(dialogue_dict, strict_roles=opts.strict_roles)
    except DataError as err:
        located = err.at(path=path, line=line)
        if n_raw == 1:
            return Bad(path, line, raw, located)
        return BadRecords(path, line, raw, located, n_raw=n_raw)
    return Ok(dialogue, path, line, n_raw=n_raw, raw=raw, generated_id=generated_id)


def bad(path: str, line: int | None, raw: str, message: str | None = None, **kw: Any) -> Bad:
    return Bad(path, line, raw, DataError(message, path=path, line=line, **kw))


def messages_from_turns(context: list[str], response: str | None) -> list[dict[str, str]]:
    """Context turns (chronological, speakers alternating) + the persona owner's response → messages.

    The last context turn is the partner's (`user`); roles alternate backwards from there.
    """
    n = len(context)
    out = [
        {"role": "user" if (n - 1 - i) % 2 == 0 else "assistant", "content": t}
        for i, t in enumerate(context)
    ]
    if response is not None:
        out.append({"role": "assistant", "content": response})
    return out


@dataclass
class _Open:
    persona: tuple[str, ...]
    texts: list[str]
    line: int | None
    raws: list[str]
    extra: dict[str, Any]
    last_seen: int
    closed: bool = False


class TurnMerger:
    """Re-assemble dialogues from single-turn records (persona, context, response), streaming.

    Formats such as MORPHEUS and CLV store one record per response, with the whole history as
    context; consecutive records of one conversation alternate between its two speakers. A record
    extends an open dialogue of the same persona when its context is that dialogue's turns plus one
    partner turn. At most WINDOW records may pass between two turns of a dialogue, so memory stays
    constant. Dialogues come out in the order of their first record.
    """

    def __init__(self, path: str, prefix: str, opts: FormatOptions, window: int = 4) -> None:
        self.path, self.prefix, self.opts, self.window = path, prefix, opts, window
        self._open: OrderedDict[int, _Open] = OrderedDict()  # start counter -> dialogue
        self._by_persona: dict[tuple[str, ...], int] = {}
        self._count = 0
        self._n = 0

    def _finish(self, d: _Open) -> Item:
        self._n += 1
        turns, response = d.texts[:-1], d.texts[-1]
        rec = {
            "id": make_id(self.prefix, self._n),
            "messages": messages_from_turns(turns, response),
            "persona": list(d.persona),
            **d.extra,
        }
        return validate(rec, self.path, d.line, "\n".join(d.raws), self.opts, n_raw=len(d.raws))

    def _drain(self) -> Iterator[Item]:
        while self._open:
            start, first = next(iter(self._open.items()))
            if not first.closed:
                return
            self._open.popitem(last=False)
            if self._by_persona.get(first.persona) == start:
                del self._by_persona[first.persona]
            yield self._finish(first)

    def add(
        self,
        persona: list[str],
        context: list[str],
        response: str,
        line: int | None,
        raw: str,
        extra: dict[str, Any] | None = None,
    ) -> Iterator[Item]:
        """Feed one record; yield the dialogues that are complete."""
        self._count += 1
        key = tuple(persona)
        start = self._by_persona.get(key)
        d = self._open.get(start) if start is not None else None
        if (
            self.opts.merge
            and d is not None
            and not d.closed
            and len(context) == len(d.texts) + 1
            and context[: len(d.texts)] == d.texts
        ):
            d.texts.extend([context[-1], response])
            d.raws.append(raw)
            d.last_seen = self._count
        else:
            if d is not None:
                d.closed = True
            self._open[self._count] = _Open(
                key, [*context, response], line, [raw], dict(extra or {}), self._count
            )
            self._by_persona[key] = self._count
        for o in self._open.values():
            if not o.closed and self._count - o.last_seen > self.window:
                o.closed = True
        yield from self._drain()

    def close(self) -> Iterator[Item]:
        """Flush the dialogues still open at the end of the input."""
        for o in self._open.values():
            o.closed = True
        yield from self._drain()


def first_json_object(head: str) -> dict[str, Any] | None:
    """The first non-blank line of HEAD parsed as a JSON object, or None (for format sniffing)."""
    first = next((ln for ln in head.splitlines() if ln.strip()), "")
    try:
        obj = json.loads(first)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to be a record
        return None
    return obj if isinstance(obj, dict) else None


def read_converted(
    path: Path,
    source: Iterator[tuple[int, str, Any] | Bad],
    convert: Callable[[Any, str], dict[str, Any]],
    opts: FormatOptions,
) -> Iterator[Item]:
    """Turn parsed records into dialogues with CONVERT(obj, fallback_id), locating every error."""
    name = str(path)
    prefix = default_prefix(path, opts)
    n = 0
    for item in source:
        if isinstance(item, Bad):
            yield item
            continue
        line, raw, obj = item
        n += 1
        fallback = make_id(prefix, n)
        try:
            rec = convert(obj, fallback)
        except DataError as err:
            yield Bad(name, line, raw, err.at(path=name, line=line))
            continue
        own = obj.get("id") if isinstance(obj, dict) else None
        generated = rec.get("id") == fallback and own != fallback
        yield validate(rec, name, line, raw, opts, generated_id=generated)


def split_persona(text: str, sep: str) -> list[str]:
    return [s.strip() for s in text.split(sep) if s.strip()]
