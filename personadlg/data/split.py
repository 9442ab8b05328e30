"""`personadlg split`: deterministic train/valid/test splits grouped so nothing leaks across them.

Groups are dialogues, users (`user_id`) or personas (the persona sentences, case-folded). Group
order is a seeded hash of the group key, so the split depends only on the seed and the set of
groups, not on record order. Splits are filled greedily in that order (test, then valid) up to
their share of dialogues; every other group goes to train.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from personadlg import __version__
from personadlg.config import to_dict
from personadlg.data.formats import Bad, FormatOptions, iter_items, read_dialogues
from personadlg.data.jsonl import atomic_outputs, dumps
from personadlg.data.paths import check_outputs
from personadlg.data.schema import Dialogue
from personadlg.data.unique import IdTracker
from personadlg.errors import UsageError

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
GroupBy = Literal["dialogue", "user", "persona"]


def group_key(d: Dialogue, by: str) -> str | None:
    """The leakage group of a dialogue, or None when the record has no such key."""
    if by == "dialogue":
        return "d:" + d.id
    if by == "user":
        return None if d.user_id is None else "u:" + d.user_id
    if by == "persona":
        if not d.persona:
            return None
        return "p:" + "\n".join(" ".join(s.casefold().split()) for s in d.persona)
    raise UsageError(f"--by must be dialogue, user or persona, got {by!r}")


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
    """Dialogues without the group key (no user_id / persona): each is its own group."""
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
    seed: int = 0,
    fmt: str = "auto",
    format_options: FormatOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SplitReport:
    """Write OUT_DIR/{train,valid,test}.jsonl from INPUT (any supported format); return counts.

    Raises:
        DataError: on the first invalid record (`FILE:LINE: ...`), or a repeated id.
        UsageError: on bad fractions or grouping.
    """
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise UsageError(
            f"--valid and --test must be in [0, 1) with a sum below 1, got {valid} and {test}"
        )
    group_key(Dialogue(id="x", messages=[]), by)  # validates BY
    check_outputs({f"{s}.jsonl": Path(out_dir) / f"{s}.jsonl" for s in SPLITS}, {"input": input})
    sizes: Counter[str] = Counter()
    ids = IdTracker()
    ungrouped = 0
    for n, item in enumerate(iter_items(input, fmt, format_options), 1):
        if isinstance(item, Bad):
            raise item.error
        d = item.dialogue
        ids.add(d.id, item.path, item.line)
        key = group_key(d, by)
        if key is None:
            ungrouped += 1
            key = "d:" + d.id
        sizes[key] += 1
        if on_progress and n % 1000 == 0:
            on_progress(n)
    ids.check()
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
    rep.dialogues = dict.fromkeys(SPLITS, 0)
    rep.assistant_messages = dict.fromkeys(SPLITS, 0)
    rep.groups = {s: sum(1 for v in where.values() if v == s) for s in SPLITS}
    out = Path(out_dir)
    paths = [out / f"{s}.jsonl" for s in SPLITS]
    with atomic_outputs(*paths) as handles:
        files = dict(zip(SPLITS, handles, strict=True))
        for d in read_dialogues(input, fmt, format_options):
            key = group_key(d, by) or "d:" + d.id
            s = where[key]
            files[s].write(dumps(d.to_dict()) + "\n")  # type: ignore[union-attr]
            rep.dialogues[s] += 1
            rep.assistant_messages[s] += len(d.assistant_messages)
    rep.outputs = {s: str(p) for s, p in zip(SPLITS, paths, strict=True)}
    logger.info("split %s by %s: %s", input, by, rep.dialogues)
    return rep
