"""The training loop, callable many times on one loaded model: `fit`.

`fit` trains MODEL's parameters that require gradients on already-encoded features, with its own
AdamW optimizer, schedule, early stopping, metrics.jsonl and checkpoints under OUT_DIR, and
returns the final state. `train(cfg)` (training/trainer.py) sets a run up and calls it once; a
method that trains in stages, or one adapter per user on one frozen base, calls it once per stage
or user, each with its own output directory.

Within a fit: the data order depends only on (seed, epoch), and resuming from one of its
checkpoints restores the optimizer, scheduler and random states, so a resumed fit reproduces the
uninterrupted one. SIGINT / SIGTERM save a checkpoint at the current step and raise
`Interrupted`; a checkpoint is also written every `train.save_every_minutes`.

The phases live beside it: the step plan and optimizer (optim.py), one optimizer step and its log
line (fit_step.py), validation (validation.py), checkpoints (fit_save.py); what they share is a
`FitRun` (fixed) and a `LoopState` (changing), in fit_state.py. This module sets a fit up, runs
the loop with its stop decisions and finishes it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from personadlg.config import RunConfig
from personadlg.models.backbone import enable_gradient_checkpointing
from personadlg.models.base import hook
from personadlg.training import checkpoint as ckpt
from personadlg.training.fit_save import EVAL_RESULTS, poll, save_checkpoint, save_step
from personadlg.training.fit_state import (
    Accelerates,
    Event,
    FitRun,
    LoopState,
    Progress,
    Trainable,
    early_stop,
    epoch_order,
    no_event,
)
from personadlg.training.fit_step import log_train, train_step
from personadlg.training.interrupt import Interrupted, StopFlag
from personadlg.training.logging import JsonlLogger, MetricLogger, TensorBoardLogger, plot_run
from personadlg.training.optim import batch_groups, plan_steps, setup_optimizer
from personadlg.training.validation import validate

logger = logging.getLogger(__name__)

__all__ = ["EVAL_RESULTS", "Accelerates", "Event", "TrainResult", "Trainable", "fit"]


@dataclass
class TrainResult:
    """The final state of a fit (or of a training run)."""

    output_dir: Path
    final_dir: Path
    steps: int
    total_steps: int
    last_train: dict[str, Any] = field(default_factory=dict)
    last_valid: dict[str, Any] = field(default_factory=dict)
    stopped_early: bool = False
    seconds: float = 0.0
    plot: Path | None = None
    stages: list[TrainResult] = field(default_factory=list)
    """A staged run's per-stage results, in order (the last one is this result itself)."""


def fit(
    model: Trainable,
    cfg: RunConfig,
    train_feats: list[dict[str, Any]],
    valid_feats: list[dict[str, Any]],
    *,
    out_dir: str | Path,
    acc: Accelerates,
    resume_from: Path | None = None,
    on_event: Event | None = None,
    recipe: dict[str, Any] | None = None,
    final_name: str = ckpt.FINAL_DIR,
    figures: bool = True,
    steps: int | None = None,
) -> TrainResult:
    """Train MODEL on TRAIN_FEATS per CFG.train; checkpoints, metrics.jsonl and loss.png in OUT_DIR.

    Args:
        model: a `PersonaModel` (or anything with its `module`, `collate`, `count_tokens`, `save`).
        cfg: the run config; its `train` section drives this fit, and the whole of it is saved in
            every checkpoint (config.yaml).
        train_feats, valid_feats: encoded features (what `model.encode` returns).
        acc: the accelerate Accelerator of this process (or a `SoloAccelerator`).
        resume_from: a checkpoint of this fit to continue from.
        on_event: called on the main process with ('start' | 'step' | 'log' | 'eval' | 'save' |
            'figure' | 'end', payload).
        recipe: what the user asked for (kept in trainer_state.json; resumes compare it).
        final_name: the last checkpoint's directory name (default `final`).
        figures: draw loss.png and the method's figures at the end.
        steps: run exactly this many optimizer steps instead of train.max_steps / epochs (0: no
            step at all: validate and save, e.g. a stage that only initialises weights).

    Raises:
        Interrupted: on SIGINT / SIGTERM, after saving a checkpoint at the current step.
    """
    run, state = start_fit(
        model,
        cfg,
        train_feats,
        valid_feats,
        out=Path(out_dir),
        acc=acc,
        resume_from=resume_from,
        on_event=on_event,
        recipe=recipe,
        steps=steps,
    )
    run_epochs(run, state)
    return finish(run, state, final_name=final_name, figures=figures)


def start_fit(
    model: Trainable,
    cfg: RunConfig,
    train_feats: list[dict[str, Any]],
    valid_feats: list[dict[str, Any]],
    *,
    out: Path,
    acc: Accelerates,
    resume_from: Path | None,
    on_event: Event | None,
    recipe: dict[str, Any] | None,
    steps: int | None,
) -> tuple[FitRun, LoopState]:
    """Set a fit up (arguments as in `fit`): the step plan, the optimizer and schedule (restored
    from RESUME_FROM), the loggers and OUT/config.yaml; emits 'start'."""
    tc = cfg.train
    started = time.perf_counter()
    emit: Event = on_event if (on_event and acc.is_main_process) else no_event
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    world, rank = acc.num_processes, acc.process_index
    groups = batch_groups(train_feats)
    first = epoch_order(tc, len(train_feats), epoch=0, world=world, rank=rank, groups=groups)
    plan = plan_steps(
        tc, micro_batches=len(first), train_examples=len(train_feats), world=world, steps=steps
    )
    module = model.module
    if getattr(cfg.model, "gradient_checkpointing", False):
        enabled = enable_gradient_checkpointing(module)
        logger.info("gradient checkpointing on in %d model(s)", enabled)
    module, optimizer, scheduler = setup_optimizer(module, tc, acc, plan=plan)
    progress = Progress()
    if resume_from is not None:
        saved = ckpt.load_training_state(resume_from, optimizer, scheduler, rank)
        progress = Progress.from_state(saved)
    run = FitRun(
        model=model,
        cfg=cfg,
        acc=acc,
        out=out,
        train_feats=train_feats,
        valid_feats=valid_feats,
        module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        total=plan.total,
        steps_per_epoch=plan.steps_per_epoch,
        groups=groups,
        emit=emit,
        loggers=open_loggers(cfg, out, acc, resume_step=progress.step if resume_from else None),
        recipe=recipe,
        started=started,
    )
    announce(run, resume_from=resume_from, step=progress.step)
    return run, LoopState(progress=progress, saved_step=progress.step)


def open_loggers(
    cfg: RunConfig, out: Path, acc: Accelerates, *, resume_step: int | None
) -> list[MetricLogger]:
    """The metric loggers (main process only: none elsewhere); writes OUT/config.yaml.
    RESUME_STEP: metrics.jsonl keeps only the lines up to that step."""
    loggers: list[MetricLogger] = []
    if acc.is_main_process:
        loggers.append(JsonlLogger(out, resume_step=resume_step))
        if cfg.train.tensorboard:
            loggers.append(TensorBoardLogger(out))
        (out / ckpt.CONFIG_FILE).write_text(
            yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
        )
    return loggers


def announce(run: FitRun, *, resume_from: Path | None, step: int) -> None:
    """The 'start' event (and its debug log line)."""
    run.emit(
        "start",
        {
            "total_steps": run.total,
            "steps_per_epoch": run.steps_per_epoch,
            "train_examples": len(run.train_feats),
            "valid_examples": len(run.valid_feats),
            "processes": run.world,
            "device": str(run.acc.device),
            "resumed_from": str(resume_from) if resume_from else None,
            "step": step,
        },
    )
    logger.debug(  # the CLI prints the 'start' event
        "%d train / %d valid examples, %d steps (%d per epoch), %d process(es) on %s",
        len(run.train_feats),
        len(run.valid_feats),
        run.total,
        run.steps_per_epoch,
        run.world,
        run.acc.device,
    )


def run_epochs(run: FitRun, state: LoopState) -> None:
    """Optimizer steps, epoch after epoch from `state.progress`, until `run.total` or early stopping.

    Raises:
        Interrupted: on SIGINT / SIGTERM, after saving a checkpoint at the current step.
    """
    tc, p = run.tc, state.progress
    run.module.train()
    on_step = hook(run.model, "on_step")
    stop = StopFlag()
    with stop.installed():
        while p.step < run.total and not state.stopped_early:
            batches = run.epoch_order(p.epoch)
            usable = len(batches) - len(batches) % tc.grad_accum
            while p.micro + tc.grad_accum <= usable and p.step < run.total:
                if on_step is not None:
                    on_step(p.step)
                grad_norm = train_step(run, state, batches)
                if p.step % max(tc.log_every, 1) == 0 or p.step == run.total:
                    log_train(run, state, grad_norm)
                if after_step(run, state, stop):
                    break
            else:
                if p.step < run.total:
                    p.epoch += 1
                    p.micro = 0


def after_step(run: FitRun, state: LoopState, stop: StopFlag) -> bool:
    """The decisions at a step boundary: validate (and early stopping), step checkpoints, signals,
    the timed checkpoint. True when early stopping ends the fit.

    Raises:
        Interrupted: when a process received SIGINT / SIGTERM, after saving a checkpoint here.
    """
    tc, step, total = run.tc, state.progress.step, run.total
    if run.valid_feats and tc.eval_every and step % tc.eval_every == 0 and step < total:
        validate_and_log(run, state)
        state.stopped_early = early_stop(
            state.progress, state.last_valid, tc.early_stopping_patience
        )
    if tc.save_every and step % tc.save_every == 0 and step < total:
        save_step(run, state)
    signum, due = poll(run, state, stop)
    if signum and step < total:
        path = save_step(run, state)
        for lg in run.loggers:
            lg.close()
        raise Interrupted(
            f"saved a checkpoint at step {step} of {total}: {path}; the same command "
            "with --resume auto continues from it",
            signum=signum,
        )
    if due and step < total:
        save_step(run, state)
    if state.stopped_early:
        logger.info(
            "early stopping at step %d: no improvement in %d evaluations",
            step,
            tc.early_stopping_patience,
        )
    return state.stopped_early


def validate_and_log(run: FitRun, state: LoopState) -> None:
    """Validate at the current step; the record into metrics.jsonl and the 'eval' event."""
    state.last_valid = validate(run, step=state.progress.step)
    run.log(state.last_valid)
    run.emit("eval", state.last_valid)


def finish(run: FitRun, state: LoopState, *, final_name: str, figures: bool) -> TrainResult:
    """Validate the last step (unless done), write checkpoint FINAL_NAME, close the logs, draw the
    figures when FIGURES; emits 'end'."""
    if run.valid_feats and state.last_valid.get("step") != state.progress.step:
        validate_and_log(run, state)
    final = save_checkpoint(run, state, final_name)
    plot = None
    if run.acc.is_main_process:
        for lg in run.loggers:
            lg.close()
        if figures:
            plot = draw_figures(run)
    result = TrainResult(
        output_dir=run.out,
        final_dir=final,
        steps=state.progress.step,
        total_steps=run.total,
        last_train=state.last_train,
        last_valid=state.last_valid,
        stopped_early=state.stopped_early,
        seconds=time.perf_counter() - run.started,
        plot=plot,
    )
    run.emit(
        "end",
        {
            "final": str(final),
            "steps": state.progress.step,
            "seconds": result.seconds,
            "plot": str(plot) if plot else None,
            "last_train": state.last_train,
            "last_valid": state.last_valid,
        },
    )
    return result


def draw_figures(run: FitRun) -> Path | None:
    """loss.png (returned) and the method's own figures ('figure' event); a failure is logged,
    never raised: a drawing must not fail a finished fit."""
    plot = None
    try:
        plot = plot_run(run.out)
    except Exception as err:
        logger.warning("could not draw the loss curves: %s", err)
    after = hook(run.model, "after_training")
    if after is not None:
        try:
            drawn = after(run.out, run.valid_feats or run.train_feats[:1000])
            if drawn:
                run.emit("figure", {"path": str(drawn)})
        except Exception as err:
            logger.warning("could not draw the %s figures: %s", run.cfg.method, err)
    return plot
