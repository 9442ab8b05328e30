"""Stage `users` of the lora method: one LoRA adapter per user on one loaded, frozen base (the stage
runner `personadlg.models.lora` declares; it lives with the trainer, as it drives `fit`).

    OUTPUT_DIR/adapters/<dir>/        the user's adapter (peft save_pretrained)
    OUTPUT_DIR/adapters/index.json    user -> dir, examples, steps, valid loss before/after, base
    OUTPUT_DIR/users/<dir>/           the user's metrics.jsonl (train and valid loss per step)
    OUTPUT_DIR/final/                 the base's weights (hard links) + this stage's config: the
                                      checkpoint `generate` and `chat` load, with adapters/

For every user of `model.users_data` (default data.train) with at least `model.min_examples`
turns — or the ones `model.users` / `model.users_file` name — a fresh adapter is added to the
base (seeded per user, so a user's adapter does not depend on the order or the process), a share
`model.user_valid_fraction` of the user's turns is held out, and `fit` trains the adapter for
`train.epochs` epochs (or `train.max_steps` steps) with a validation after every epoch, stopping
after `train.early_stopping_patience` epochs without improvement; the best epoch's adapter is
saved. The base is loaded once per process; the processes of a multi-process run take every
N-th user. `--resume auto` skips users already in the index; a crash loses only the user being
trained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from personadlg.config import RunConfig, to_dict
from personadlg.errors import UsageError
from personadlg.models.backbone import load_pretrained, load_tokenizer
from personadlg.models.collate import feature_array
from personadlg.models.finetune.model import LMLoss
from personadlg.models.fingerprint import short, weights_fingerprint
from personadlg.models.lora.adapters import (
    ADAPTERS_DIR,
    adapter_name,
    adapter_size,
    read_index,
    record_user,
)
from personadlg.models.lora.model import LoraModel
from personadlg.training import checkpoint as ckpt
from personadlg.training.data import dialogue_examples, held_out, resolve_data_path
from personadlg.training.fit import Event, TrainResult, fit
from personadlg.training.solo import SoloAccelerator

logger = logging.getLogger(__name__)

USERS_WORK_DIR = "users"
_CHECKPOINT_ONLY = (
    ckpt.CONFIG_FILE,
    ckpt.STATE_FILE,
    ckpt.OPTIMIZER_FILE,
    ckpt.SCHEDULER_FILE,
    "eval_results.json",
    "fingerprint.json",
)


def user_seed(seed: int, user_id: str) -> int:
    """The seed of USER_ID's adapter (its initialisation, dropout, batch order)."""
    h = hashlib.blake2b(f"{seed}\x00{user_id}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF


class UserJob:
    """What `fit` trains for one user: the base's LM loss through peft, only that adapter trainable."""

    def __init__(self, model: LoraModel, peft: Any, name: str) -> None:
        self.name = name
        self.tokenizer = model.tokenizer
        self.module = LMLoss(peft, causal=not model.seq2seq)
        self.peft = peft
        self._model = model

    def encode(self, example: Any) -> dict[str, Any] | None:
        return self._model.encode(example)

    def collate(self, features: Any) -> dict[str, torch.Tensor]:
        return self._model.collate(features)

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        return self._model.count_tokens(batch)

    def save(self, directory: Path) -> None:
        self.peft.save_pretrained(str(directory), selected_adapters=[self.name])


def mean_loss(job: UserJob, feats: list[dict[str, Any]], *, batch_size: int, device: Any) -> float:
    """Token-weighted mean loss of JOB's module on FEATS (as `fit` validates)."""
    module = job.module
    was_training = module.training
    module.eval()
    total, weight = 0.0, 0.0
    with torch.no_grad():
        for i in range(0, len(feats), batch_size):
            batch = {k: v.to(device) for k, v in job.collate(feats[i : i + batch_size]).items()}
            w = float(job.count_tokens(batch)[1] or 1)
            total += float(module(**batch)["loss"]) * w
            weight += w
    module.train(was_training)
    return total / max(weight, 1e-12)


def validation_split(
    dialogue_ids: list[str], by: str, fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """(train rows, valid rows) of one user's turns: a seeded FRACTION of the turns (BY 'turns'),
    or the turns of the user's last dialogues, about FRACTION of the turns and at least one
    dialogue, while another remains to train on (BY 'dialogue'; one dialogue: by turns)."""
    order = list(dict.fromkeys(dialogue_ids))
    if by == "turns" or len(order) < 2:
        return held_out(len(dialogue_ids), fraction, seed)
    held_dialogues: set[str] = set()
    target = max(1, round(fraction * len(dialogue_ids)))
    for d in reversed(order[1:]):
        held_dialogues.add(d)
        if sum(x in held_dialogues for x in dialogue_ids) >= target:
            break
    keep = [i for i, d in enumerate(dialogue_ids) if d not in held_dialogues]
    return keep, [i for i, d in enumerate(dialogue_ids) if d in held_dialogues]


def _trainable(peft: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in peft.named_parameters() if p.requires_grad}


def _requested_users(cfg: Any) -> list[str]:
    users = list(cfg.users)
    if cfg.users_file:
        path = Path(cfg.users_file)
        if not path.is_file():
            raise UsageError(
                f"model.users_file: expected a file of user ids, got {path} (no such file)"
            )
        users += [
            line.strip()
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    return list(dict.fromkeys(users))


def base_source(cfg: RunConfig) -> Path:
    """The checkpoint stage users adapts (`model.init_from`: a lora stage-base or finetune run)."""
    from personadlg.training.trainer import init_source

    if not cfg.model.init_from:
        raise UsageError(
            "stage users needs model.init_from: the trained base (a run or checkpoint dir)"
        )
    source = init_source(cfg.model.init_from)
    method = ckpt.load_config(source).method
    if method not in ("lora", "finetune"):
        raise UsageError(
            f"model.init_from {source}: stage users adapts a lora or finetune model, got a {method} checkpoint"
        )
    return source


def _final_checkpoint(out: Path, source: Path, cfg: RunConfig, state: dict[str, Any]) -> Path:
    """OUTPUT_DIR/final: SOURCE's model files (hard links where possible) with this stage's config."""
    import yaml

    tmp = out / f".tmp-{ckpt.FINAL_DIR}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in sorted(source.iterdir()):
        if not f.is_file() or f.name in _CHECKPOINT_ONLY or f.name.startswith("rng_state"):
            continue
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    (tmp / ckpt.CONFIG_FILE).write_text(
        yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    )
    weights_fingerprint(tmp, write_cache=True)
    (tmp / ckpt.STATE_FILE).write_text(json.dumps(state, indent=2))
    ckpt.fsync_tree(tmp)
    final = out / ckpt.FINAL_DIR
    ckpt.replace_dir(tmp, final)
    return final


def train_users(
    cfg: RunConfig,
    acc: Any,
    *,
    resume: str | None,
    debug_tokens: int = 0,
    on_event: Event | None = None,
    allow_config_change: bool = False,
) -> TrainResult:
    """Run stage users (see the module docstring); the result's `last_valid` summarises the users."""
    started = time.perf_counter()
    mcfg = cfg.model
    out = Path(cfg.train.output_dir)
    adapters = out / ADAPTERS_DIR
    emit: Event = on_event if (on_event and acc.is_main_process) else (lambda kind, payload: None)
    if resume not in (None, "auto"):
        raise UsageError(
            "--resume with stage users: give --resume auto (finished users are skipped)"
        )
    source = base_source(cfg)
    base = {"ref": str(source), "sha256": weights_fingerprint(source)}
    lora = to_dict(mcfg.lora)
    index = read_index(adapters)
    if index["users"] and resume is None:
        raise UsageError(
            f"{adapters} already holds {len(index['users'])} adapter(s); pass --resume auto to add the "
            "missing users (finished ones are skipped), or choose another train.output_dir"
        )
    if index["users"]:
        old = (index.get("base") or {}).get("sha256", "")
        if old and old != base["sha256"]:
            raise UsageError(
                f"{adapters}: its adapters were trained on the base {short(old)}, but model.init_from "
                f"{source} is {short(base['sha256'])}; adapters of two bases cannot share one index: "
                "choose another train.output_dir"
            )
        if index.get("lora") not in (None, lora) and not allow_config_change:
            raise UsageError(
                f"--resume auto: the adapters in {adapters} were trained with model.lora "
                f"{index['lora']}, this recipe has {lora}; restore it, choose another "
                "train.output_dir, or pass --allow-config-change (adapters of both settings then share the index)"
            )

    # the users and their encoded turns
    path = resolve_data_path(mcfg.users_data or cfg.data.train)
    if path is None:
        raise UsageError("stage users: set data.train or model.users_data (the users' dialogues)")
    tok = load_tokenizer(source)
    lm = load_pretrained(source, arch=mcfg.arch, dtype="auto")
    if lm.config.pad_token_id is None:
        lm.config.pad_token_id = tok.pad_token_id
    for p in lm.parameters():
        p.requires_grad_(False)
    model = LoraModel(lm, tok, mcfg)
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    profiles: dict[str, dict[str, Any]] = {}
    dialogues_of: dict[str, list[str]] = defaultdict(list)  # per feature, its dialogue id
    without_user = 0
    for ex in dialogue_examples(path, cfg):
        if ex.user_id is None:
            without_user += 1
            continue
        feats = model.encode(ex)
        if ex.profile:
            profiles[ex.user_id] = dict(ex.profile)  # the user's latest profile
        if feats is not None:
            by_user[ex.user_id].append({k: feature_array(v) for k, v in feats.items()})
            dialogues_of[ex.user_id].append(ex.dialogue_id)
    if without_user:
        logger.info("%s: %d examples without user_id get no adapter", path, without_user)
    requested = _requested_users(mcfg)
    if requested:
        unknown = [u for u in requested if u not in by_user]
        if unknown:
            from personadlg.registry import did_you_mean

            raise UsageError(
                f"--users: user {unknown[0]!r} has no training examples in {path}"
                f"{did_you_mean(unknown[0], sorted(by_user))}"
                + (f" ({len(unknown)} such users)" if len(unknown) > 1 else "")
            )
        candidates = requested
    else:
        candidates = sorted(by_user)
    too_few = {u: len(by_user[u]) for u in candidates if len(by_user[u]) < mcfg.min_examples}
    if too_few:
        logger.info(
            "%d user(s) have fewer than model.min_examples=%d turns and get no adapter",
            len(too_few),
            mcfg.min_examples,
        )
    users = sorted(u for u in candidates if u not in too_few)
    if not users:
        raise UsageError(
            f"stage users: no user of {path} has model.min_examples={mcfg.min_examples} turns "
            f"({len(by_user)} users, most turns {max((len(v) for v in by_user.values()), default=0)})"
        )
    names: dict[str, str] = {}
    for u in users:
        names.setdefault(adapter_name(u), u)
        if names[adapter_name(u)] != u:
            raise UsageError(
                f"user ids {names[adapter_name(u)]!r} and {u!r} map to one adapter name"
            )
    done = {
        u for u in users if u in index["users"] and (adapters / index["users"][u]["dir"]).is_dir()
    }
    todo = [u for u in users if u not in done]
    mine = todo[acc.process_index :: acc.num_processes]
    emit(
        "users",
        {
            "users": len(users),
            "done": len(done),
            "todo": len(todo),
            "processes": acc.num_processes,
            "too_few": len(too_few),
            "base": str(source),
        },
    )
    logger.debug(
        "stage users: %d users (%d finished earlier), %d on this process; base %s",
        len(users),
        len(done),
        len(mine),
        source,
    )

    from accelerate.utils import set_seed
    from peft import get_peft_model

    solo = SoloAccelerator(acc)
    device = acc.device
    lm.to(device)
    peft: Any = None
    previous: str | None = None
    for user in mine:
        name = adapter_name(user)
        seed = user_seed(cfg.train.seed, user)
        set_seed(seed)
        lcfg = mcfg.lora.to_peft(lm)
        with warnings.catch_warnings():  # peft asks transformers a deprecated question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            if peft is None:
                peft = get_peft_model(lm, lcfg, adapter_name=name)
            else:
                peft.add_adapter(name, lcfg)
        peft.set_adapter(name)  # trainable; every other adapter frozen
        if previous is not None:
            peft.delete_adapter(previous)
        previous = name
        trainable = [n for n, p in peft.named_parameters() if p.requires_grad]
        if not trainable or any(f".{name}." not in n for n in trainable):
            raise RuntimeError(f"adapter {name}: unexpected trainable parameters {trainable[:3]}")
        turns = by_user[user]
        keep, held = validation_split(
            dialogues_of[user], mcfg.user_valid_by, mcfg.user_valid_fraction, seed
        )
        train_feats, valid_feats = [turns[i] for i in keep], [turns[i] for i in held]
        ucfg = copy.deepcopy(cfg)
        tc = ucfg.train
        per_epoch = max(1, len(train_feats) // (tc.batch_size * tc.grad_accum))
        tc.output_dir = str(out / USERS_WORK_DIR / name)
        tc.seed = seed
        tc.eval_every = per_epoch
        tc.save_every = 0
        tc.save_every_minutes = 0
        tc.tensorboard = False
        tc.batch_size = min(tc.batch_size, len(train_feats))
        work = Path(tc.output_dir)
        if work.exists():  # an interrupted attempt at this user: start it afresh
            shutil.rmtree(work)
        job = UserJob(model, peft, name)
        job.module.to(device)
        before = mean_loss(job, valid_feats, batch_size=tc.batch_size, device=device)
        best: dict[str, Any] = {"loss": before, "step": 0, "state": _trainable(peft)}

        def keep_best(
            kind: str, payload: dict[str, Any], best: dict[str, Any] = best, peft: Any = peft
        ) -> None:
            if kind == "eval" and payload.get("loss", math.inf) < best["loss"]:
                best.update(loss=payload["loss"], step=payload["step"], state=_trainable(peft))

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        result = fit(
            job,
            ucfg,
            train_feats,
            valid_feats,
            out_dir=work,
            acc=solo,
            on_event=keep_best,
            recipe=None,
            figures=False,
        )
        seconds = time.perf_counter() - t0
        peft.load_state_dict(best["state"], strict=False)
        tmp = adapters / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        peft.save_pretrained(str(tmp), selected_adapters=[name])
        saved = tmp / name if (tmp / name).is_dir() else tmp
        target = adapters / name
        ckpt.fsync_tree(saved)
        ckpt.replace_dir(saved, target)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work / ckpt.FINAL_DIR, ignore_errors=True)
        peak = (
            torch.cuda.max_memory_allocated(device) / 2**20 if torch.cuda.is_available() else None
        )
        entry = {
            "dir": name,
            "examples": len(turns),
            "train_examples": len(train_feats),
            "valid_examples": len(valid_feats),
            "steps": result.steps,
            "best_step": best["step"],
            "stopped_early": result.stopped_early,
            "valid_loss_before": before,
            "valid_loss_after": best["loss"],
            "seconds": round(seconds, 3),
            "size_bytes": adapter_size(target),
            "base_sha256": base["sha256"],
            "seed": seed,
            "profile": profiles.get(user, {}),
        }
        if peak is not None:
            entry["peak_memory_mb"] = round(peak, 1)
        record_user(adapters, user, entry, base=base, lora=lora)
        if on_event is not None:  # every process reports its own users
            on_event("user", {"user_id": user, **entry})
        logger.debug(
            "user %s: %d turns, %d steps, valid loss %.4f -> %.4f (%.1fs)",
            user,
            len(turns),
            result.steps,
            before,
            best["loss"],
            seconds,
        )

    acc.wait_for_everyone()
    index = read_index(adapters)
    entries = [index["users"][u] for u in users if u in index["users"]]
    summary = {
        "split": "valid",
        "users": len(entries),
        "helped": sum(e["valid_loss_after"] < e["valid_loss_before"] for e in entries),
        "loss_before": sum(e["valid_loss_before"] for e in entries) / max(len(entries), 1),
        "loss": sum(e["valid_loss_after"] for e in entries) / max(len(entries), 1),
    }
    steps = sum(int(e["steps"]) for e in entries)
    final = out / ckpt.FINAL_DIR
    if acc.is_main_process:
        state = {
            "step": steps,
            "total_steps": steps,
            "stage": "users",
            "users": len(entries),
            "base": base,
            "seed": cfg.train.seed,
            "recipe": {k: v for k, v in cfg.to_dict().items() if k not in ("history", "lineage")},
        }
        cfg.lineage = {"init_from": str(source), "method": "lora", "weights_sha256": base["sha256"]}
        final = _final_checkpoint(out, source, cfg, state)
    acc.wait_for_everyone()
    result = TrainResult(
        output_dir=out,
        final_dir=final,
        steps=steps,
        total_steps=steps,
        last_valid=summary,
        seconds=time.perf_counter() - started,
    )
    emit(
        "end",
        {
            "final": str(final),
            "steps": steps,
            "seconds": result.seconds,
            "plot": None,
            "last_train": {},
            "last_valid": summary,
        },
    )
    return result
