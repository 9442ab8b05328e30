"""A fit's step plan, AdamW parameter groups and learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from personadlg.config import TrainConfig
from personadlg.errors import UsageError
from personadlg.models.base import GROUP
from personadlg.training.fit_state import Accelerates


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps a fit runs."""

    steps_per_epoch: int
    total: int
    warmup: int


def plan_steps(
    tc: TrainConfig,
    *,
    micro_batches: int,
    train_examples: int,
    world: int,
    steps: int | None = None,
) -> StepPlan:
    """The step plan of TC given this process's MICRO_BATCHES per epoch (the same in every epoch);
    STEPS, when given, replaces train.max_steps / epochs.

    Raises:
        UsageError: when an epoch holds no optimizer step (and STEPS is not 0).
    """
    per_epoch = micro_batches // tc.grad_accum
    if per_epoch == 0 and steps != 0:
        raise UsageError(
            f"{train_examples} training examples are fewer than one optimizer step needs "
            f"(train.batch_size {tc.batch_size} x {world} process(es) x train.grad_accum {tc.grad_accum})"
        )
    total = steps if steps is not None else tc.max_steps or math.ceil(tc.epochs * per_epoch)
    return StepPlan(
        steps_per_epoch=max(per_epoch, 1),
        total=total,
        warmup=tc.warmup_steps or int(tc.warmup_ratio * total),
    )


def batch_groups(feats: list[dict[str, Any]]) -> list[int] | None:
    """Group ids for group-homogeneous batches, when the method's features carry GROUP."""
    if not feats or GROUP not in feats[0]:
        return None
    return [int(f[GROUP][0]) for f in feats]


def param_groups(
    module: torch.nn.Module,
    weight_decay: float,
    lr: float,
    param_lr: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only (not biases, norms, 1-d); each parameter's peak
    learning rate is that of the first `train.param_lr` glob its name matches, else LR.

    Raises:
        UsageError: for a glob that matches no parameter at all (a typo).
    """
    patterns = dict(param_lr or {})
    used: set[str] = set()
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        rate = lr
        for pattern, value in patterns.items():
            if fnmatchcase(name, pattern):
                rate = float(value)
                used.add(pattern)
                break
        decays = not (p.ndim < 2 or "norm" in name.lower() or name.endswith(".bias"))
        groups.setdefault((rate, decays), []).append(p)
    names = [n for n, _ in module.named_parameters()]
    unknown = [k for k in patterns if k not in used and not any(fnmatchcase(n, k) for n in names)]
    if unknown:  # a typo; a pattern of parameters this stage freezes is fine
        prefixes = sorted({n.split(".", 1)[0] for n in names})
        raise UsageError(
            f"train.param_lr: {', '.join(repr(k) for k in unknown)} matches no parameter "
            f"(names start with: {', '.join(prefixes)}; a glob such as 'heads.*')"
        )
    return [
        {"params": params, "weight_decay": weight_decay if decays else 0.0, "lr": rate}
        for (rate, decays), params in sorted(
            groups.items(), key=lambda kv: (kv[0][0], not kv[0][1])
        )
    ]


def make_scheduler(
    name: str, optimizer: torch.optim.Optimizer, *, warmup: int, total: int
) -> LRScheduler:
    """The `train.scheduler` schedule (linear, cosine, constant; each after WARMUP steps)."""
    from transformers import get_scheduler

    scheduler: LRScheduler = get_scheduler(
        {"constant": "constant_with_warmup"}.get(name, name),
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total,
    )
    return scheduler


def setup_optimizer(
    module: torch.nn.Module, tc: TrainConfig, acc: Accelerates, *, plan: StepPlan
) -> tuple[torch.nn.Module, torch.optim.Optimizer, LRScheduler]:
    """AdamW on MODULE's trainable parameters and TC's schedule over PLAN, prepared by ACC:
    (the prepared module, its optimizer, the schedule)."""
    optimizer = torch.optim.AdamW(
        param_groups(module, tc.weight_decay, tc.lr, tc.param_lr), lr=tc.lr
    )
    scheduler = make_scheduler(tc.scheduler, optimizer, warmup=plan.warmup, total=plan.total)
    prepared, optimizer = acc.prepare(module, optimizer)
    return prepared, optimizer, scheduler
