"""What changed in a recipe between a checkpoint and the run that resumes from it.

A resumed run reproduces the uninterrupted one only when nothing that shapes the result changed.
Fields that only extend the run or change its bookkeeping (`train.max_steps`, `train.epochs`,
logging and checkpoint cadence, the output dir, `data.test`, the `generate:` defaults) may change
freely; any other change is refused unless the user allows it (`--allow-config-change`), and
every change is recorded in `config.yaml` under `history` with the step it took effect.
"""

from __future__ import annotations

from typing import Any

BOOKKEEPING = (
    "train.max_steps",
    "train.epochs",
    "train.log_every",
    "train.save_every",
    "train.save_every_minutes",
    "train.keep_last",
    "train.tensorboard",
    "train.output_dir",
    "data.test",
    "model.init_from",  # a resumed run's weights come from its checkpoint (the start is in lineage)
)
BOOKKEEPING_SECTIONS = ("generate.", "history", "lineage")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} → {'train.lr': 1}; lists and scalars are leaves."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {'from': old, 'to': new}} for every leaf that differs (missing = null)."""
    a, b = flatten(old), flatten(new)
    return {
        k: {"from": a.get(k), "to": b.get(k)}
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not k.startswith(("history", "lineage"))
    }


def result_changes(changes: dict[str, dict[str, Any]], new: dict[str, Any]) -> list[str]:
    """The changed fields that change the result (not bookkeeping). `train.eval_every` counts only
    when early stopping is on, since only then does validation steer training."""
    patience = flatten(new).get("train.early_stopping_patience") or 0
    out = []
    for k in changes:
        if k in BOOKKEEPING or k.startswith(BOOKKEEPING_SECTIONS):
            continue
        if k == "train.eval_every" and not patience:
            continue
        out.append(k)
    return out


def describe(changes: dict[str, dict[str, Any]], fields: list[str]) -> str:
    return "; ".join(f"{k}: {changes[k]['from']!r} -> {changes[k]['to']!r}" for k in fields)
