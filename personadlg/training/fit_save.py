"""A fit's checkpoints: what each one records, step checkpoints with keep-last-K, and the poll
that decides at a step boundary whether a signal or the timed checkpoint asks for one."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from personadlg import __version__
from personadlg.training import checkpoint as ckpt
from personadlg.training.fit_state import FitRun, LoopState
from personadlg.training.interrupt import StopFlag

EVAL_RESULTS = (
    "eval_results.json"  # the validation record of a checkpoint's step, when there is one
)


def save_checkpoint(run: FitRun, state: LoopState, name: str) -> Path:
    """Write checkpoint NAME of the current step (from every process); emits 'save'."""
    p = state.progress
    payload = {
        **asdict(p),
        "total_steps": run.total,
        "seed": run.tc.seed,
        "version": __version__,
        "processes": run.world,
        "recipe": run.recipe,
        **({"lineage": run.cfg.lineage} if run.cfg.lineage else {}),
    }
    path = ckpt.write_checkpoint(
        run.out,
        name,
        cfg=run.cfg,
        model=run.model,
        state=payload,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        accelerator=run.acc,
        extra_json={EVAL_RESULTS: state.last_valid}
        if state.last_valid.get("step") == p.step
        else None,
    )
    run.emit("save", {"path": str(path), "step": p.step})
    state.saved_step, state.saved_at = p.step, time.monotonic()
    return path


def save_step(run: FitRun, state: LoopState) -> Path:
    """The step checkpoint of the current step (written unless it already is); older ones beyond
    train.keep_last are deleted."""
    step = state.progress.step
    path = (
        run.out / ckpt.step_dir_name(step)
        if state.saved_step == step
        else save_checkpoint(run, state, ckpt.step_dir_name(step))
    )
    if run.acc.is_main_process:
        ckpt.prune_checkpoints(run.out, run.tc.keep_last)
    return path


def poll(run: FitRun, state: LoopState, stop: StopFlag) -> tuple[int, bool]:
    """(signal received by any process, timed checkpoint due on the main process); every process
    gets the same answer."""
    minutes = run.tc.save_every_minutes
    due = bool(
        minutes and run.acc.is_main_process and time.monotonic() - state.saved_at >= 60 * minutes
    )
    if run.world == 1:
        return stop.signum, due
    import torch.distributed as dist

    flags = torch.tensor([stop.signum, int(due)], dtype=torch.long, device=run.acc.device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return int(flags[0]), bool(flags[1])
