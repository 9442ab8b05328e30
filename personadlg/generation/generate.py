"""`personadlg generate`: responses for every example of a file, streamed to disk, resumable.

Each output line is an example record (README: Data format, example records) plus `generation`, `target_attributes`
(when targets are given), `method`, `checkpoint`, `decoding` and `seed`, one line per (example,
target combination). Every (example, target) gets its own seed, derived from the base seed, the
example id and the target, so a rerun, a resumed run or another batch size gives the same text.
Rerunning on an existing output skips the pairs already there.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from personadlg.config import GenerateConfig, apply_overrides, build_config, to_dict
from personadlg.data.attributes import target_key
from personadlg.data.formats import FormatOptions
from personadlg.data.jsonl import dumps
from personadlg.data.paths import check_outputs
from personadlg.data.schema import Example
from personadlg.errors import UsageError
from personadlg.generation.api import generate_api
from personadlg.generation.inputs import example_seed, load_examples, targets_to_generate
from personadlg.generation.options import GenerateOptions
from personadlg.generation.output import (
    check_resumable,
    claimed,
    done_keys,
    file_sha256,
    iter_records,
    sidecar_path,
)
from personadlg.metrics.collapse import collapse_report
from personadlg.models.base import as_generations, hook
from personadlg.models.decoding import check_decoding_settings, decoding_dict
from personadlg.models.fingerprint import weights_fingerprint

logger = logging.getLogger(__name__)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(decoding overrides, `model.*` overrides): keys without a section are decoding keys."""
    model = [o for o in overrides if o.startswith("model.")]
    return [o for o in overrides if not o.startswith("model.")], model


def decoding_config(base: GenerateConfig, overrides: Sequence[str]) -> GenerateConfig:
    """The checkpoint's `generate:` defaults with `KEY=VALUE` overrides (`generate.` prefix optional)."""
    data = {"generate": to_dict(base)}
    apply_overrides(data, [o if o.startswith("generate.") else f"generate.{o}" for o in overrides])
    unknown = [k for k in data if k != "generate"]
    if unknown:
        raise UsageError(
            f"unknown override section(s): {', '.join(unknown)}; generate takes generate.* keys "
            "(and model.* keys a method lets change at generation, e.g. model.ode.guidance_scale)"
        )
    decoding = build_config(GenerateConfig, data["generate"], path="generate")
    check_decoding_settings(decoding)
    return decoding


def model_settings(cfg: Any, overrides: Sequence[str]) -> Any:
    """CFG's `model:` section with `model.*` overrides applied and validated (CFG is not changed)."""
    if not overrides:
        return cfg.model
    data = apply_overrides({"model": to_dict(cfg.model)}, overrides)
    return build_config(type(cfg.model), data["model"], path="model")


def configure_model(cfg: Any, model: Any, overrides: Sequence[str]) -> None:
    """Apply `model.*` overrides to a loaded model whose method allows it (`model.configure`).

    CFG is left as loaded, and without overrides the model goes back to it: a model reused across
    calls (`generate_file(loaded=...)`) never keeps an earlier call's overrides."""
    configure = hook(model, "configure")
    if configure is None:
        if overrides:
            raise UsageError(
                f"the {cfg.method} method takes no model.* overrides at generation: {', '.join(overrides)}"
            )
        return
    configure(model_settings(cfg, overrides))


def check_decoding(model: Any, decoding: GenerateConfig) -> None:
    """Refuse decoding settings the model cannot run (before any output is written)."""
    limit_of = hook(model, "max_new_tokens_limit")
    _check_new_tokens(limit_of() if limit_of is not None else None, decoding)


# (model config file under the checkpoint, positions taken before the new tokens) per method, as
# their `max_new_tokens_limit` hooks count them; other methods are checked once loaded
_POSITIONS_FILE = {
    "finetune": ("config.json", lambda m: 1),
    "lora": ("config.json", lambda m: 1),
    "cvae": ("decoder/config.json", lambda m: 2),
    "codebook": ("decoder/config.json", lambda m: int(m.slots) + 1),
}


def config_new_tokens_limit(checkpoint: str | Path, cfg: Any) -> int | None:
    """The model's `max_new_tokens_limit` read from the checkpoint's model config file (no
    weights loaded); None when unbounded or not known before loading."""
    entry = _POSITIONS_FILE.get(cfg.method)
    if entry is None:
        return None
    path = Path(checkpoint) / entry[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # checked once the model is loaded
    if not isinstance(data, dict):
        return None
    for key in ("n_positions", "max_position_embeddings"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return int(value - entry[1](cfg.model))
    return None


def check_before_loading(
    checkpoint: str | Path, cfg: Any, decoding: GenerateConfig, model_overrides: Sequence[str]
) -> None:
    """The checks of `check_decoding` and `configure_model` that need only the checkpoint's config
    files, so that a bad setting is refused before the weights are loaded."""
    _check_new_tokens(config_new_tokens_limit(checkpoint, cfg), decoding)
    if cfg.method == "cvae" and model_overrides:
        from personadlg.models.cvae.model import META_FILE, check_ode_weights

        try:
            meta = json.loads((Path(checkpoint) / META_FILE).read_text(encoding="utf-8"))
            attributes = dict(meta["attributes"])
        except (OSError, ValueError, KeyError, TypeError):
            return  # checked once the model is loaded
        check_ode_weights(model_settings(cfg, model_overrides).ode, attributes)


def _check_new_tokens(limit: int | None, decoding: GenerateConfig) -> None:
    if limit is not None and decoding.max_new_tokens > limit:
        raise UsageError(
            f"generate.max_new_tokens: expected at most {limit} (the model has {limit} positions left "
            f"for new tokens), got {decoding.max_new_tokens}"
        )


def output_settings(
    cfg: Any,
    checkpoint: str | Path,
    decoding: GenerateConfig,
    model_overrides: Sequence[str],
    input: Path,
    turns: str,
    *,
    served: str = "",
) -> dict[str, Any]:
    """What a generation file's sidecar records (see `generation/output.py`); SERVED: the model's
    `served_fingerprint` (lora: its adapters' index)."""
    model_cfg = to_dict(cfg.model)
    if model_overrides:
        model_cfg = apply_overrides({"model": model_cfg}, model_overrides)["model"]
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": weights_fingerprint(checkpoint) if Path(checkpoint).is_dir() else "",
        **({"served_sha256": served} if served else {}),
        "method": cfg.method,
        "decoding": {
            k: v
            for k, v in to_dict(decoding).items()
            if k not in ("batch_size", "max_loaded_adapters")  # neither changes a response
        },
        "model": model_cfg,
        "input": str(input),
        "input_sha256": file_sha256(input),
        "turns": turns,
    }


def generate_file(
    checkpoint: str | Path,
    input: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    turns: str = "all",
    targets: dict[str, str] | None = None,
    combinations: bool = False,
    limit: int = 0,
    overwrite: bool = False,
    input_format: str = "auto",
    format_options: FormatOptions | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    loaded: tuple[Any, Any] | None = None,
    method_check: Callable[[str], None] | None = None,
    retry_failed: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Generate for every example of INPUT into OUT (appending; pairs already in OUT are skipped).

    CHECKPOINT is a checkpoint directory or a `method: api` recipe (path or bundled name, e.g.
    `api/persona`), whose requests go through `generation/api.py` (RETRY_FAILED and DRY_RUN
    are for those). OUT is locked for the run; appending is refused when OUT was not written by
    `generate` with the same checkpoint, decoding, model overrides and input (OVERWRITE: start OUT
    afresh). Returns a summary: counts, seconds, responses per second, decoding.
    """
    from personadlg.models.api import find_api_recipe
    from personadlg.training.checkpoint import load_config, load_model

    opts = GenerateOptions(
        overrides=overrides,
        turns=turns,
        targets=targets,
        combinations=combinations,
        limit=limit,
        overwrite=overwrite,
        retry_failed=retry_failed,
        dry_run=dry_run,
        input_format=input_format,
        format_options=format_options,
        on_progress=on_progress,
        method_check=method_check,
    )
    recipe = None if loaded else find_api_recipe(checkpoint)
    if recipe is not None:
        return generate_api(recipe, input, out, opts)
    if retry_failed or dry_run:
        raise UsageError(
            "--retry-failed and --dry-run are for `method: api` recipes (requests to a model API); "
            f"{checkpoint} is a checkpoint"
        )
    out_path, in_path = Path(out), Path(input)
    check_outputs(
        {"--out": out_path, "its sidecar": sidecar_path(out_path)},
        {"--input": in_path, "the checkpoint": None if loaded else checkpoint},
    )
    # the input is read and checked before a model is loaded
    examples = load_examples(in_path, turns, fmt=input_format, opts=format_options)
    if limit:
        examples = examples[:limit]
    decoding_overrides, model_overrides = split_overrides(overrides)
    cfg = loaded[0] if loaded else load_config(checkpoint)
    if method_check is not None:  # options that only some methods take (the CLI's method flags)
        method_check(cfg.method)
    decoding = decoding_config(cfg.generate, decoding_overrides)  # checked before loading weights
    model_settings(cfg, model_overrides)
    space = cfg.data.attributes
    target_list = targets_to_generate(space, targets=targets, combinations=combinations)
    if not loaded:
        check_before_loading(checkpoint, cfg, decoding, model_overrides)
    settings = output_settings(cfg, checkpoint, decoding, model_overrides, in_path, turns)
    if not overwrite:  # an output that cannot be appended to is refused before loading too
        check_resumable(out_path, settings, unknown=("served_sha256",))
    model = loaded[1] if loaded else load_model(checkpoint, cfg)
    configure_model(cfg, model, model_overrides)
    check_decoding(model, decoding)
    served = hook(model, "served_fingerprint")
    if served is not None and (fingerprint := served()):
        settings = {**settings, "served_sha256": fingerprint}
    with claimed(out_path, settings, overwrite=overwrite):
        return _generate_into(
            out_path, cfg, model, checkpoint, examples, target_list, decoding, on_progress
        )


def _generate_into(
    out_path: Path,
    cfg: Any,
    model: Any,
    checkpoint: str | Path,
    examples: list[Example],
    target_list: list[dict[str, str] | None],
    decoding: GenerateConfig,
    on_progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    done = done_keys(out_path)
    pairs = [(ex, t) for ex in examples for t in target_list]
    todo = [(ex, t) for ex, t in pairs if (ex.id, target_key(t)) not in done]
    total = len(pairs)
    info = decoding_dict(decoding)
    timings = hook(model, "timings")
    timings_before = dict(timings) if timings is not None else {}
    started = time.perf_counter()
    written = 0
    shared: dict[str, Any] = dict(info)
    with open(out_path, "a", encoding="utf-8") as f:
        # Methods with a stage solved jointly over a chunk (cvae's adaptive ODE) get fixed chunks of
        # the whole input, regenerated whole when partly done, so a resumed run writes exactly
        # what the uninterrupted run would have; for the others only the missing pairs are batched.
        sizer = hook(model, "chunk_size")
        if sizer is not None:
            step = int(sizer(decoding))
            chunks = [pairs[i : i + step] for i in range(0, len(pairs), step)]
        else:
            step = decoding.batch_size
            chunks = [todo[i : i + step] for i in range(0, len(todo), step)]
        for chunk in chunks:
            missing = [(ex.id, target_key(t)) not in done for ex, t in chunk]
            if not any(missing):
                continue
            seeds = [example_seed(decoding.seed, ex.id, t) for ex, t in chunk]
            result = as_generations(
                model.generate(
                    [ex for ex, _ in chunk],
                    decoding=decoding,
                    seeds=seeds,
                    targets=[t for _, t in chunk],
                )
            )
            shared = {**info, **result.shared}
            per_record = result.records or [{} for _ in chunk]
            for (ex, t), seed, text, extra, m in zip(
                chunk, seeds, result.texts, per_record, missing
            ):
                if not m:
                    continue
                rec = replace(
                    ex,
                    generation=text,
                    target_attributes=t,
                    method=cfg.method,
                    checkpoint=str(checkpoint),
                    decoding={**shared, **(extra or {})},
                    seed=seed,
                )
                f.write(dumps(rec.to_dict()) + "\n")
                written += 1
            f.flush()
            os.fsync(f.fileno())
            if on_progress:
                on_progress(len(done) + written, total)
    seconds = time.perf_counter() - started
    logger.debug("generated %d responses (%d already done) in %.1fs", written, len(done), seconds)
    summary: dict[str, Any] = {
        "out": str(out_path),
        "examples": len(examples),
        "targets": len(target_list),
        "generated": written,
        "skipped_done": total - len(todo),
        "total": total,
        "seconds": seconds,
        "responses_per_s": written / seconds if seconds > 0 else 0.0,
        "decoding": shared if written else info,
        "method": cfg.method,
    }
    summary["collapse"] = collapse_report([r["generation"] for r in iter_records(out_path)])
    if timings is not None:  # seconds per generation stage, for methods that report them
        summary["stage_seconds"] = {
            k: v - timings_before.get(k, 0.0) for k, v in dict(timings).items()
        }
    return summary
