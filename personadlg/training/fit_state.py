"""What one `fit` works with: the fixed run (`FitRun`) and the state its loop changes (`LoopState`).

`FitRun` is set up once (model, data, optimizer, outputs) and read by every phase of the loop;
`LoopState` holds what the phases change: the checkpointed counters (`Progress`, saved in
trainer_state.json and restored on resume), the training terms since the last log line, the last
train and validation records, and when the last checkpoint was written.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.optim.lr_scheduler import LRScheduler

from personadlg.config import RunConfig, TrainConfig
from personadlg.training.data import epoch_batches
from personadlg.training.logging import MetricLogger

Event = Callable[[str, dict[str, Any]], None]
"""`on_event(kind, payload)`: progress of a fit for the CLI and callers (main process only)."""


def no_event(kind: str, payload: dict[str, Any]) -> None:
    """The `Event` of a process that reports nothing (every process but the main one)."""


class Trainable(Protocol):
    """What `fit` needs of a model: the part of `PersonaModel` that trains and saves (every
    PersonaModel is one; so is lora's per-user job, which does not generate)."""

    @property
    def module(self) -> torch.nn.Module:
        """The parameters to train; `module(**batch)` returns loss terms, `loss` the total."""

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]: ...

    def save(self, directory: Path) -> None: ...


class Accelerates(Protocol):
    """The members of accelerate's `Accelerator` a fit uses (`SoloAccelerator` has them too)."""

    @property
    def is_main_process(self) -> bool: ...

    @property
    def num_processes(self) -> int: ...

    @property
    def process_index(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def prepare(self, *objects: Any) -> Any: ...

    def unwrap_model(self, module: Any, /) -> Any: ...

    def autocast(self) -> AbstractContextManager[Any]: ...

    def backward(self, loss: torch.Tensor, /) -> None: ...

    def no_sync(self, module: Any, /) -> AbstractContextManager[Any]: ...

    def clip_grad_norm_(self, parameters: Any, max_norm: float, /) -> torch.Tensor: ...

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum", /) -> torch.Tensor: ...

    def wait_for_everyone(self) -> None: ...


@dataclass
class FitRun:
    """What stays fixed during one fit."""

    model: Trainable
    cfg: RunConfig
    acc: Accelerates
    out: Path
    train_feats: list[dict[str, Any]]
    valid_feats: list[dict[str, Any]]
    module: torch.nn.Module
    """MODEL's module as `acc.prepare` returned it (wrapped for several processes)."""
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    total: int
    """Optimizer steps this fit runs in all."""
    steps_per_epoch: int
    groups: list[int] | None
    """Group id per training example, for group-homogeneous batches (see `batch_groups`)."""
    emit: Event
    loggers: list[MetricLogger]
    recipe: dict[str, Any] | None
    started: float
    """`time.perf_counter()` when the fit began."""

    @property
    def tc(self) -> TrainConfig:
        return self.cfg.train

    @property
    def world(self) -> int:
        return self.acc.num_processes

    def epoch_order(self, epoch: int) -> list[list[int]]:
        """This process's micro-batches of EPOCH (see `epoch_order`)."""
        return epoch_order(
            self.tc,
            len(self.train_feats),
            epoch=epoch,
            world=self.world,
            rank=self.acc.process_index,
            groups=self.groups,
        )

    def batch(self, feats: list[dict[str, Any]], idx: list[int]) -> dict[str, torch.Tensor]:
        """FEATS[IDX] collated into a batch on this process's device."""
        collated = self.model.collate([feats[i] for i in idx])
        return {k: v.to(self.acc.device) for k, v in collated.items()}

    def log(self, record: dict[str, Any]) -> None:
        """Write RECORD to metrics.jsonl (and TensorBoard); a no-op off the main process."""
        for lg in self.loggers:
            lg.log(record)


def epoch_order(
    tc: TrainConfig,
    examples: int,
    *,
    epoch: int,
    world: int,
    rank: int,
    groups: list[int] | None,
) -> list[list[int]]:
    """Process RANK's micro-batches of EPOCH (lists of training example indices); the order
    depends only on (train.seed, EPOCH)."""
    return epoch_batches(
        examples,
        epoch=epoch,
        seed=tc.seed,
        batch_size=tc.batch_size,
        world_size=world,
        rank=rank,
        groups=groups,
    )


@dataclass
class Progress:
    """The loop's counters, saved in every checkpoint (trainer_state.json) and restored on resume."""

    step: int = 0
    epoch: int = 0
    micro: int = 0
    """Micro-batches of this epoch already trained on (this process's)."""
    best_valid: float | None = None
    bad_evals: int = 0
    """Validations since the best one (early stopping)."""

    @classmethod
    def from_state(cls, saved: dict[str, Any]) -> Progress:
        """The counters of a checkpoint's trainer_state.json."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


@dataclass
class Window:
    """Training terms summed over the micro-batches since the last log line."""

    sums: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    batches: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.perf_counter)


@dataclass
class LoopState:
    """What the phases of a fit change, step after step."""

    progress: Progress
    saved_step: int
    """The step of the last checkpoint written (or resumed from)."""
    saved_at: float = field(default_factory=time.monotonic)
    window: Window = field(default_factory=Window)
    last_train: dict[str, Any] = field(default_factory=dict)
    last_valid: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False


def early_stop(progress: Progress, record: dict[str, Any], patience: int) -> bool:
    """Note validation RECORD's loss in PROGRESS; True once PATIENCE validations in a row (> 0)
    did not improve on the best one."""
    loss = record.get("loss")
    if loss is None:
        return False
    if progress.best_valid is None or loss < progress.best_valid:
        progress.best_valid, progress.bad_evals = loss, 0
        return False
    progress.bad_evals += 1
    return patience > 0 and progress.bad_evals >= patience
