"""What the trainer lends a stage a method runs itself (`models/spec.py: StageTools`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from personadlg.config import RunConfig
from personadlg.data.schema import Example
from personadlg.errors import UsageError
from personadlg.models.spec import Event
from personadlg.training import checkpoint as ckpt
from personadlg.training.data import dialogue_examples, held_out, resolve_data_path
from personadlg.training.fit import fit
from personadlg.training.solo import SoloAccelerator


class TrainerTools:
    """`StageTools` over one run's process layout ACC."""

    def __init__(self, acc: Any) -> None:
        self.acc = acc
        self._solo: SoloAccelerator | None = None

    def fit(
        self,
        job: Any,
        cfg: RunConfig,
        train: list[dict[str, Any]],
        valid: list[dict[str, Any]],
        *,
        out_dir: Path,
        on_event: Event,
    ) -> Any:
        if self._solo is None:
            self._solo = SoloAccelerator(self.acc)
        return fit(
            job,
            cfg,
            train,
            valid,
            out_dir=out_dir,
            acc=self._solo,
            on_event=on_event,
            recipe=None,
            figures=False,
        )

    def examples(self, data: str, cfg: RunConfig) -> tuple[Path, Iterator[Example]]:
        path = resolve_data_path(data)
        if path is None:
            raise UsageError(f"expected a dialogue file, got {data!r}")
        return path, dialogue_examples(path, cfg)

    def held_out(self, n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
        return held_out(n, fraction, seed)

    def init_source(self, ref: str) -> tuple[Path, str]:
        from personadlg.training.trainer import init_source

        source = init_source(ref)
        return source, ckpt.load_config(source).method

    def publish(self, tmp: Path, target: Path) -> None:
        ckpt.fsync_tree(tmp)
        ckpt.replace_dir(tmp, target)

    def derived_checkpoint(
        self, source: Path, out_dir: Path, cfg: RunConfig, state: dict[str, Any]
    ) -> Path:
        return ckpt.derived_checkpoint(source, out_dir, cfg, state)
