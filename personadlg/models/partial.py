"""Checkpoints that hold only what trained: the trainable parameters and the base they sit on.

A method that trains a small part of a large frozen model (adapters, a codebook and its heads on
a frozen decoder) saves with `save_trainable`: the parameters that require gradients go to
`trainable.safetensors`, and `base.json` records the frozen base's identity — its hub id or
directory and the sha256 fingerprint of its weights. `load_trainable` refuses to load onto a base
whose weights differ (a silently different base would make the trained part meaningless), and
checks every saved tensor by name and shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from personadlg.errors import UsageError
from personadlg.models.fingerprint import short, weights_fingerprint
from personadlg.models.loading import resolve_model

TRAINABLE_FILE = "trainable.safetensors"
BASE_FILE = "base.json"


def base_identity(ref: str | Path) -> dict[str, Any]:
    """{"ref": hub id or directory, "sha256": fingerprint of its weights ('' when not local)}."""
    path = Path(resolve_model(ref))
    return {"ref": str(ref), "sha256": weights_fingerprint(path) if path.is_dir() else ""}


def trainable_state(module: nn.Module) -> dict[str, Any]:
    """The parameters of MODULE that require gradients (detached, contiguous, on the CPU)."""
    return {
        name: p.detach().contiguous().cpu()
        for name, p in module.named_parameters()
        if p.requires_grad
    }


def save_trainable(module: nn.Module, directory: str | Path, *, base: dict[str, Any]) -> Path:
    """Write MODULE's trainable parameters and BASE's identity into DIRECTORY."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = trainable_state(module)
    if not state:
        raise UsageError("nothing to save: no parameter of the model requires gradients")
    save_file(state, str(d / TRAINABLE_FILE))
    (d / BASE_FILE).write_text(json.dumps(base, indent=2))
    return d


def check_base(directory: str | Path, base: dict[str, Any]) -> None:
    """The base recorded in DIRECTORY must be the one about to be used (same weights)."""
    recorded = json.loads((Path(directory) / BASE_FILE).read_text())
    if recorded.get("sha256") and base.get("sha256") and recorded["sha256"] != base["sha256"]:
        raise UsageError(
            f"{directory}: trained on the base {recorded.get('ref')} ({short(recorded['sha256'])}), "
            f"but {base.get('ref')} has other weights ({short(base['sha256'])}); load it onto the base "
            "it was trained on"
        )


def load_trainable(module: nn.Module, directory: str | Path, *, base: dict[str, Any]) -> None:
    """Load DIRECTORY's trainable parameters into MODULE (built on BASE), checking the base first."""
    from safetensors.torch import load_file

    d = Path(directory)
    check_base(d, base)
    saved = load_file(str(d / TRAINABLE_FILE))
    own = dict(module.named_parameters())
    unknown = [k for k in saved if k not in own]
    if unknown:
        raise UsageError(
            f"{d}: {len(unknown)} saved tensor(s) this model does not have, e.g. {unknown[0]}"
        )
    for k, v in saved.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise UsageError(
                f"{d}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}"
            )
    module.load_state_dict(saved, strict=False)
