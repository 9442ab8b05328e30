"""Methods that train in stages: each stage is its own run, chained by `model.init_from`.

A method whose spec declares `stages` (codebook: role → init → joint) has `model.stages` (those to
run, in order) and `model.stage` (what one run trains). `train_stages` runs them one after the
other inside one output dir:

    OUTPUT_DIR/stages/1-role/     stage 1: its checkpoints, metrics.jsonl, config.yaml
    OUTPUT_DIR/stages/2-init/     stage 2 (init_from = stage 1's final/)
    OUTPUT_DIR/                   the last stage (init_from = stage 2's final/): final/ is the model

Each stage gets the run's `train:` section with `model.stage_train.<stage>` applied. `--resume auto`
skips finished stages (refusing, as any resume does, when their recipe changed) and resumes the one
that was interrupted; a stage the method runs itself (`MethodSpec.stage_runners`, lora's `users`)
runs on every resume and skips its own finished work. A stage named `init` takes no optimizer step: the model's `prepare` hook does
its work, then the checkpoint is validated and written.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from personadlg.config import RunConfig, TrainConfig, build_config, to_dict
from personadlg.errors import UsageError
from personadlg.models.spec import StageRun
from personadlg.training import checkpoint as ckpt
from personadlg.training.fit import EVAL_RESULTS, Event, TrainResult
from personadlg.training.stage_tools import TrainerTools

logger = logging.getLogger(__name__)

STAGES_DIR = "stages"
NO_STEP_STAGES = ("init",)


def stage_dirs(cfg: RunConfig) -> list[Path]:
    """The output dir of each of CFG's stages (the last one is `train.output_dir` itself)."""
    out = Path(cfg.train.output_dir)
    stages = list(cfg.model.stages)
    return [
        out if i == len(stages) - 1 else out / STAGES_DIR / f"{i + 1}-{s}"
        for i, s in enumerate(stages)
    ]


def stage_config(
    cfg: RunConfig, stage: str, *, init_from: str | None, output_dir: Path
) -> RunConfig:
    """CFG for one stage: `model.stage`, the previous stage's weights, its own train section."""
    sub = copy.deepcopy(cfg)
    sub.model.stage = stage
    sub.model.init_from = init_from
    over = dict(cfg.model.stage_train.get(stage) or {})
    if over:
        sub.train = build_config(
            TrainConfig, {**to_dict(cfg.train), **over}, path=f"model.stage_train.{stage}"
        )
    sub.model.stage_train = {}  # applied: the stage's recipe holds only its own train section
    sub.train.output_dir = str(output_dir)
    return sub


def _finished(directory: Path, sub: RunConfig, allow: bool) -> TrainResult:
    """The result of a stage that already finished. Its recipe must be the one it finished with:
    the later stages were trained from it, so any change (more steps included) is refused unless
    ALLOW, which keeps the finished stage as it is."""
    from personadlg.training.changes import BOOKKEEPING_SECTIONS, describe, recipe_changes

    final = directory / ckpt.FINAL_DIR
    state = ckpt.read_state(final)
    recipe = {k: v for k, v in sub.to_dict().items() if k not in ("history", "lineage")}
    ignored = ("train.output_dir", "model.init_from", "train.log_every", "train.tensorboard")
    changes = {
        k: v
        for k, v in recipe_changes(state.get("recipe") or {}, recipe).items()
        if k not in ignored and not k.startswith(BOOKKEEPING_SECTIONS)
    }
    if changes and not allow:
        raise UsageError(
            f"--resume auto: stage {sub.model.stage} finished in {directory} with another recipe "
            f"({describe(changes, list(changes))}), and the later stages start from it; restore "
            "those values, start a new train.output_dir, or pass --allow-config-change to keep the "
            "finished stage as it is"
        )
    valid_path = final / EVAL_RESULTS
    return TrainResult(
        output_dir=directory,
        final_dir=final,
        steps=int(state.get("step", 0)),
        total_steps=int(state.get("total_steps", 0)),
        last_valid=json.loads(valid_path.read_text()) if valid_path.is_file() else {},
    )


def train_stages(
    cfg: RunConfig,
    acc: Any,
    *,
    resume: str | None,
    debug_tokens: int,
    on_event: Event | None,
    allow_config_change: bool,
) -> TrainResult:
    """Run CFG's stages in order (see the module docstring); the last stage's result, with every
    stage's in `result.stages`."""
    from personadlg.training.trainer import train_single

    if resume not in (None, "auto"):
        raise UsageError(
            "--resume with a staged recipe: give --resume auto (every stage resumes where it stopped)"
        )
    stages = list(cfg.model.stages)
    dirs = stage_dirs(cfg)
    if resume is None:
        for d in dirs:
            ckpt.check_fresh_start(d)
    emit: Event = on_event if (on_event and acc.is_main_process) else (lambda kind, payload: None)
    from personadlg.registry import METHODS

    runners = METHODS.get(cfg.method).stage_runners
    source = cfg.model.init_from
    results: list[TrainResult] = []
    for i, (stage, d) in enumerate(zip(stages, dirs)):
        sub = stage_config(cfg, stage, init_from=source, output_dir=d)
        done = (d / ckpt.FINAL_DIR / ckpt.STATE_FILE).is_file()
        emit(
            "stage",
            {"stage": stage, "index": i + 1, "of": len(stages), "output_dir": str(d), "done": done},
        )
        if stage in runners:
            outcome = runners[stage](
                StageRun(
                    cfg=sub,
                    acc=acc,
                    tools=TrainerTools(acc),
                    resume=resume,
                    debug_tokens=debug_tokens if i == 0 else 0,
                    on_event=on_event,
                    allow_config_change=allow_config_change,
                )
            )
            result = TrainResult(
                output_dir=d,
                final_dir=outcome.final_dir,
                steps=outcome.steps,
                total_steps=outcome.steps,
                last_valid=outcome.last_valid,
                seconds=outcome.seconds,
            )
        elif done:
            logger.info("stage %d/%d (%s) finished earlier: %s", i + 1, len(stages), stage, d)
            result = _finished(d, sub, allow_config_change)
        else:
            result = train_single(
                sub,
                acc,
                resume=resume,
                debug_tokens=debug_tokens if i == 0 else 0,
                on_event=on_event,
                allow_config_change=allow_config_change,
                steps=0 if stage in NO_STEP_STAGES else None,
            )
        results.append(result)
        source = str(result.final_dir)
    last = results[-1]
    last.stages = results
    return last
