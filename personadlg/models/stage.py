"""A stage a method runs itself (lora's `users`): what the trainer lends it (`StageTools`), what it
is given (`StageRun`) and what it returns (`StageOutcome`), so a method folder never imports
training/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from personadlg.config import RunConfig
    from personadlg.data.schema import Example


Event = Callable[[str, dict[str, Any]], None]
"""A training event sink: `on_event(kind, payload)` (the CLI's live view)."""


class StageTools(Protocol):
    """What the trainer lends a stage the method runs itself, so a method folder never imports
    training/: one `fit` on one process, the run's data, checkpoints written atomically."""

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
        """Train JOB (a PersonaModel-like object) on TRAIN features on this process alone, as any
        run does (validation, early stopping, a final checkpoint in OUT_DIR/final); returns the
        trainer's result (`steps`, `stopped_early`, `final_dir`)."""

    def examples(self, data: str, cfg: RunConfig) -> tuple[Path, Iterator[Example]]:
        """The examples of the dialogue file DATA (a path or `bundled:NAME`) read as CFG says."""

    def held_out(self, n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
        """(kept rows, held-out rows) of N: a seeded FRACTION held out, at least one of each."""

    def init_source(self, ref: str) -> tuple[Path, str]:
        """(checkpoint dir, its method) of `model.init_from` REF (a run or checkpoint dir)."""

    def publish(self, tmp: Path, target: Path) -> None:
        """Make the finished directory TMP durable and put it in place of TARGET atomically."""

    def derived_checkpoint(
        self, source: Path, out_dir: Path, cfg: RunConfig, state: dict[str, Any]
    ) -> Path:
        """OUT_DIR/final: SOURCE's model files (hard links where possible) with CFG and STATE."""


@dataclass
class StageRun:
    """One run of a stage the method runs itself: the stage's config, the process layout
    (`acc`: an accelerate Accelerator or the trainer's stand-in) and the command's options."""

    cfg: RunConfig
    acc: Any
    tools: StageTools
    resume: str | None = None
    debug_tokens: int = 0
    on_event: Event | None = None
    allow_config_change: bool = False


@dataclass
class StageOutcome:
    """What such a stage produced: the checkpoint later commands load, and its summary."""

    final_dir: Path
    steps: int
    last_valid: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


StageRunner = Callable[[StageRun], StageOutcome]
