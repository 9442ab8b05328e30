"""What a generation run covers: the examples of its input, the targets each example is generated
for, and the seed of every (example, target) (shared by checkpoints, `generate.py`, and `method:
api` recipes, `api.py`)."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from personadlg.data.attributes import target_key
from personadlg.data.formats import FormatOptions, check_table_options, iter_any_examples
from personadlg.data.jsonl import Bad, check_nonempty
from personadlg.data.schema import Example
from personadlg.data.unique import IdTracker
from personadlg.errors import UsageError
from personadlg.registry import did_you_mean


def example_seed(base: int, example_id: str, target: dict[str, str] | None) -> int:
    """A 31-bit seed for one (example, target), stable across runs and batchings."""
    h = hashlib.blake2b(
        f"{base}\x00{example_id}\x00{target_key(target)}".encode(), digest_size=4
    ).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF


def all_combinations(space: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of one aspect per declared attribute."""
    if not space:
        raise UsageError(
            "--all-combinations needs an attribute space; the checkpoint's recipe declares none (data.attributes)"
        )
    names = sorted(space)
    return [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]


def check_targets(target: dict[str, str], space: dict[str, list[str]]) -> None:
    """Targets must use declared attributes and aspects (when the checkpoint declares a space)."""
    if not space:
        return
    for attr, aspect in target.items():
        if attr not in space:
            raise UsageError(
                f"--attributes: unknown attribute '{attr}'{did_you_mean(attr, list(space))}; declared: {', '.join(space)}"
            )
        if aspect not in space[attr]:
            raise UsageError(
                f"--attributes: unknown aspect '{aspect}' of {attr}{did_you_mean(aspect, space[attr])}; declared: {', '.join(space[attr])}"
            )


def targets_to_generate(
    space: dict[str, list[str]],
    *,
    targets: dict[str, str] | None = None,
    combinations: bool = False,
) -> list[dict[str, str] | None]:
    """The targets each example is generated for: every combination of SPACE (`--all-combinations`),
    TARGETS checked against SPACE (`--attributes`), or none ([None])."""
    if combinations:
        return list(all_combinations(space))
    if targets:
        check_targets(targets, space)
        return [targets]
    return [None]


def load_examples(
    path: Path, turns: str, *, fmt: str = "auto", opts: FormatOptions | None = None
) -> list[Example]:
    """Examples of a dialogue or example file in any readable format (strict)."""
    check_nonempty(path)
    check_table_options([path], fmt, opts)
    out = []
    ids = IdTracker()  # outputs are keyed by (id, target): two examples of one id would be one
    for item in iter_any_examples(path, fmt=fmt, opts=opts, turns=turns):
        if isinstance(item, Bad):
            raise item.error
        line, ex = item
        ids.add(ex.id, str(path), line)
        out.append(ex)
    ids.check()
    return out
