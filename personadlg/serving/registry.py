"""The models a server holds, by name, and what `GET /v1/models` says about each.

A model's name is its run's name — the checkpoint's run directory (`runs/finetune-tiny/final` →
`finetune-tiny`; another checkpoint of the run is `RUN/step-000200`) — or the `--name` given for
it. Two checkpoints with one name are refused.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personadlg.errors import UsageError
from personadlg.models.base import PromptReading, hook
from personadlg.models.decoding import decoding_dict
from personadlg.models.render import RenderOptions
from personadlg.registry import METHODS, did_you_mean
from personadlg.serving.protocol import APIError

NOT_SERVED = {
    "classifier": "a classifier checkpoint does not generate; it scores (personadlg eval --classifier)",
    "api": "an api recipe is already an OpenAI-compatible model; point the client at its base_url",
}


def run_name(checkpoint: str | Path) -> str:
    """The name a checkpoint is served under: its run directory's name (`RUN/final` → RUN),
    or `RUN/DIR` for another checkpoint of the run (`RUN/step-000200`)."""
    p = Path(checkpoint).resolve()
    if p.name == "final":
        return p.parent.name
    if p.name.startswith("step-"):
        return f"{p.parent.name}/{p.name}"
    return p.name


def model_names(checkpoints: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
    """One name per checkpoint (NAMES in order, else the run names); duplicates are refused."""
    if names:
        if len(names) != len(checkpoints):
            raise UsageError(
                f"--name: expected one per checkpoint ({len(checkpoints)}), got {len(names)}"
            )
        out = [n.strip() for n in names]
        if any(not n for n in out):
            raise UsageError("--name: a model name may not be empty")
    else:
        out = [run_name(c) for c in checkpoints]
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        if n in seen:
            raise UsageError(
                f"two checkpoints would both be served as {n!r} ({checkpoints[seen[n]]} and "
                f"{checkpoints[i]}); give each a --name, in order"
            )
        seen[n] = i
    return out


def prompt_reading(model: Any, method: str) -> PromptReading:
    """How MODEL reads a chat prompt, as its method declares it (`prompt_reading`); without the
    hook, the method's conditioning and the context's plain text."""
    supports = tuple(METHODS.get(method).supports)
    read = hook(model, "prompt_reading")
    if read is not None:
        return read(supports)
    return PromptReading(supports=supports, render=RenderOptions(chat_template="plain"))


@dataclass
class ServedModel:
    """One loaded checkpoint and what the server needs to know about it."""

    name: str
    path: Path
    cfg: Any
    model: Any
    created: int
    supports: tuple[str, ...]
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    """lora: user id → {adapter, profile, examples} from the adapters' index."""
    tokenizer: Any = None
    """A private copy of the model's tokenizer for counting tokens in the app's prep thread, so
    the batcher thread's tokenizer is never used from two threads at once."""
    limit: int | None = None
    """`max_new_tokens_limit` (None: unbounded)."""
    joint: bool = False
    """The method solves a stage jointly over its batch (cvae's ODE): requests are never batched
    with each other, so a reply does not depend on its neighbours."""
    reading: PromptReading = field(
        default_factory=lambda: PromptReading(supports=(), render=RenderOptions())
    )
    """How the model reads a prompt (`models/base.py: PromptReading`)."""

    @classmethod
    def create(cls, name: str, path: Path, cfg: Any, model: Any) -> ServedModel:
        limit_of = hook(model, "max_new_tokens_limit")
        known, known_users = hook(model, "known_user"), hook(model, "known_users")
        users: dict[str, dict[str, Any]] = {}
        if known is not None and known_users is not None:
            for uid in known_users():
                entry = known(uid)
                if entry:
                    users[uid] = {
                        "adapter": entry.get("dir", uid),
                        "profile": dict(entry.get("profile") or {}),
                        "examples": entry.get("examples"),
                    }
        reading = prompt_reading(model, cfg.method)
        config_file = path / "config.yaml"
        return cls(
            name=name,
            path=path,
            cfg=cfg,
            model=model,
            created=int(config_file.stat().st_mtime) if config_file.exists() else int(time.time()),
            supports=reading.supports,
            users=users,
            tokenizer=copy.deepcopy(model.tokenizer),
            limit=limit_of() if limit_of is not None else None,
            joint=hook(model, "chunk_size") is not None,
            reading=reading,
        )

    @property
    def knows_users(self) -> bool:
        """The model answers each user its own way (lora's adapters)."""
        return hook(self.model, "known_user") is not None

    @property
    def render(self) -> RenderOptions:
        return self.reading.render

    @property
    def method(self) -> str:
        return str(self.cfg.method)

    @property
    def attribute_space(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in (self.cfg.data.attributes or {}).items()}

    def metadata(self) -> dict[str, Any]:
        """The model's entry of `GET /v1/models` (OpenAI's fields plus a `personadlg` object)."""
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "personadlg",
            "personadlg": {
                "method": self.method,
                "checkpoint": str(self.path),
                "supports": list(self.supports),
                "attributes": self.attribute_space,
                "users": [{"id": uid, **entry} for uid, entry in sorted(self.users.items())],
                "max_new_tokens_limit": self.limit,
                "defaults": decoding_dict(self.cfg.generate),
                "batched": not self.joint,
                "description": METHODS.get(self.method).description,
            },
        }


@dataclass
class ModelRegistry:
    """The server's models: pending while they load, then served by name."""

    names: list[str]
    models: dict[str, ServedModel] = field(default_factory=dict)
    status: str = "loading"
    """loading, ok or failed."""
    error: str = ""

    def check_ready(self) -> None:
        """503 while the models load, or after a failed load."""
        if self.status == "failed":
            raise APIError(
                503,
                f"the server could not load its models: {self.error}",
                type="server_error",
                code="model_load_failed",
            )
        if self.status != "ok":
            raise loading_error()

    def get(self, name: str) -> ServedModel:
        """The model NAME; 404 for an unknown name, 503 while loading (or after a failed load)."""
        if name not in self.names:
            raise APIError(
                404,
                f"model {name!r} does not exist{did_you_mean(name, self.names)}; "
                f"this server has: {', '.join(self.names)}",
                param="model",
                code="model_not_found",
            )
        self.check_ready()
        return self.models[name]

    @property
    def pending(self) -> list[str]:
        return [n for n in self.names if n not in self.models]


def loading_error() -> APIError:
    return APIError(
        503,
        "the models are still loading; retry shortly (GET /health says when they are ready)",
        type="server_error",
        code="model_loading",
        headers={"Retry-After": "1"},
    )
