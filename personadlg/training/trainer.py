"""`train(cfg)`: one training run of any method, on accelerate — the setup around `fit`.

CPU, one GPU, several GPUs or nodes with the same command (`accelerate launch -m personadlg train`
or `torchrun`); mixed precision, gradient accumulation and clipping, AdamW with linear / cosine /
constant schedules and warm-up, validation loss and perplexity every N steps, early stopping,
seeds, atomic checkpoints with keep-last-K, and `--resume auto` that reproduces the uninterrupted
run (same batches, same optimizer, scheduler and random states). The loop itself is
`training/fit.py`; this module checks the recipe and the data, locks the output dir, builds or
loads the model (or starts from another run's weights: `model.init_from`), encodes the features and
calls `fit` once.

Safety: one run at a time per output dir (an OS lock; a second run exits 2 naming the pid), a
resume that would change the result is refused unless allowed (the change is recorded in
config.yaml), SIGINT / SIGTERM save a checkpoint at the current step before exiting, and a
checkpoint is also written every `train.save_every_minutes`, so a kill loses at most that much.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from personadlg.config import RunConfig
from personadlg.data.lock import exclusive_lock
from personadlg.errors import UsageError
from personadlg.models.backbone import check_model_types
from personadlg.models.base import BuildContext, PersonaModel, hook
from personadlg.models.loading import check_requested
from personadlg.registry import METHODS
from personadlg.training import checkpoint as ckpt
from personadlg.training.changes import describe, recipe_changes, result_changes
from personadlg.training.data import (
    dialogue_examples,
    encode_examples,
    held_out,
    resolve_data_path,
)
from personadlg.training.distributed import broadcast_from_main, make_accelerator
from personadlg.training.fit import EVAL_RESULTS, TrainResult, fit
from personadlg.training.fit_state import Accelerates, Event, no_event

logger = logging.getLogger(__name__)

__all__ = ["EVAL_RESULTS", "TrainResult", "fit", "train", "train_single"]


def train(
    cfg: RunConfig,
    *,
    resume: str | None = None,
    debug_tokens: int = 0,
    on_event: Event | None = None,
    allow_config_change: bool = False,
) -> TrainResult:
    """Train CFG's method; write checkpoints, metrics.jsonl and loss.png under `train.output_dir`.

    Args:
        resume: 'auto' (newest complete checkpoint in the output dir, if any) or a checkpoint dir.
        debug_tokens: emit the first N encoded training examples token by token ('debug_tokens' event).
        on_event: called on the main process with ('start' | 'debug_tokens' | 'step' | 'log' | 'eval' | 'save' | 'end', payload).
        allow_config_change: resume even when fields that change the result differ from the
            checkpoint's recipe (the change is recorded in config.yaml).

    Raises:
        Interrupted: on SIGINT / SIGTERM, after saving a checkpoint at the current step.
    """
    check_requested(getattr(cfg.model, "trust_remote_code", False), "model.trust_remote_code")
    check_model_types(cfg.model)
    check_data(cfg)
    acc = make_accelerator(cfg.train.mixed_precision)
    out = Path(cfg.train.output_dir)
    ckpt.check_output_dir(out)
    lock: AbstractContextManager[None] = nullcontext()
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        lock = exclusive_lock(out / ".lock", target=out, what="train")
    with lock:
        run: Callable[..., TrainResult] = train_single
        if METHODS.get(cfg.method).stages:
            from personadlg.training.stages import train_stages

            run = train_stages
        result = run(
            cfg,
            acc,
            resume=resume,
            debug_tokens=debug_tokens,
            on_event=on_event,
            allow_config_change=allow_config_change,
        )
    acc.end_training()  # after every stage: it ends the process group
    return result


def check_data(cfg: RunConfig) -> None:
    """Read data.train and data.valid once, strictly, before anything is built or written:
    the first bad record stops the run with `FILE:LINE: ...` (exit 2)."""
    if resolve_data_path(cfg.data.train) is None:
        raise UsageError(
            "data.train is not set: give the training dialogues, e.g. data.train=train.jsonl"
        )
    spec = METHODS.get(cfg.method)
    reader = spec.read or dialogue_examples
    for value in (cfg.data.train, cfg.data.valid):
        path = resolve_data_path(value)
        if path is not None:
            for _ in reader(path, cfg):
                pass


def init_source(ref: str) -> Path:
    """The checkpoint `model.init_from` names: a checkpoint dir, or a run dir (its final/, else its
    newest step checkpoint)."""
    path = Path(ref)
    if not path.is_dir():
        raise UsageError(
            f"model.init_from: expected a run or checkpoint directory, got {ref!r} (no such directory)"
        )
    if ckpt.is_run_dir(path):
        if (path / ckpt.FINAL_DIR / ckpt.STATE_FILE).is_file():
            return path / ckpt.FINAL_DIR
        steps = ckpt.complete_checkpoints(path)
        if not steps:
            raise UsageError(f"model.init_from: {ref} holds no complete checkpoint yet")
        return steps[-1]
    return ckpt.checkpoint_dir(path)


def init_weights(model: Any, source: Path, *, strict: bool = True) -> dict[str, Any]:
    """Copy SOURCE's weights into MODEL's module, matched by parameter name; return the lineage.

    Missing or unexpected names are listed, and are an error when STRICT; a name present in both
    with another shape is always an error."""
    from personadlg.models.fingerprint import weights_fingerprint

    src_cfg = ckpt.load_config(source)
    src = ckpt.load_model(source, src_cfg)
    theirs = src.module.state_dict()
    ours = model.module.state_dict()
    missing = sorted(k for k in ours if k not in theirs)
    unexpected = sorted(k for k in theirs if k not in ours)
    wrong = sorted(
        k for k in ours if k in theirs and tuple(ours[k].shape) != tuple(theirs[k].shape)
    )
    if wrong:
        k = wrong[0]
        raise UsageError(
            f"model.init_from {source}: {len(wrong)} parameter(s) have other shapes, e.g. {k}: "
            f"{tuple(theirs[k].shape)} in the source, {tuple(ours[k].shape)} here"
        )

    def listing(names: list[str]) -> str:
        return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")

    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(
                f"{len(missing)} parameter(s) of this model are not in the source ({listing(missing)})"
            )
        if unexpected:
            parts.append(
                f"{len(unexpected)} of the source are not in this model ({listing(unexpected)})"
            )
        raise UsageError(
            f"model.init_from {source}: "
            + "; ".join(parts)
            + "; set model.init_strict=false to copy only the matching ones"
        )
    model.module.load_state_dict({k: v for k, v in theirs.items() if k in ours}, strict=False)
    if missing or unexpected:
        logger.warning(
            "model.init_from %s: %d parameters copied; not in the source: %s; not used: %s",
            source,
            len(ours) - len(missing),
            listing(missing) or "none",
            listing(unexpected) or "none",
        )
    return {
        "init_from": str(source),
        "method": src_cfg.method,
        "weights_sha256": weights_fingerprint(source),
        "copied": len(ours) - len(missing),
        "missing": missing,
        "unexpected": unexpected,
    }


def _resume_history(
    cfg: RunConfig, start: Path, recipe: dict[str, Any], allow: bool
) -> list[dict[str, Any]]:
    """The run's history after resuming from START: refuse result-changing edits unless ALLOW."""
    saved = ckpt.read_state(start)
    old_cfg = ckpt.read_yaml(start / ckpt.CONFIG_FILE)
    old_recipe = saved.get("recipe") or {
        k: v for k, v in old_cfg.items() if k not in ("history", "lineage")
    }
    changes = recipe_changes(old_recipe, recipe)
    blocking = result_changes(changes, recipe)
    if blocking and not allow:
        raise UsageError(
            f"--resume from {start}: the recipe changed since that checkpoint ({describe(changes, blocking)}); "
            "the resumed run would not reproduce the original. Restore those values, start a new "
            "train.output_dir, or pass --allow-config-change (the change is recorded in config.yaml)"
        )
    history = list(old_cfg.get("history") or [])
    if changes:
        logger.info("resuming with changes: %s", describe(changes, list(changes)))
        history.append({"step": int(saved.get("step", 0)), "changed": changes})
    return history


def train_single(
    cfg: RunConfig,
    acc: Accelerates,
    *,
    resume: str | None,
    debug_tokens: int,
    on_event: Event | None,
    allow_config_change: bool,
    steps: int | None = None,
) -> TrainResult:
    """One run into `train.output_dir`, whose lock the caller holds: build the model (or load the
    checkpoint RESUME names), encode the data and `fit` once. `train` calls it for a method
    without stages, `train_stages` once per stage; arguments as in `train`, STEPS as in `fit`."""
    tc = cfg.train
    started = time.perf_counter()
    # what the user asked for (without what runs add: history, lineage)
    recipe = {k: v for k, v in cfg.to_dict().items() if k not in ("history", "lineage")}
    emit: Event = on_event if (on_event and acc.is_main_process) else no_event
    out = Path(tc.output_dir)
    acc.wait_for_everyone()
    from accelerate.utils import set_seed

    set_seed(tc.seed)
    train_path = resolve_data_path(cfg.data.train)
    if train_path is None:
        raise UsageError(
            "data.train is not set: give the training dialogues, e.g. data.train=train.jsonl"
        )
    reader = METHODS.get(cfg.method).read or dialogue_examples
    start_ckpt = resume_point(out, resume)
    model = model_for_run(
        cfg,
        acc,
        start=start_ckpt,
        recipe=recipe,
        allow_config_change=allow_config_change,
        train_examples=lambda: reader(train_path, cfg),
    )
    train_feats, valid_feats = features_for_run(cfg, model, train_path=train_path, reader=reader)
    if debug_tokens > 0:
        examples = [ex for _, ex in zip(range(debug_tokens), reader(train_path, cfg))]
        emit("debug_tokens", {"examples": [(ex, model.explain(ex)) for ex in examples]})

    prepare = hook(model, "prepare")
    if prepare is not None and start_ckpt is None:
        prepare(
            train_feats,
            work_dir=out,
            is_main=acc.is_main_process,
            broadcast=lambda t: broadcast_from_main(acc, t),
        )
    result = fit(
        model,
        cfg,
        train_feats,
        valid_feats,
        out_dir=out,
        acc=acc,
        resume_from=start_ckpt,
        on_event=on_event,
        recipe=recipe,
        steps=steps,
    )
    result.seconds = time.perf_counter() - started
    return result


def resume_point(out: Path, resume: str | None) -> Path | None:
    """The checkpoint RESUME names in OUT (None: start afresh).

    Raises:
        UsageError: when starting afresh (RESUME None) in an OUT that holds checkpoints.
    """
    start = ckpt.resolve_resume(out, resume)
    if resume is None:
        ckpt.check_fresh_start(out)
    return start


def model_for_run(
    cfg: RunConfig,
    acc: Accelerates,
    *,
    start: Path | None,
    recipe: dict[str, Any],
    allow_config_change: bool,
    train_examples: Callable[[], Iterable[Any]],
) -> PersonaModel:
    """The model a run trains: checkpoint START's (CFG's history and lineage continue it; a changed
    RECIPE is refused unless ALLOW_CONFIG_CHANGE), else a fresh one of CFG built on TRAIN_EXAMPLES,
    with the `model.init_from` weights copied in."""
    spec = METHODS.get(cfg.method)
    if start is not None:
        logger.debug("resuming from %s", start)
        cfg.history = _resume_history(cfg, start, recipe, allow_config_change)
        cfg.lineage = dict(ckpt.read_yaml(start / ckpt.CONFIG_FILE).get("lineage") or {})
        return spec.load(start, cfg)
    source = init_source(cfg.model.init_from) if cfg.model.init_from else None
    ctx = BuildContext(
        train_examples=train_examples,
        work_dir=Path(cfg.train.output_dir),
        is_main=acc.is_main_process,
        barrier=acc.wait_for_everyone,
        init_from=source,
    )
    model = spec.build(cfg, ctx)
    if source is not None:
        cfg.lineage = init_weights(model, source, strict=cfg.model.init_strict)
    return model


def features_for_run(
    cfg: RunConfig,
    model: PersonaModel,
    *,
    train_path: Path,
    reader: Callable[[Path, Any], Iterable[Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training, validation) features of TRAIN_PATH and data.valid, read by READER and encoded by
    MODEL; without data.valid, `data.valid_fraction` of the training examples are held out."""
    valid_path = resolve_data_path(cfg.data.valid)
    train_feats = encode_examples(train_path, cfg, model.encode, reader)
    valid_feats = encode_examples(valid_path, cfg, model.encode, reader) if valid_path else []
    if not valid_feats and cfg.data.valid_fraction > 0:
        keep, held = held_out(len(train_feats), cfg.data.valid_fraction, cfg.train.seed)
        train_feats, valid_feats = [train_feats[i] for i in keep], [train_feats[i] for i in held]
        logger.info(
            "held out %d of the training examples for validation (data.valid_fraction)",
            len(valid_feats),
        )
    return train_feats, valid_feats
