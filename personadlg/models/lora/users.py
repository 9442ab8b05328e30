"""Stage `users` of the lora method: one LoRA adapter per user on one loaded, frozen base (the stage
runner the method's spec declares; the trainer lends it `fit` and its checkpoint helpers through
`StageRun.tools`, so this folder never imports training/).

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
import logging
import math
import os
import shutil
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from personadlg.config import to_dict
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
from personadlg.models.spec import Event, StageOutcome, StageRun, StageTools

logger = logging.getLogger(__name__)

USERS_WORK_DIR = "users"


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
    dialogue_ids: list[str], by: str, fraction: float, seed: int, *, tools: StageTools
) -> tuple[list[int], list[int]]:
    """(train rows, valid rows) of one user's turns: a seeded FRACTION of the turns (BY 'turns'),
    or the turns of the user's last dialogues, about FRACTION of the turns and at least one
    dialogue, while another remains to train on (BY 'dialogue'; one dialogue: by turns)."""
    order = list(dict.fromkeys(dialogue_ids))
    if by == "turns" or len(order) < 2:
        return tools.held_out(len(dialogue_ids), fraction, seed)
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


def base_source(init_from: str | None, tools: StageTools) -> Path:
    """The checkpoint stage users adapts (`model.init_from`: a lora stage-base or finetune run)."""
    if not init_from:
        raise UsageError(
            "stage users needs model.init_from: the trained base (a run or checkpoint dir)"
        )
    source, method = tools.init_source(init_from)
    if method not in ("lora", "finetune"):
        raise UsageError(
            f"model.init_from {source}: stage users adapts a lora or finetune model, got a {method} checkpoint"
        )
    return source


@dataclass
class UserTurns:
    """The encoded turns of every user of the data, with what `train_users` needs beside them."""

    path: Path
    features: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    dialogues: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    """Per user, the dialogue id of each feature (for `model.user_valid_by: dialogue`)."""
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per user, the latest profile seen."""


def check_index(
    adapters: Path,
    index: dict[str, Any],
    *,
    base: dict[str, Any],
    source: Path,
    lora: dict[str, Any],
    resume: str | None,
    allow_config_change: bool,
) -> None:
    """Refuse to add adapters to an index of another base, another `model.lora`, or without
    `--resume auto`."""
    if resume not in (None, "auto"):
        raise UsageError(
            "--resume with stage users: give --resume auto (finished users are skipped)"
        )
    if not index["users"]:
        return
    if resume is None:
        raise UsageError(
            f"{adapters} already holds {len(index['users'])} adapter(s); pass --resume auto to add the "
            "missing users (finished ones are skipped), or choose another train.output_dir"
        )
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


def read_turns(model: LoraModel, run: StageRun) -> UserTurns:
    """Every user's encoded turns from `model.users_data` (default data.train)."""
    cfg = run.cfg
    data = cfg.model.users_data or cfg.data.train
    if not data:
        raise UsageError("stage users: set data.train or model.users_data (the users' dialogues)")
    path, examples = run.tools.examples(data, cfg)
    turns = UserTurns(path=path)
    without_user = 0
    for ex in examples:
        if ex.user_id is None:
            without_user += 1
            continue
        feats = model.encode(ex)
        if ex.profile:
            turns.profiles[ex.user_id] = dict(ex.profile)
        if feats is not None:
            turns.features[ex.user_id].append({k: feature_array(v) for k, v in feats.items()})
            turns.dialogues[ex.user_id].append(ex.dialogue_id)
    if without_user:
        logger.info("%s: %d examples without user_id get no adapter", path, without_user)
    return turns


def choose_users(turns: UserTurns, mcfg: Any) -> tuple[list[str], int]:
    """(the users that get an adapter, how many had too few turns): the ones `model.users` /
    `model.users_file` name, else every user, with at least `model.min_examples` turns."""
    by_user = turns.features
    requested = _requested_users(mcfg)
    if requested:
        unknown = [u for u in requested if u not in by_user]
        if unknown:
            from personadlg.registry import did_you_mean

            raise UsageError(
                f"--users: user {unknown[0]!r} has no training examples in {turns.path}"
                f"{did_you_mean(unknown[0], sorted(by_user))}"
                + (f" ({len(unknown)} such users)" if len(unknown) > 1 else "")
            )
        candidates = requested
    else:
        candidates = sorted(by_user)
    too_few = {u for u in candidates if len(by_user[u]) < mcfg.min_examples}
    if too_few:
        logger.info(
            "%d user(s) have fewer than model.min_examples=%d turns and get no adapter",
            len(too_few),
            mcfg.min_examples,
        )
    users = sorted(u for u in candidates if u not in too_few)
    if not users:
        raise UsageError(
            f"stage users: no user of {turns.path} has model.min_examples={mcfg.min_examples} turns "
            f"({len(by_user)} users, most turns {max((len(v) for v in by_user.values()), default=0)})"
        )
    names: dict[str, str] = {}
    for u in users:
        names.setdefault(adapter_name(u), u)
        if names[adapter_name(u)] != u:
            raise UsageError(
                f"user ids {names[adapter_name(u)]!r} and {u!r} map to one adapter name"
            )
    return users, len(too_few)


@dataclass
class Trainee:
    """The shared state of one process's users: the frozen LM and the peft model over it."""

    model: LoraModel
    lm: Any
    device: Any
    peft: Any = None
    previous: str | None = None

    def add_adapter(self, name: str, lcfg: Any) -> Any:
        """A fresh adapter NAME, the only trainable one (the previous user's is deleted)."""
        from peft import get_peft_model

        with warnings.catch_warnings():  # peft asks transformers a deprecated question
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            if self.peft is None:
                self.peft = get_peft_model(self.lm, lcfg, adapter_name=name)
            else:
                self.peft.add_adapter(name, lcfg)
        self.peft.set_adapter(name)  # trainable; every other adapter frozen
        if self.previous is not None:
            self.peft.delete_adapter(self.previous)
        self.previous = name
        trainable = [n for n, p in self.peft.named_parameters() if p.requires_grad]
        if not trainable or any(f".{name}." not in n for n in trainable):
            raise RuntimeError(f"adapter {name}: unexpected trainable parameters {trainable[:3]}")
        return self.peft


def user_config(cfg: Any, *, work: Path, seed: int, n_train: int) -> Any:
    """CFG for one user's `fit`: a validation every epoch, no step checkpoints, its own seed."""
    ucfg = copy.deepcopy(cfg)
    tc = ucfg.train
    tc.eval_every = max(1, n_train // (tc.batch_size * tc.grad_accum))
    tc.output_dir = str(work)
    tc.seed = seed
    tc.save_every = 0
    tc.save_every_minutes = 0
    tc.tensorboard = False
    tc.batch_size = min(tc.batch_size, n_train)
    return ucfg


def train_user(
    user: str, trainee: Trainee, turns: UserTurns, run: StageRun, *, base: dict[str, Any]
) -> dict[str, Any]:
    """Train, keep the best epoch of, and save USER's adapter; returns its index entry."""
    from accelerate.utils import set_seed

    cfg, mcfg, tools = run.cfg, run.cfg.model, run.tools
    out = Path(cfg.train.output_dir)
    adapters = out / ADAPTERS_DIR
    name = adapter_name(user)
    seed = user_seed(cfg.train.seed, user)
    set_seed(seed)
    peft = trainee.add_adapter(name, mcfg.lora.to_peft(trainee.lm))
    feats = turns.features[user]
    keep, held = validation_split(
        turns.dialogues[user], mcfg.user_valid_by, mcfg.user_valid_fraction, seed, tools=tools
    )
    train_feats, valid_feats = [feats[i] for i in keep], [feats[i] for i in held]
    work = out / USERS_WORK_DIR / name
    ucfg = user_config(cfg, work=work, seed=seed, n_train=len(train_feats))
    if work.exists():  # an interrupted attempt at this user: start it afresh
        shutil.rmtree(work)
    job = UserJob(trainee.model, peft, name)
    job.module.to(trainee.device)
    batch_size = ucfg.train.batch_size
    before = mean_loss(job, valid_feats, batch_size=batch_size, device=trainee.device)
    best: dict[str, Any] = {"loss": before, "step": 0, "state": _trainable(peft)}

    def keep_best(kind: str, payload: dict[str, Any]) -> None:
        if kind == "eval" and payload.get("loss", math.inf) < best["loss"]:
            best.update(loss=payload["loss"], step=payload["step"], state=_trainable(peft))

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(trainee.device)
    t0 = time.perf_counter()
    result = tools.fit(job, ucfg, train_feats, valid_feats, out_dir=work, on_event=keep_best)
    seconds = time.perf_counter() - t0
    peft.load_state_dict(best["state"], strict=False)
    tmp = adapters / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    peft.save_pretrained(str(tmp), selected_adapters=[name])
    target = adapters / name
    tools.publish(tmp / name if (tmp / name).is_dir() else tmp, target)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(result.final_dir, ignore_errors=True)
    entry = {
        "dir": name,
        "examples": len(feats),
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
        "profile": turns.profiles.get(user, {}),
    }
    if torch.cuda.is_available():
        entry["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(trainee.device) / 2**20, 1)
    logger.debug(
        "user %s: %d turns, %d steps, valid loss %.4f -> %.4f (%.1fs)",
        user,
        len(feats),
        result.steps,
        before,
        best["loss"],
        seconds,
    )
    return entry


def train_users(run: StageRun) -> StageOutcome:
    """Run stage users (see the module docstring); the outcome's `last_valid` summarises the users."""
    started = time.perf_counter()
    cfg, acc, mcfg = run.cfg, run.acc, run.cfg.model
    out = Path(cfg.train.output_dir)
    adapters = out / ADAPTERS_DIR
    on_event = run.on_event
    emit: Event = on_event if (on_event and acc.is_main_process) else (lambda kind, payload: None)
    source = base_source(mcfg.init_from, run.tools)
    base = {"ref": str(source), "sha256": weights_fingerprint(source)}
    lora = to_dict(mcfg.lora)
    index = read_index(adapters)
    check_index(
        adapters,
        index,
        base=base,
        source=source,
        lora=lora,
        resume=run.resume,
        allow_config_change=run.allow_config_change,
    )
    tok = load_tokenizer(source)
    lm = load_pretrained(source, arch=mcfg.arch, dtype="auto")
    if lm.config.pad_token_id is None:
        lm.config.pad_token_id = tok.pad_token_id
    for p in lm.parameters():
        p.requires_grad_(False)
    model = LoraModel(lm, tok, mcfg)
    turns = read_turns(model, run)
    users, too_few = choose_users(turns, mcfg)
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
            "too_few": too_few,
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
    lm.to(acc.device)
    trainee = Trainee(model=model, lm=lm, device=acc.device)
    for user in mine:
        entry = train_user(user, trainee, turns, run, base=base)
        record_user(adapters, user, entry, base=base, lora=lora)
        if on_event is not None:  # every process reports its own users
            on_event("user", {"user_id": user, **entry})
    acc.wait_for_everyone()
    outcome = finish(run, users, source=source, base=base, started=started)
    emit(
        "end",
        {
            "final": str(outcome.final_dir),
            "steps": outcome.steps,
            "seconds": outcome.seconds,
            "plot": None,
            "last_train": {},
            "last_valid": outcome.last_valid,
        },
    )
    return outcome


def finish(
    run: StageRun, users: list[str], *, source: Path, base: dict[str, Any], started: float
) -> StageOutcome:
    """The stage's summary over USERS, and (on the main process) OUTPUT_DIR/final: the base's
    model files with this stage's config, the checkpoint `generate` and `chat` load."""
    cfg, acc = run.cfg, run.acc
    out = Path(cfg.train.output_dir)
    index = read_index(out / ADAPTERS_DIR)
    entries = [index["users"][u] for u in users if u in index["users"]]
    summary = {
        "split": "valid",
        "users": len(entries),
        "helped": sum(e["valid_loss_after"] < e["valid_loss_before"] for e in entries),
        "loss_before": sum(e["valid_loss_before"] for e in entries) / max(len(entries), 1),
        "loss": sum(e["valid_loss_after"] for e in entries) / max(len(entries), 1),
    }
    steps = sum(int(e["steps"]) for e in entries)
    final = out / "final"
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
        final = run.tools.derived_checkpoint(source, out, cfg, state)
    acc.wait_for_everyone()
    return StageOutcome(
        final_dir=final,
        steps=steps,
        last_valid=summary,
        seconds=time.perf_counter() - started,
    )
