"""What every method provides: a spec registered by name, and a model object the trainer drives.

The trainer never branches on the method. It asks the method to build or load a model, to encode
examples into features, to collate features into a batch, and to compute loss terms in
`module.forward(**batch)`; `generate` and `save` serve `personadlg generate`, `chat` and
checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from personadlg.config import GenerateConfig, RunConfig
    from personadlg.data.schema import Example


@dataclass
class BuildContext:
    """What `build` may need besides the config: the training examples and the process layout.

    Work that must happen once (training a tokenizer) runs on the main process, which saves it
    under `work_dir`; after `barrier()` every process loads the result, so all are identical.
    """

    train_examples: Callable[[], Iterable[Any]]
    work_dir: Path
    is_main: bool = True
    barrier: Callable[[], None] = field(default=lambda: None)


@dataclass
class TokenView:
    """One token of an encoded training example, for `train --debug-tokens`."""

    token: str
    id: int
    trained: bool
    part: str = ""


class PersonaModel(Protocol):
    """A trainable, savable, generating model of one method."""

    name: str
    tokenizer: Any

    @property
    def module(self) -> torch.nn.Module:
        """The parameters the optimizer trains; `module(**batch)` returns a dict of loss terms, `loss` being the total."""

    def encode(self, example: Any) -> dict[str, Any] | None:
        """Training features of one example (None to skip it, e.g. an empty reference)."""

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad features into a batch for `module.forward`."""

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(tokens processed, target tokens) in a batch, for tokens/s and loss weighting."""

    def generate(
        self,
        examples: Sequence[Example],
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
    ) -> list[str]:
        """One response per example (TARGETS: attribute targets per example, or None)."""

    def explain(self, example: Any) -> list[TokenView]:
        """The example's training tokens with their labels (masked vs trained)."""

    def save(self, directory: Path) -> None:
        """Weights (safetensors), tokenizer and method files into DIRECTORY."""


class ScoresValidation(Protocol):
    """Optional: extra validation metrics. `module(**batch)` may return non-loss outputs under keys
    starting with "_" (e.g. "_logits"); `eval_stats` turns a batch and those outputs into
    sum-reducible tensors, `eval_metrics` the summed tensors into numbers for the valid record."""

    def eval_stats(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]: ...

    def eval_metrics(self, stats: dict[str, torch.Tensor]) -> dict[str, float]: ...


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its config class and how to build a fresh model or load a saved one."""

    name: str
    config_cls: type
    build: Callable[[RunConfig, BuildContext], PersonaModel]
    load: Callable[[Path, RunConfig], PersonaModel]
    description: str = ""
    supports: tuple[str, ...] = ()
    """Conditioning it uses at generation: 'persona', 'attributes', 'profile', 'user'."""
    read: Callable[[Path, Any], Iterable[Any]] | None = None
    """Training items of a data file (default: the examples of a dialogue file)."""
