"""One process training on its own inside a multi-process run: `SoloAccelerator`.

`fit` drives an accelerate `Accelerator`. When the processes of a run split independent jobs
between them (lora's stage `users`: each process trains its share of the users' adapters), each
job is a one-process fit: no gradient all-reduce, no barrier, no collective. `SoloAccelerator`
offers the members `fit` and `write_checkpoint` use, acting as a world of one on this process's
device, with the run's autocast.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from personadlg.errors import UsageError


class SoloAccelerator:
    """The `Accelerator` surface of `fit` for one process alone (see the module docstring)."""

    is_main_process = True
    num_processes = 1
    process_index = 0

    def __init__(self, run: Any) -> None:
        if getattr(run, "mixed_precision", "no") == "fp16":
            raise UsageError(
                "train.mixed_precision fp16 is not supported where processes train separate jobs "
                "(lora stage users); use bf16 or no"
            )
        self.run = run
        self.device = run.device

    def prepare(self, *objects: Any) -> Any:
        out = tuple(o.to(self.device) if isinstance(o, torch.nn.Module) else o for o in objects)
        return out if len(out) > 1 else out[0]

    def unwrap_model(self, module: Any) -> Any:
        return module

    def autocast(self) -> Any:
        return self.run.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def no_sync(self, module: Any) -> Any:
        return nullcontext()

    def clip_grad_norm_(self, parameters: Any, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor

    def wait_for_everyone(self) -> None:
        return None
