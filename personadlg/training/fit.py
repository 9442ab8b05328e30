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
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from personadlg import __version__
from personadlg.config import RunConfig
from personadlg.errors import UsageError
from personadlg.models.backbone import enable_gradient_checkpointing
from personadlg.models.base import GROUP, hook
from personadlg.training import checkpoint as ckpt
from personadlg.training.data import epoch_batches, eval_batches
from personadlg.training.interrupt import Interrupted, StopFlag
from personadlg.training.logging import JsonlLogger, MetricLogger, TensorBoardLogger, plot_run

logger = logging.getLogger(__name__)

EVAL_RESULTS = (
    "eval_results.json"  # the validation record of a checkpoint's step, when there is one
)

Event = Callable[[str, dict[str, Any]], None]


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


def _param_groups(
    module: torch.nn.Module,
    weight_decay: float,
    lr: float,
    param_lr: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only (not biases, norms, 1-d); each parameter's peak
    learning rate is that of the first `train.param_lr` glob its name matches, else LR."""
    from fnmatch import fnmatchcase

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


def _scheduler(name: str, optimizer: Any, warmup: int, total: int) -> Any:
    from transformers import get_scheduler

    return get_scheduler(
        {"constant": "constant_with_warmup"}.get(name, name),
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total,
    )


def _batch_groups(feats: list[dict[str, Any]]) -> list[int] | None:
    """Group ids for group-homogeneous batches, when the method's features carry GROUP."""
    if not feats or GROUP not in feats[0]:
        return None
    return [int(f[GROUP][0]) for f in feats]


def _early_stop(state: dict[str, Any], record: dict[str, Any], patience: int) -> bool:
    loss = record.get("loss")
    if loss is None:
        return False
    if state["best_valid"] is None or loss < state["best_valid"]:
        state["best_valid"], state["bad_evals"] = loss, 0
        return False
    state["bad_evals"] += 1
    return patience > 0 and state["bad_evals"] >= patience


def fit(
    model: Any,
    cfg: RunConfig,
    train_feats: list[dict[str, Any]],
    valid_feats: list[dict[str, Any]],
    *,
    out_dir: str | Path,
    acc: Any,
    resume_from: Path | None = None,
    on_event: Event | None = None,
    recipe: dict[str, Any] | None = None,
    final_name: str = ckpt.FINAL_DIR,
    figures: bool = True,
    steps: int | None = None,
) -> TrainResult:
    """Train MODEL on TRAIN_FEATS per CFG.train; checkpoints, metrics.jsonl and loss.png in OUT_DIR.

    Args:
        cfg: the run config; its `train` section drives this fit, and the whole of it is saved in
            every checkpoint (config.yaml).
        train_feats, valid_feats: encoded features (what `model.encode` returns).
        acc: the accelerate Accelerator of this process.
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
    tc = cfg.train
    out = Path(out_dir)
    started = time.perf_counter()
    emit: Event = on_event if (on_event and acc.is_main_process) else (lambda kind, payload: None)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    world, rank = acc.num_processes, acc.process_index
    groups = _batch_groups(train_feats)

    def batches_of(epoch: int) -> list[list[int]]:
        return epoch_batches(
            len(train_feats),
            epoch=epoch,
            seed=tc.seed,
            batch_size=tc.batch_size,
            world_size=world,
            rank=rank,
            groups=groups,
        )

    steps_per_epoch = len(batches_of(0)) // tc.grad_accum  # the same count in every epoch
    if steps_per_epoch == 0 and steps != 0:
        raise UsageError(
            f"{len(train_feats)} training examples are fewer than one optimizer step needs "
            f"(train.batch_size {tc.batch_size} x {world} process(es) x train.grad_accum {tc.grad_accum})"
        )
    total = steps if steps is not None else tc.max_steps or math.ceil(tc.epochs * steps_per_epoch)
    steps_per_epoch = max(steps_per_epoch, 1)
    warmup = tc.warmup_steps or int(tc.warmup_ratio * total)

    module = model.module
    if getattr(cfg.model, "gradient_checkpointing", False):
        enabled = enable_gradient_checkpointing(module)
        logger.info("gradient checkpointing on in %d model(s)", enabled)
    optimizer = torch.optim.AdamW(
        _param_groups(module, tc.weight_decay, tc.lr, tc.param_lr), lr=tc.lr
    )
    scheduler = _scheduler(tc.scheduler, optimizer, warmup, total)
    module, optimizer = acc.prepare(module, optimizer)
    state: dict[str, Any] = {"step": 0, "epoch": 0, "micro": 0, "best_valid": None, "bad_evals": 0}
    if resume_from is not None:
        restored = ckpt.load_training_state(resume_from, optimizer, scheduler, rank)
        state.update({k: restored[k] for k in state if k in restored})

    loggers: list[MetricLogger] = []
    if acc.is_main_process:
        loggers.append(JsonlLogger(out, resume_step=state["step"] if resume_from else None))
        if tc.tensorboard:
            loggers.append(TensorBoardLogger(out))
        (out / ckpt.CONFIG_FILE).write_text(
            yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
        )
    emit(
        "start",
        {
            "total_steps": total,
            "steps_per_epoch": steps_per_epoch,
            "train_examples": len(train_feats),
            "valid_examples": len(valid_feats),
            "processes": world,
            "device": str(acc.device),
            "resumed_from": str(resume_from) if resume_from else None,
            "step": state["step"],
        },
    )
    logger.debug(  # the CLI prints the 'start' event
        "%d train / %d valid examples, %d steps (%d per epoch), %d process(es) on %s",
        len(train_feats),
        len(valid_feats),
        total,
        steps_per_epoch,
        world,
        acc.device,
    )

    def log(record: dict[str, Any]) -> None:
        for lg in loggers:
            lg.log(record)

    def save(name: str) -> Path:
        payload = {
            **state,
            "total_steps": total,
            "seed": tc.seed,
            "version": __version__,
            "processes": world,
            "recipe": recipe,
            **({"lineage": cfg.lineage} if cfg.lineage else {}),
        }
        path = ckpt.write_checkpoint(
            out,
            name,
            cfg=cfg,
            model=model,
            state=payload,
            optimizer=optimizer,
            scheduler=scheduler,
            accelerator=acc,
            extra_json={EVAL_RESULTS: last_valid}
            if last_valid.get("step") == state["step"]
            else None,
        )
        emit("save", {"path": str(path), "step": state["step"]})
        last_save["step"], last_save["time"] = state["step"], time.monotonic()
        return path

    last_save: dict[str, Any] = {"step": state["step"], "time": time.monotonic()}

    def save_step() -> Path:
        path = (
            out / ckpt.step_dir_name(state["step"])
            if last_save["step"] == state["step"]
            else save(ckpt.step_dir_name(state["step"]))
        )
        if acc.is_main_process:
            ckpt.prune_checkpoints(out, tc.keep_last)
        return path

    def poll(stop: StopFlag) -> tuple[int, bool]:
        """(signal received by any process, timed checkpoint due on the main process)."""
        due = bool(
            tc.save_every_minutes
            and acc.is_main_process
            and time.monotonic() - last_save["time"] >= 60 * tc.save_every_minutes
        )
        if world == 1:
            return stop.signum, due
        import torch.distributed as dist

        flags = torch.tensor([stop.signum, int(due)], dtype=torch.long, device=acc.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return int(flags[0]), bool(flags[1])

    def evaluate() -> dict[str, Any]:
        inner = acc.unwrap_model(module)
        inner.eval()
        sums: dict[str, float] = defaultdict(float)
        stats: dict[str, torch.Tensor] = {}
        scorer = hook(model, "eval_stats")
        weight = 0.0
        with torch.no_grad():
            for idx in eval_batches(
                len(valid_feats), batch_size=tc.batch_size, world_size=world, rank=rank
            ):
                batch = {
                    k: v.to(acc.device)
                    for k, v in model.collate([valid_feats[i] for i in idx]).items()
                }
                with acc.autocast():
                    terms = inner(**batch)
                w = float(model.count_tokens(batch)[1] or len(idx))
                for name, value in terms.items():
                    if not name.startswith("_"):
                        sums[name] += float(value) * w
                weight += w
                if scorer is not None:
                    for name, value in scorer(batch, terms).items():
                        stats[name] = (
                            stats[name] + value if name in stats else value.detach().clone()
                        )
        inner.train()
        names = sorted(sums) or ["loss"]
        totals = acc.reduce(
            torch.tensor(
                [sums[n] for n in names] + [weight], device=acc.device, dtype=torch.float64
            ),
            "sum",
        ).tolist()
        record = {
            "step": state["step"],
            "split": "valid",
            **{n: v / max(totals[-1], 1e-12) for n, v in zip(names, totals)},
        }
        if hook(model, "perplexity") is not False:
            record["ppl"] = math.exp(min(record.get("loss", 0.0), 50.0))
        if scorer is not None and stats:
            summed = {
                k: acc.reduce(v.to(acc.device), "sum").cpu() for k, v in sorted(stats.items())
            }
            record.update(hook(model, "eval_metrics")(summed))
        return record

    last_train: dict[str, Any] = {}
    last_valid: dict[str, Any] = {}
    stopped_early = False
    window: dict[str, float] = defaultdict(float)
    window_n, window_tokens, window_start = 0, 0, time.perf_counter()
    module.train()
    on_step = hook(model, "on_step")
    stop = StopFlag()
    with stop.installed():
        while state["step"] < total and not stopped_early:
            batches = batches_of(state["epoch"])
            usable = len(batches) - len(batches) % tc.grad_accum
            while state["micro"] + tc.grad_accum <= usable and state["step"] < total:
                if on_step is not None:
                    on_step(state["step"])
                for k in range(tc.grad_accum):
                    idx = batches[state["micro"] + k]
                    batch = {
                        key: v.to(acc.device)
                        for key, v in model.collate([train_feats[i] for i in idx]).items()
                    }
                    sync = acc.no_sync(module) if k < tc.grad_accum - 1 else nullcontext()
                    with sync:
                        with acc.autocast():
                            terms = module(**batch)
                        acc.backward(terms["loss"] / tc.grad_accum)
                    for name, value in terms.items():
                        if not name.startswith("_"):
                            window[name] += float(value.detach())
                    window_n += 1
                    window_tokens += model.count_tokens(batch)[0]
                grad_norm = (
                    acc.clip_grad_norm_(module.parameters(), tc.max_grad_norm)
                    if tc.max_grad_norm > 0
                    else None
                )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["micro"] += tc.grad_accum
                state["step"] += 1
                step = state["step"]
                emit(
                    "step",
                    {
                        **last_train,
                        "step": step,
                        "total": total,
                        "epoch": step / steps_per_epoch,
                        "lr": scheduler.get_last_lr()[0],
                    },
                )

                if step % max(tc.log_every, 1) == 0 or step == total:
                    names = sorted(window)
                    elapsed = time.perf_counter() - window_start
                    values = acc.reduce(
                        torch.tensor(
                            [window[n] / window_n for n in names] + [float(window_tokens)],
                            device=acc.device,
                            dtype=torch.float64,
                        ),
                        "sum",
                    ).tolist()
                    last_train = {
                        "step": step,
                        "split": "train",
                        "epoch": round(step / steps_per_epoch, 4),
                        "lr": scheduler.get_last_lr()[0],
                        **{n: v / world for n, v in zip(names, values)},
                        "tokens_per_s": values[-1] / max(elapsed, 1e-9),
                        "elapsed_s": round(time.perf_counter() - started, 3),
                    }
                    if grad_norm is not None:
                        last_train["grad_norm"] = float(grad_norm)
                    log(last_train)
                    emit("log", last_train)
                    window.clear()
                    window_n, window_tokens, window_start = 0, 0, time.perf_counter()

                if valid_feats and tc.eval_every and step % tc.eval_every == 0 and step < total:
                    last_valid = evaluate()
                    log(last_valid)
                    emit("eval", last_valid)
                    stopped_early = _early_stop(state, last_valid, tc.early_stopping_patience)
                if tc.save_every and step % tc.save_every == 0 and step < total:
                    save_step()
                signum, due = poll(stop)
                if signum and step < total:
                    path = save_step()
                    for lg in loggers:
                        lg.close()
                    raise Interrupted(
                        f"saved a checkpoint at step {step} of {total}: {path}; the same command "
                        "with --resume auto continues from it",
                        signum=signum,
                    )
                if due and step < total:
                    save_step()
                if stopped_early:
                    logger.info(
                        "early stopping at step %d: no improvement in %d evaluations",
                        step,
                        tc.early_stopping_patience,
                    )
                    break
            else:
                if state["step"] < total:
                    state["epoch"] += 1
                    state["micro"] = 0

    if valid_feats and last_valid.get("step") != state["step"]:
        last_valid = evaluate()
        log(last_valid)
        emit("eval", last_valid)
    final = save(final_name)
    plot = None
    if acc.is_main_process:
        for lg in loggers:
            lg.close()
        try:
            plot = plot_run(out) if figures else None
        except Exception as err:  # a plot must never fail a finished training run
            logger.warning("could not draw the loss curves: %s", err)
        after = hook(model, "after_training") if figures else None
        if after is not None:
            try:
                drawn = after(out, valid_feats or train_feats[:1000])
                if drawn:
                    emit("figure", {"path": str(drawn)})
            except Exception as err:  # likewise for a method's own figures
                logger.warning("could not draw the %s figures: %s", cfg.method, err)
    result = TrainResult(
        output_dir=out,
        final_dir=final,
        steps=state["step"],
        total_steps=total,
        last_train=last_train,
        last_valid=last_valid,
        stopped_early=stopped_early,
        seconds=time.perf_counter() - started,
        plot=plot,
    )
    emit(
        "end",
        {
            "final": str(final),
            "steps": state["step"],
            "seconds": result.seconds,
            "plot": str(plot) if plot else None,
            "last_train": last_train,
            "last_valid": last_valid,
        },
    )
    return result
