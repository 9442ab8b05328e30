"""A method's step of `personadlg demo` (`DemoStep`): what the demo lends it (`DemoKit`), what it is
given (`DemoRun`) and what it asks the CLI to print (`DemoBlock`). Light: no torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

if TYPE_CHECKING:
    from personadlg.config import RunConfig
    from personadlg.data.schema import Example

from personadlg.models.surface import Table


@dataclass(frozen=True)
class EvalView:
    """An eval report for the CLI to draw with its own renderer: KIND `controllability` (the
    matrix of a by-target report) or `report` (every metric, as `personadlg eval` prints it)."""

    kind: str
    report: dict[str, Any]


DemoBlock = Union["Table", str, "EvalView"]
"""What a demo step asks the CLI to print: a table, a line of plain text, or an eval view."""


class DemoKit(Protocol):
    """What `personadlg demo` lends a method's step, so a method folder never imports training/,
    generation/ or metrics/: training, generation and evaluation, with the demo's live views."""

    def train(self, cfg: RunConfig) -> Any:
        """Train CFG's run, resuming what is done; the trainer's result (`final_dir`, `steps`,
        `seconds`, `last_train`, `last_valid`, `plot`, `stages`)."""

    def summary(self, result: Any) -> dict[str, Any]:
        """A training result as the demo reports it (final, steps, seconds, losses, plot)."""

    def load(self, checkpoint: Path) -> tuple[RunConfig, Any]:
        """(config, model) of CHECKPOINT: load once, generate or inspect several times."""

    def generate(
        self,
        checkpoint: Path,
        data: Path,
        out: Path,
        *,
        overrides: Sequence[str] = (),
        combinations: bool = False,
        loaded: tuple[RunConfig, Any] | None = None,
    ) -> dict[str, Any]:
        """Generate for DATA's examples into OUT (resuming); the generation summary. COMBINATIONS:
        every combination of target aspects; OVERRIDES: decoding and `model.*` keys."""

    def evaluate(
        self,
        path: Path,
        *,
        metrics: Sequence[str] | None = None,
        classifiers: Mapping[str, str] | None = None,
        by_target: bool = False,
        out: Path | None = None,
    ) -> dict[str, Any]:
        """The eval report of the generation file PATH (written to OUT); CLASSIFIERS (attribute
        -> checkpoint) judge the personalization metrics."""

    def compare(
        self,
        paths: Sequence[Path],
        *,
        metrics: Sequence[str],
        embedder: str | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        """Generation files of the same examples evaluated alike and compared with the first
        (paired); BY ('user'): per group too, and the macro average."""

    def records(self, path: Path) -> list[dict[str, Any]]:
        """The records of a generation file, in order."""

    def examples(self, path: Path) -> list[Example]:
        """Every example of a dialogue file (every assistant turn)."""


@dataclass(frozen=True)
class DemoRun:
    """One method's step of the demo: its recipe, loaded and checked, the kit, where it writes,
    and what the steps before it left (the baseline's generations, the attribute classifiers)."""

    cfg: RunConfig
    kit: DemoKit
    name: str
    """Its run name (`cvae-tiny`): the run dir OUT_DIR/NAME, generations/NAME.jsonl, eval/NAME.json."""
    out_dir: Path
    data_dir: Path
    """The demo's split: train.jsonl, valid.jsonl, test.jsonl."""
    baseline: Path
    """The baseline's generations for the test split."""
    classifiers: Mapping[str, str] = field(default_factory=dict)
    """Attribute -> the checkpoint of its classifier."""

    def data(self, split: str) -> Path:
        return self.data_dir / f"{split}.jsonl"

    def generations(self, name: str) -> Path:
        return self.out_dir / "generations" / f"{name}.jsonl"

    def eval_report(self, name: str) -> Path:
        return self.out_dir / "eval" / f"{name}.json"


class DemoRender(Protocol):
    """What the CLI prints for a step's summary SECTION: NAME is the step's run name, BASELINE
    the baseline's."""

    def __call__(
        self, section: dict[str, Any], /, *, name: str, baseline: str
    ) -> list[DemoBlock]: ...


@dataclass(frozen=True)
class DemoStep:
    """A method's step of `personadlg demo`, after the baseline and the attribute classifiers:
    its recipe is `<method>/<size>` (size: minilm or tiny), trained, generated and evaluated by
    RUN, whose summary is the demo summary's section under the method's name."""

    order: int
    """Where it runs among the steps (ascending)."""
    steps: int
    """Its optimizer steps in the minilm demo (`train.max_steps`)."""
    run: Callable[[DemoRun], dict[str, Any]]
    render: DemoRender
    chain: tuple[str, ...] = ()
    """Its overrides of `<method>/minilm` in the minilm demo; `{baseline}` stands for the
    baseline's final checkpoint (the decoder it starts from)."""
    outputs: tuple[tuple[str, str], ...] = ()
    """(label, path under its run dir) of the files the demo points to (`loss curves`, `loss.png`)."""
