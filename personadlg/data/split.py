"""`personadlg split`: deterministic train/valid/test splits grouped so nothing leaks across them.

Groups are dialogues, users (`user_id`), personas, or the value of any field (`--by
meta.conversation` keeps the two speakers' views of one conversation together). A persona is the
set of its normalised sentences (`data/persona.py`), and personas that share at least
`persona_overlap` sentences form one group (connected components), so a test persona shares no
sentence with a training one. Group order is a seeded hash of the group key, so the split depends
only on the seed and the set of groups, not on record order. Splits are filled greedily in that
order (test, then valid) up to their share of dialogues; every other group goes to train.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personadlg import __version__
from personadlg.config import to_dict
from personadlg.data.formats import (
    Bad,
    FormatOptions,
    check_table_options,
    iter_items,
    read_dialogues,
)
from personadlg.data.jsonl import atomic_outputs, dumps
from personadlg.data.paths import check_outputs
from personadlg.data.persona import group_personas, persona_identity
from personadlg.data.schema import Dialogue
from personadlg.data.unique import IdTracker
from personadlg.errors import UsageError
from personadlg.registry import did_you_mean

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
GroupBy = str  # "dialogue" | "user" | "persona" | a field path such as "meta.conversation"
_FIELD = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")
_MAX_PATHS = 1000  # field paths remembered for a did-you-mean


def check_by(by: str) -> None:
    if by in ("dialogue", "user", "persona") or _FIELD.match(by):
        return
    raise UsageError(
        f"--by: expected dialogue, user, persona or a field path such as meta.conversation, got {by!r}"
    )


def field_value(d: Dialogue, path: str) -> Any:
    """The value at a dotted field path of a dialogue record (None when absent)."""
    node: Any = d.to_dict()
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def field_paths(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the non-empty values of a record (objects are walked, lists are not)."""
    for key, value in node.items():
        path = prefix + str(key)
        if isinstance(value, dict):
            yield from field_paths(value, path + ".")
        if not _empty(value):
            yield path


def _no_key(by: str, paths: set[str]) -> str:
    """The error when no record has the group key of BY."""
    if by in ("user", "persona"):
        what = "a user_id" if by == "user" else "a persona"
        return f"--by {by}: no record has {what}, so every dialogue would be a group of its own"
    names = sorted(paths)
    hint = did_you_mean(by, names)
    if hint:
        return f"--by {by}: no record has this field{hint}"
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    return f"--by {by}: no record has this field; fields the records have: {shown or 'none'}"


def group_key(d: Dialogue, by: str) -> str | None:
    """The leakage group of a dialogue, or None when the record has no such key (persona groups
    are resolved separately: see `PersonaGroups`)."""
    if by == "dialogue":
        return "d:" + d.id
    if by == "user":
        return None if d.user_id is None else "u:" + d.user_id
    if by == "persona":
        ident = persona_identity(d.persona)
        return "p:" + "\n".join(sorted(ident)) if ident else None
    value = field_value(d, by)
    if _empty(value):
        return None
    return f"f:{by}=" + json.dumps(value, sort_keys=True, ensure_ascii=False)


class PersonaGroups:
    """Persona sets seen in a file, grouped by shared sentences; `key(d)` is a dialogue's group."""

    def __init__(self, overlap: int) -> None:
        self.overlap = overlap
        self.ids: dict[frozenset[str], int] = {}
        self._key: list[str] = []

    def add(self, d: Dialogue) -> None:
        ident = persona_identity(d.persona)
        if ident:
            self.ids.setdefault(ident, len(self.ids))

    def resolve(self) -> int:
        """Group the persona sets; return the number of groups."""
        sets = list(self.ids)
        group = group_personas(sets, overlap=self.overlap)
        members: dict[int, set[str]] = defaultdict(set)
        for ident, g in zip(sets, group):
            members[g] |= ident
        # a group's key depends only on its sentences, not on the order the records came in
        names = {
            g: "p:" + hashlib.blake2b("\n".join(sorted(m)).encode(), digest_size=12).hexdigest()
            for g, m in members.items()
        }
        self._key = [names[g] for g in group]
        return len(members)

    def key(self, d: Dialogue) -> str | None:
        ident = persona_identity(d.persona)
        return self._key[self.ids[ident]] if ident else None


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=16).digest()


@dataclass
class SplitReport:
    input: str = ""
    by: str = "dialogue"
    seed: int = 0
    fractions: dict[str, float] = field(default_factory=dict)
    dialogues: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    assistant_messages: dict[str, int] = field(default_factory=dict)
    ungrouped: int = 0
    """Dialogues without the group key (no user_id / persona / field): each is its own group."""
    persona_overlap: int | None = None
    persona_sets: int = 0
    """--by persona: distinct persona sets (normalised sentence sets) ..."""
    groups_merged: int = 0
    """... and how many of them joined another set's group by sharing >= persona_overlap sentences."""
    outputs: dict[str, str] = field(default_factory=dict)
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def assign_groups(sizes: dict[str, int], *, valid: float, test: float, seed: int) -> dict[str, str]:
    """Map each group to a split. SIZES: group -> dialogues. Greedy in seeded-hash order."""
    total = sum(sizes.values())
    order = sorted(sizes, key=lambda k: _rank(seed, k))
    targets = {}
    for name, frac in (("test", test), ("valid", valid)):
        targets[name] = max(1, round(frac * total)) if frac > 0 else 0
    counts: Counter[str] = Counter()
    out = {}
    remaining = len(order)
    for key in order:
        remaining -= 1
        for name in ("test", "valid"):
            # leave at least one group for train
            if counts[name] < targets[name] and (remaining > 0 or counts["train"] > 0):
                out[key] = name
                counts[name] += sizes[key]
                break
        else:
            out[key] = "train"
            counts["train"] += sizes[key]
    return out


def split(
    input: str | Path,
    *,
    out_dir: str | Path,
    valid: float = 0.05,
    test: float = 0.05,
    by: GroupBy = "dialogue",
    persona_overlap: int = 1,
    seed: int = 0,
    fmt: str = "auto",
    format_options: FormatOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SplitReport:
    """Write OUT_DIR/{train,valid,test}.jsonl from INPUT (any supported format); return counts.

    Raises:
        DataError: on the first invalid record (`FILE:LINE: ...`), or a repeated id.
        UsageError: on bad fractions or grouping, or a group key that no record has.
    """
    for name, share in (("--valid", valid), ("--test", test)):
        if not 0 <= share < 1:  # NaN included
            raise UsageError(f"{name}: expected a share in [0, 1), got {share}")
    if valid + test >= 1:
        raise UsageError(
            f"--valid and --test: expected shares with a sum below 1, got {valid} and {test}"
        )
    check_by(by)
    check_table_options([Path(input)], fmt, format_options)
    if persona_overlap < 0:
        raise UsageError(
            f"--persona-overlap: expected a number of sentences >= 0, got {persona_overlap}"
        )
    check_outputs({f"{s}.jsonl": Path(out_dir) / f"{s}.jsonl" for s in SPLITS}, {"input": input})
    ids = IdTracker()
    personas = PersonaGroups(persona_overlap) if by == "persona" else None

    def key_of(d: Dialogue) -> str | None:
        return personas.key(d) if personas is not None else group_key(d, by)

    sizes: Counter[str] = Counter()
    seen = ungrouped = 0
    fields: set[str] = set()  # while no record has the field BY: the fields they have
    by_field = by not in ("dialogue", "user", "persona")

    def count(d: Dialogue) -> None:
        nonlocal seen, ungrouped
        k = key_of(d)
        seen += 1
        ungrouped += k is None
        if by_field and ungrouped == seen and len(fields) < _MAX_PATHS:
            fields.update(field_paths(d.to_dict()))
        sizes[k if k is not None else "d:" + d.id] += 1

    for n, item in enumerate(iter_items(input, fmt, format_options), 1):
        if isinstance(item, Bad):
            raise item.error
        d = item.dialogue
        ids.add(d.id, item.path, item.line)
        if personas is not None:
            personas.add(d)  # persona groups are known only after the whole file
        else:
            count(d)
        if on_progress and n % 1000 == 0:
            on_progress(n)
    ids.check()
    n_groups = 0
    if personas is not None:
        n_groups = personas.resolve()
        for d in read_dialogues(input, fmt, format_options):
            count(d)
    if by != "dialogue" and ungrouped and ungrouped == seen:
        raise UsageError(_no_key(by, fields))
    if len(sizes) < 2 and (valid > 0 or test > 0):
        raise UsageError(f"{input}: only {len(sizes)} {by} group(s); cannot split")
    where = assign_groups(dict(sizes), valid=valid, test=test, seed=seed)
    rep = SplitReport(
        input=str(input),
        by=by,
        seed=seed,
        fractions={"valid": valid, "test": test},
        ungrouped=ungrouped,
    )
    if personas is not None:
        rep.persona_overlap = persona_overlap
        rep.persona_sets = len(personas.ids)
        rep.groups_merged = len(personas.ids) - n_groups
    rep.dialogues = dict.fromkeys(SPLITS, 0)
    rep.assistant_messages = dict.fromkeys(SPLITS, 0)
    rep.groups = {s: sum(1 for v in where.values() if v == s) for s in SPLITS}
    out = Path(out_dir)
    paths = [out / f"{s}.jsonl" for s in SPLITS]
    with atomic_outputs(*paths) as handles:
        files = dict(zip(SPLITS, handles, strict=True))
        for d in read_dialogues(input, fmt, format_options):
            s = where[key_of(d) or "d:" + d.id]
            files[s].write(dumps(d.to_dict()) + "\n")  # type: ignore[union-attr]
            rep.dialogues[s] += 1
            rep.assistant_messages[s] += len(d.assistant_messages)
    rep.outputs = {s: str(p) for s, p in zip(SPLITS, paths, strict=True)}
    logger.debug("split %s by %s: %s", input, by, rep.dialogues)
    return rep
