"""A method's one declaration: `SPEC = MethodSpec(...)` in `models/<name>/__init__.py`.

The spec says everything the rest of personadlg knows about a method — its name and description,
its `model:` config class, the conditioning it uses, its stages, the options it adds to generic
commands, what `personadlg ls` can list for it, its step of the demo — and is imported without
torch (`personadlg --help` reads the options). What needs torch (building, loading, the model
class, a stage the method runs itself) sits behind `implementation`, a function that imports it on
first use. `personadlg/registry.py` names the spec with one line; nothing else names the method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

if TYPE_CHECKING:
    from personadlg.config import RunConfig
    from personadlg.data.schema import Example
    from personadlg.models.base import BuildContext, PersonaModel

Event = Callable[[str, dict[str, Any]], None]
"""A training event sink: `on_event(kind, payload)` (the CLI's live view)."""


@dataclass(frozen=True)
class Flag:
    """An option a method adds to a generic command (`train --users`, `generate --codes`).

    A switch stands for OVERRIDES; a flag with a VALUE (its metavar) fills OVERRIDE's `{}` — with
    LISTED the value is split at commas, and with QUOTED each item is written as a JSON string, so
    ids such as `007` stay strings — or, with ACTION, is handed to `action(model, examples, out)`
    (the command loads the checkpoint and the data; OUTPUT is the default file name)."""

    help: str
    value: str = ""
    overrides: tuple[str, ...] = ()
    override: str = ""
    listed: bool = False
    quoted: bool = False
    action: Callable[[Any, Sequence[Any], Path], Path] | None = None
    output: str = ""


@dataclass(frozen=True)
class Listing:
    """What `personadlg ls NAME DIR` shows for a method (lora: `ls adapters RUN`)."""

    help: str
    argument: str
    """What DIR is, in words, for the help and the error when it is missing."""
    read: Callable[[Path], Table]


@dataclass(frozen=True)
class Table:
    """Rows for the CLI to draw (or DATA, as is, for `--json`)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    data: Any = None


Block = Union["Table", str]
"""What a method asks the CLI to print: a table, or a line of plain text."""


@dataclass(frozen=True)
class Option:
    """An option of a method's command: its flags, value type (Path, int, str, bool), help."""

    flags: tuple[str, ...]
    type: type
    help: str
    default: Any = None
    required: bool = False


class CommandKit(Protocol):
    """What the CLI lends a method's command (a method folder never imports generation/)."""

    def examples(self, path: Path) -> list[Example]:
        """Every example of a data file (dialogues expanded, examples as they are)."""

    def decoding(self, overrides: Sequence[str]) -> Any:
        """The checkpoint's `generate:` settings with KEY=VALUE OVERRIDES (a GenerateConfig)."""


@dataclass(frozen=True)
class Command:
    """`personadlg METHOD NAME CHECKPOINT [options] [KEY=VALUE ...]`: a command a method adds,
    run on one of its checkpoints (codebook: `inspect`). The CLI loads the checkpoint (under the
    loading policy), calls `run(model, options, kit)` for a JSON-able report, and prints
    `--json` or the blocks `render(report, options)` returns."""

    help: str
    run: Callable[[Any, Mapping[str, Any], CommandKit], dict[str, Any]]
    render: Callable[[dict[str, Any], Mapping[str, Any]], list[Block]]
    options: Mapping[str, Option] = field(default_factory=dict)
    examples: tuple[str, ...] = ()


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


@dataclass(frozen=True)
class Implementation:
    """The heavy half of a method (imports torch): how to build, load and train it."""

    build: Callable[[RunConfig, BuildContext], PersonaModel]
    load: Callable[[Path, RunConfig], PersonaModel]
    model_cls: type
    """The class of the model objects `build` and `load` return (checked against the interface)."""
    read: Callable[[Path, Any], Iterable[Any]] | None = None
    """Training items of a data file (default: the examples of a dialogue file)."""
    stage_runners: Mapping[str, StageRunner] = field(default_factory=dict)
    """Stages that are not one `fit` of one model, run in place of it (lora: stage users, one fit
    per user). Such a stage runs on every `--resume auto` (it skips its own finished work)."""


@dataclass(frozen=True)
class MethodSpec:
    """A method, declared once (see the module docstring)."""

    name: str
    description: str
    """One line for `personadlg ls methods` and the server's `/v1/models`."""
    config_cls: type | None = None
    """The dataclass of the recipe's `model:` section; None for a method that trains nothing (api)."""
    implementation: Callable[[], Implementation] | None = None
    """Imports and returns the heavy half; None for a method that trains nothing."""
    supports: tuple[str, ...] = ()
    """Conditioning it uses at generation: 'persona', 'attributes', 'profile', 'user', 'history'
    (codes inferred from the dialogue history)."""
    stages: tuple[str, ...] = ()
    """Stages a recipe may chain (codebook: role, init, joint). A method with stages has
    `model.stages` (the ones to run, in order) and `model.stage` (the one a run trains); `train`
    runs each as its own run with its own checkpoint (training/stages.py)."""
    flags: Mapping[str, Mapping[str, Flag]] = field(default_factory=dict)
    """{command: {"--flag": Flag}}: options it adds to `train`, `generate` or `plot`."""
    listings: Mapping[str, Listing] = field(default_factory=dict)
    """{name: Listing}: what `personadlg ls NAME DIR` shows for its runs."""
    commands: Mapping[str, Command] = field(default_factory=dict)
    """{name: Command}: `personadlg METHOD NAME ...` (codebook: inspect)."""
    demo: DemoStep | None = None
    """Its step of `personadlg demo` (after the baseline and the classifiers), or None."""

    @property
    def trained(self) -> bool:
        return self.implementation is not None

    def impl(self) -> Implementation:
        """The heavy half, imported on first use."""
        if self.implementation is None:
            from personadlg.errors import UsageError

            raise UsageError(f"method {self.name} trains nothing and has no model to build or load")
        return _implementation(self.implementation)

    @property
    def build(self) -> Callable[[RunConfig, BuildContext], PersonaModel]:
        return self.impl().build

    @property
    def load(self) -> Callable[[Path, RunConfig], PersonaModel]:
        return self.impl().load

    @property
    def model_cls(self) -> type:
        return self.impl().model_cls

    @property
    def read(self) -> Callable[[Path, Any], Iterable[Any]] | None:
        return self.impl().read

    @property
    def stage_runners(self) -> Mapping[str, StageRunner]:
        return self.impl().stage_runners


@cache
def _implementation(factory: Callable[[], Implementation]) -> Implementation:
    return factory()


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
