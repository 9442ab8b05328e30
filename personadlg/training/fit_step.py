"""One optimizer step of a fit, and the train record of the steps since the last log line."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from personadlg.training.fit_state import FitRun, LoopState, Window


def train_step(run: FitRun, state: LoopState, batches: list[list[int]]) -> torch.Tensor | None:
    """One optimizer step on the next `train.grad_accum` of this epoch's micro-BATCHES (from
    `state.progress.micro`); emits 'step'. Returns the gradient norm before clipping (None when
    train.max_grad_norm is 0)."""
    tc, acc, p = run.tc, run.acc, state.progress
    for k in range(tc.grad_accum):
        batch = run.batch(run.train_feats, batches[p.micro + k])
        sync: AbstractContextManager[Any] = (
            acc.no_sync(run.module) if k < tc.grad_accum - 1 else nullcontext()
        )
        with sync:
            with acc.autocast():
                terms = run.module(**batch)
            acc.backward(terms["loss"] / tc.grad_accum)
        add_terms(state.window, terms, tokens=run.model.count_tokens(batch)[0])
    grad_norm = (
        acc.clip_grad_norm_(run.module.parameters(), tc.max_grad_norm)
        if tc.max_grad_norm > 0
        else None
    )
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    p.micro += tc.grad_accum
    p.step += 1
    run.emit(
        "step",
        {
            **state.last_train,
            "step": p.step,
            "total": run.total,
            "epoch": p.step / run.steps_per_epoch,
            "lr": run.scheduler.get_last_lr()[0],
        },
    )
    return grad_norm


def add_terms(window: Window, terms: dict[str, torch.Tensor], *, tokens: int) -> None:
    """Add one micro-batch's loss TERMS (names starting with "_" are outputs, not terms)."""
    for name, value in terms.items():
        if not name.startswith("_"):
            window.sums[name] += float(value.detach())
    window.batches += 1
    window.tokens += tokens


def log_train(run: FitRun, state: LoopState, grad_norm: torch.Tensor | None) -> None:
    """The train record of the window (terms averaged over micro-batches and processes, tokens/s
    summed over processes) into metrics.jsonl and the 'log' event; then a new window."""
    window, step = state.window, state.progress.step
    names = sorted(window.sums)
    elapsed = time.perf_counter() - window.start
    values = run.acc.reduce(
        torch.tensor(
            [window.sums[n] / window.batches for n in names] + [float(window.tokens)],
            device=run.acc.device,
            dtype=torch.float64,
        ),
        "sum",
    ).tolist()
    record: dict[str, Any] = {
        "step": step,
        "split": "train",
        "epoch": round(step / run.steps_per_epoch, 4),
        "lr": run.scheduler.get_last_lr()[0],
        **{n: v / run.world for n, v in zip(names, values)},
        "tokens_per_s": values[-1] / max(elapsed, 1e-9),
        "elapsed_s": round(time.perf_counter() - run.started, 3),
    }
    if grad_norm is not None:
        record["grad_norm"] = float(grad_norm)
    state.last_train = record
    run.log(record)
    run.emit("log", record)
    state.window = Window()
