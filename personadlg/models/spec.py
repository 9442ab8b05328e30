"""A method's one declaration: `SPEC = MethodSpec(...)` in `models/<name>/__init__.py`.

The spec says everything the rest of personadlg knows about a method — its name and description,
its `model:` config class, the conditioning it uses, its stages, the options it adds to generic
commands, what `personadlg ls` can list for it, its step of the demo — and is imported without
torch (`personadlg --help` reads the options). What needs torch (building, loading, the model
class, a stage the method runs itself) sits behind `implementation`, a function that imports it on
first use. `personadlg/registry.py` names the spec with one line; nothing else names the method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from personadlg.models.demo_step import DemoBlock, DemoKit, DemoRun, DemoStep, EvalView
from personadlg.models.stage import Event, StageOutcome, StageRun, StageRunner, StageTools
from personadlg.models.surface import (
    Block,
    ChatCommand,
    ChatView,
    Command,
    CommandKit,
    Flag,
    Listing,
    Option,
    Table,
)

if TYPE_CHECKING:
    from typing import Any

    from personadlg.config import RunConfig
    from personadlg.models.base import BuildContext, PersonaModel

__all__ = [
    "Block",
    "ChatCommand",
    "ChatView",
    "Command",
    "CommandKit",
    "DemoBlock",
    "DemoKit",
    "DemoRun",
    "DemoStep",
    "EvalView",
    "Event",
    "Flag",
    "Implementation",
    "Listing",
    "MethodSpec",
    "Option",
    "StageOutcome",
    "StageRun",
    "StageRunner",
    "StageTools",
    "Table",
]
"""The declaration API in one import; each part lives in its own module (surface.py: the command
line, stage.py: a stage the method runs itself, demo_step.py: its demo step)."""


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
    chat_commands: Mapping[str, ChatCommand] = field(default_factory=dict)
    """{name: ChatCommand}: `/NAME` in `personadlg chat` with its models (codebook: codes)."""
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
