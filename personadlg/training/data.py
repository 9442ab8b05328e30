"""Training data: dialogues → examples → encoded features, and deterministic sharded batches.

The order of an epoch depends only on (seed, epoch): a seeded permutation is cut into global
batches of `batch_size × processes`, and process r takes the r-th slice of each. A run resumed
at any step therefore sees exactly the batches the uninterrupted run would have seen, and one
process with batch 8 sees the same global batches as two processes with batch 4.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from personadlg.config import DataConfig
from personadlg.data.formats import FormatOptions, read_dialogues
from personadlg.data.schema import Example, expand_dialogue
from personadlg.models.collate import feature_array

logger = logging.getLogger(__name__)


def resolve_data_path(value: str | None) -> Path | None:
    """A data path from a recipe; `demo` names the bundled demo corpus."""
    if value is None:
        return None
    if value == "demo":
        from personadlg.assets import demo_corpus

        return demo_corpus()
    return Path(value)


def iter_examples(path: Path, cfg: DataConfig) -> Iterator[Example]:
    """Examples of a dialogue file in any format (strict: stops at the first bad record)."""
    for d in read_dialogues(path, cfg.format, FormatOptions()):
        yield from expand_dialogue(d, turns=cfg.turns, max_context_turns=cfg.max_context_turns)


def dialogue_examples(path: Path, cfg: Any) -> Iterator[Example]:
    """The default training items: the examples of a dialogue file, read as the recipe's `data:` says."""
    return iter_examples(path, cfg.data)


Reader = Callable[[Path, Any], Iterable[Any]]


def encode_examples(
    path: Path,
    cfg: Any,
    encode: Callable[[Any], dict[str, Any] | None],
    read: Reader = dialogue_examples,
) -> list[dict[str, Any]]:
    """Encode every item of PATH (what READ yields for the recipe CFG); items ENCODE returns None
    for are skipped. Features keep their kind (`models/collate.py`: ints, floats, ragged lists)."""
    out, skipped = [], 0
    for ex in read(path, cfg):
        feats = encode(ex)
        if feats is None:
            skipped += 1
            continue
        out.append({k: feature_array(v) for k, v in feats.items()})  # each keeps its dtype
    if skipped:
        logger.info("%s: skipped %d examples without a usable reference", path, skipped)
    return out


def held_out(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train rows, valid rows): a seeded FRACTION of N rows held out for validation."""
    g = torch.Generator().manual_seed(seed + 7919)
    perm = torch.randperm(n, generator=g).tolist()
    k = max(1, round(fraction * n)) if fraction > 0 and n > 1 else 0
    return sorted(perm[k:]), sorted(perm[:k])


def epoch_batches(
    n: int,
    *,
    epoch: int,
    seed: int,
    batch_size: int,
    world_size: int = 1,
    rank: int = 0,
    groups: Sequence[int] | None = None,
) -> list[list[int]]:
    """This process's micro-batches (example indices) for EPOCH; the incomplete last global batch is dropped.

    With GROUPS (one group id per example), every global batch holds examples of one group only
    (e.g. MIRACLE's attribute-homogeneous batches): each group is shuffled and cut into global
    batches (its incomplete last one dropped), and the order of all global batches is shuffled.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    global_bs = batch_size * world_size
    if groups is None:
        perm = torch.randperm(n, generator=g).tolist()
        blocks = [perm[b * global_bs : (b + 1) * global_bs] for b in range(n // global_bs)]
    else:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} examples")
        members: dict[int, list[int]] = {}
        for i, grp in enumerate(groups):
            members.setdefault(int(grp), []).append(i)
        blocks = []
        for grp in sorted(members):
            rows = members[grp]
            perm = [rows[j] for j in torch.randperm(len(rows), generator=g).tolist()]
            blocks += [
                perm[b * global_bs : (b + 1) * global_bs] for b in range(len(rows) // global_bs)
            ]
        blocks = [blocks[j] for j in torch.randperm(len(blocks), generator=g).tolist()]
    return [blk[rank * batch_size : (rank + 1) * batch_size] for blk in blocks]


def eval_batches(n: int, *, batch_size: int, world_size: int = 1, rank: int = 0) -> list[list[int]]:
    """Every example exactly once across processes, in order."""
    mine = list(range(rank, n, world_size))
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
