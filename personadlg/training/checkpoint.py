"""Self-describing checkpoint directories, written atomically; finding the newest one to resume.

    OUTPUT_DIR/step-000200/   config.yaml, model weights (safetensors), tokenizer files,
                              trainer_state.json, optimizer.pt, scheduler.pt, rng_state_<rank>.pt
    OUTPUT_DIR/final/         the same, for the last step

A checkpoint is written into `.tmp-<name>`, every file fsynced, and renamed when complete;
`trainer_state.json` is the last file written, so a directory without it is never resumed from.
An existing `final/` is swapped with the new one in one atomic exchange where the OS has it
(Linux `renameat2`); elsewhere the old one is moved to `.old-final` for the moment of the swap,
and `--resume auto` also looks there.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from personadlg.config import RunConfig, build_run_config, read_yaml
from personadlg.errors import DataError, PersonadlgError, UsageError
from personadlg.models.fingerprint import weights_fingerprint

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
METRICS_FILE = "metrics.jsonl"
FINAL_DIR = "final"
OLD_PREFIX = ".old-"
_STEP = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.pt"


def rng_state() -> dict[str, Any]:
    """This process's random states: python, numpy (JSON-able) and torch (tensors)."""
    py = random.getstate()
    np_state: Any = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng(directory: Path, rank: int) -> None:
    state = rng_state()
    torch.save(
        {"torch": state.pop("torch"), "cuda": state.pop("cuda", [])}, directory / rng_file(rank)
    )
    (directory / f"rng_state_{rank}.json").write_text(json.dumps(state))


def load_rng(directory: Path, rank: int) -> None:
    path = directory / rng_file(rank)
    if not path.exists():
        logger.warning(
            "%s has no random state for process %d; dropout will not replay exactly",
            directory,
            rank,
        )
        return
    tensors = load_tensors(path)
    state = json.loads((directory / f"rng_state_{rank}.json").read_text())
    state["torch"] = tensors["torch"]
    if tensors.get("cuda"):
        state["cuda"] = tensors["cuda"]
    set_rng_state(state)


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Step checkpoints that were fully written, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for p in output_dir.iterdir():
        m = _STEP.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def check_output_dir(output_dir: Path) -> None:
    """UsageError when OUTPUT_DIR, or a folder it would be made in, exists as something other
    than a directory (`train.output_dir=afile`, `afile/sub`)."""
    for p in (output_dir, *output_dir.parents):
        if p.exists() and not p.is_dir():
            where = "" if p == output_dir else f" ({p} is not a directory)"
            raise UsageError(
                f"train.output_dir: expected a directory to write the run in, got {str(output_dir)!r}"
                f"{where or ', a file'}"
            )


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Every checkpoint directory in OUTPUT_DIR (step-* and final/), complete or not."""
    if not output_dir.is_dir():
        return []
    return sorted(
        p
        for p in output_dir.iterdir()
        if p.is_dir() and (_STEP.match(p.name) or p.name == FINAL_DIR)
    )


def check_fresh_start(output_dir: Path) -> None:
    """UsageError when OUTPUT_DIR holds checkpoints of an earlier run, complete or not (a fresh run
    would overwrite them)."""
    found = checkpoint_dirs(output_dir)
    if not found:
        return
    broken = [p.name for p in found if not (p / STATE_FILE).is_file()]
    note = f" ({', '.join(broken)} incomplete: no {STATE_FILE})" if broken else ""
    raise UsageError(
        f"{output_dir} already holds checkpoints of an earlier run{note}; pass --resume auto to "
        "continue it, or choose another train.output_dir (or delete this one) to start over"
    )


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    """`--resume auto` → the newest complete checkpoint (step-* or final/), None if there is none; a dir → itself."""
    if resume is None:
        return None
    if resume == "auto":
        candidates = complete_checkpoints(output_dir)
        final = output_dir / FINAL_DIR
        if not (final / STATE_FILE).is_file():  # killed in the middle of replacing final/
            final = output_dir / f"{OLD_PREFIX}{FINAL_DIR}"
        best = candidates[-1] if candidates else None
        if (final / STATE_FILE).is_file():
            fstep = read_state(final)["step"]
            if best is None or fstep >= read_state(best)["step"]:
                best = final
        if best is None:
            if broken := [p.name for p in checkpoint_dirs(output_dir)]:
                raise UsageError(
                    f"--resume auto: {output_dir} holds {', '.join(broken)} but no complete "
                    f"checkpoint (no {STATE_FILE}: files removed, or written by another tool); "
                    "nothing to continue, and starting afresh would overwrite them: delete them or "
                    "choose another train.output_dir"
                )
            logger.info("--resume auto: no checkpoint in %s yet; starting from scratch", output_dir)
        return best
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UsageError(
            f"--resume {resume}: not a complete checkpoint directory (no {STATE_FILE})"
        )
    return path


def read_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / STATE_FILE).read_text())


def is_run_dir(path: Path) -> bool:
    """A training run's directory (holds final/, step-*/ or metrics.jsonl), not a checkpoint."""
    return not (path / STATE_FILE).is_file() and (
        (path / FINAL_DIR).is_dir()
        or bool(complete_checkpoints(path))
        or (path / METRICS_FILE).is_file()
    )


def checkpoint_dir(path: str | Path) -> Path:
    """PATH itself when it is a checkpoint directory; a clear UsageError otherwise."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{p}: no such checkpoint directory")
    if not p.is_dir():
        raise UsageError(f"{p}: not a directory; expected a checkpoint directory such as RUN/final")
    if is_run_dir(p):
        newest = complete_checkpoints(p)
        hint = f"{p / FINAL_DIR}" if (p / FINAL_DIR).is_dir() else str(newest[-1]) if newest else ""
        raise UsageError(
            f"{p}: this is a run directory, not a checkpoint; use {hint or 'RUN/final'}"
            " (or one of its step-*/ checkpoints)"
        )
    if not (p / CONFIG_FILE).is_file():
        raise UsageError(
            f"{p}: not a personadlg checkpoint (no {CONFIG_FILE}); pass a run's final/ or step-*/ directory"
        )
    return p


def load_config(directory: str | Path) -> RunConfig:
    """The resolved recipe saved in a checkpoint directory."""
    path = checkpoint_dir(directory)
    return build_run_config(read_yaml(path / CONFIG_FILE), source=str(path / CONFIG_FILE))


def load_checkpoint(directory: str | Path) -> tuple[RunConfig, Any]:
    """(config, model) from a checkpoint directory; needs nothing else."""
    cfg = load_config(directory)
    return cfg, load_model(directory, cfg)


def load_model(directory: str | Path, cfg: RunConfig) -> Any:
    """The model of a checkpoint whose config CFG is already loaded (`load_config`).

    A checkpoint's own files never enable remote code or pickles: its config's
    `model.trust_remote_code` is ignored (see `models/loading.py` for the user's opt-ins)."""
    from personadlg.registry import METHODS

    if getattr(cfg.model, "trust_remote_code", False):
        logger.warning(
            "%s: the checkpoint's config sets model.trust_remote_code; ignored (a file never enables "
            "remote code; pass --trust-remote-code to allow it)",
            directory,
        )
    spec = METHODS.get(cfg.method)
    try:
        return spec.load(Path(directory), cfg)
    except PersonadlgError:
        raise
    except Exception as err:
        if not _unreadable_file(err):
            raise
        raise DataError(
            f"cannot load the {cfg.method} model: {type(err).__name__}: {_first_line(err)} "
            "(a damaged or foreign file in the checkpoint)",
            path=str(directory),
        ) from err


def load_tensors(path: Path) -> Any:
    """`torch.load(PATH, weights_only=True)`; a damaged file, or one holding more than tensors
    and plain values (a pickle that would run code), is a DataError naming it."""
    try:
        with warnings.catch_warnings():  # torch warns about what it then refuses
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise DataError("missing from the checkpoint", path=str(path)) from None
    except pickle.UnpicklingError:
        raise DataError(
            "holds objects other than tensors and plain values; refused (unpickling them could "
            "run code): a damaged or foreign file in the checkpoint",
            path=str(path),
        ) from None
    except Exception as err:  # a truncated or foreign file
        raise DataError(
            f"cannot be read as tensors ({type(err).__name__}: {_first_line(err)}): a damaged or "
            "foreign file in the checkpoint",
            path=str(path),
        ) from None


def _unreadable_file(err: BaseException) -> bool:
    """Whether ERR says a checkpoint file is damaged or foreign (not a bug of ours)."""
    kinds = {c.__name__ for c in type(err).__mro__}
    return bool(
        kinds & {"SafetensorError", "OSError", "ValueError", "UnpicklingError", "JSONDecodeError"}
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else "no details"


def write_checkpoint(
    output_dir: Path,
    name: str,
    *,
    cfg: RunConfig,
    model: Any,
    state: dict[str, Any],
    optimizer: Any,
    scheduler: Any,
    accelerator: Any,
    extra_json: dict[str, Any] | None = None,
) -> Path:
    """Write OUTPUT_DIR/NAME atomically from every process (each saves its RNG state; the main saves the rest).

    EXTRA_JSON: more files to write, {file name: JSON-able object} (e.g. eval_results.json).
    """
    tmp = output_dir / f".tmp-{name}"
    final = output_dir / name
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_rng(tmp, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / CONFIG_FILE).write_text(
            yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
        )
        model.save(tmp)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
        for fname, obj in (extra_json or {}).items():
            (tmp / fname).write_text(json.dumps(obj, indent=2))
        weights_fingerprint(tmp, write_cache=True)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        fsync_tree(tmp)
        replace_dir(tmp, final)
        logger.debug("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def fsync_tree(directory: Path) -> None:
    """fsync every file under DIRECTORY and the directories themselves (before a rename publishes them)."""
    for root, _dirs, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not fsync directories
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_dir(new: Path, target: Path) -> None:
    """Put directory NEW in place of TARGET: an atomic swap where possible, so there is no moment
    without a complete TARGET; else via `.old-TARGET`, which `--resume auto` also reads."""
    if not target.exists():
        new.rename(target)
    elif _exchange(new, target):
        shutil.rmtree(new)  # now the old one
    else:
        old = target.with_name(f"{OLD_PREFIX}{target.name}")
        if old.exists():
            shutil.rmtree(old)
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old)
    fsync_dir(target.parent)


def prune_checkpoints(output_dir: Path, keep_last: int) -> None:
    """Delete all but the newest KEEP_LAST step checkpoints (final/ is never deleted)."""
    steps = complete_checkpoints(output_dir)
    for p in steps[: max(0, len(steps) - keep_last)]:
        shutil.rmtree(p, ignore_errors=True)


def load_training_state(
    directory: Path, optimizer: Any, scheduler: Any, rank: int
) -> dict[str, Any]:
    """Restore optimizer, scheduler and this process's RNG from a checkpoint; return trainer_state."""
    optimizer.load_state_dict(load_tensors(directory / OPTIMIZER_FILE))
    scheduler.load_state_dict(load_tensors(directory / SCHEDULER_FILE))
    load_rng(directory, rank)
    return read_state(directory)


CHECKPOINT_ONLY = (
    CONFIG_FILE,
    STATE_FILE,
    OPTIMIZER_FILE,
    SCHEDULER_FILE,
    "eval_results.json",
    "fingerprint.json",
)
"""Files of a checkpoint that describe its training, not its model."""


def derived_checkpoint(source: Path, out_dir: Path, cfg: RunConfig, state: dict[str, Any]) -> Path:
    """OUT_DIR/final: SOURCE's model files (hard links where possible, no optimizer or RNG state)
    with CFG as its config and STATE as its trainer state, written atomically."""
    tmp = out_dir / f".tmp-{FINAL_DIR}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in sorted(source.iterdir()):
        if not f.is_file() or f.name in CHECKPOINT_ONLY or f.name.startswith("rng_state"):
            continue
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    (tmp / CONFIG_FILE).write_text(
        yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    )
    weights_fingerprint(tmp, write_cache=True)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
    fsync_tree(tmp)
    final = out_dir / FINAL_DIR
    replace_dir(tmp, final)
    return final
