"""Process layout: the accelerate `Accelerator`, and CPU multi-process launches.

On a machine without GPUs, `accelerate launch --num_processes N` starts a single process (its
multi-process CPU mode needs MPI). personadlg notices that case and starts the N processes itself
through `torch.distributed.run` (gloo), so the same command works on a laptop and on a GPU node.
`torchrun --nproc_per_node N -m personadlg train ...` and `accelerate launch --multi_gpu ...` work
directly.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def make_accelerator(mixed_precision: str = "no"):  # -> accelerate.Accelerator
    """An Accelerator for this process; CPU-only machines get `cpu=True`, so multi-process runs use gloo."""
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    mp = mixed_precision
    if mp == "auto":
        mp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if mp != "no" and not cuda:
        logger.warning("mixed precision %s needs a GPU; training in float32 on the CPU", mp)
        mp = "no"
    return Accelerator(cpu=not cuda, mixed_precision=mp)


def _parent_num_processes() -> int | None:
    """--num_processes N of the `accelerate launch` that started us (Linux /proc), if any."""
    try:
        args = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in args if a]
    names = [Path(w).name for w in words[:3]]
    if not ("accelerate-launch" in names or ("accelerate" in names and "launch" in words)):
        return None
    for i, w in enumerate(words):
        for flag in ("--num_processes", "--num-processes"):
            if w == flag and i + 1 < len(words):
                return int(words[i + 1]) if words[i + 1].isdigit() else None
            if w.startswith(flag + "="):
                value = w.split("=", 1)[1]
                return int(value) if value.isdigit() else None
    return None


def relaunch_command(argv: Sequence[str]) -> list[str] | None:
    """The torch.distributed.run command to start N CPU processes, when accelerate started only one."""
    if "LOCAL_RANK" in os.environ or "ACCELERATE_USE_CPU" not in os.environ:
        return None
    import torch

    if torch.cuda.is_available():
        return None
    n = _parent_num_processes()
    if not n or n < 2:
        return None
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={n}",
        "-m",
        "personadlg",
        *argv,
    ]


def maybe_relaunch(argv: Sequence[str]) -> None:
    """Replace this process with N CPU processes when `accelerate launch --num_processes N` gave us one."""
    cmd = relaunch_command(argv)
    if cmd is not None:
        logger.info(
            "accelerate started 1 process on a CPU-only machine; starting %s with torch.distributed (gloo)",
            cmd[4].split("=")[1],
        )
        os.execv(cmd[0], cmd)


def broadcast_from_main(acc: Any, tensor: Any) -> Any:
    """TENSOR as the main process holds it, on every process (itself when there is one process)."""
    if acc.num_processes == 1:
        return tensor
    import torch.distributed as dist

    shared = tensor.to(acc.device).contiguous()
    dist.broadcast(shared, 0)
    return shared.to(tensor.device)
