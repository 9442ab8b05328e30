"""The method interface: a spec registered by name, and a model object the trainer drives.

The trainer never branches on the method. It asks the method to build or load a model, to encode
examples into features, to collate features into a batch, and to compute loss terms in
`module.forward(**batch)`; `generate` and `save` serve `personadlg generate`, `chat` and
checkpoints.

Required members are declared by `PersonaModel`. Everything else a generic part of personadlg
may use is an *optional hook*, declared below as a small protocol and listed in `OPTIONAL_HOOKS`;
callers look one up with `hook(model, NAME)`, which refuses undeclared names, so the interface is
exactly what this file says. `tests/models/test_interface.py` checks every registered method
against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from personadlg.config import GenerateConfig
    from personadlg.data.schema import Example
    from personadlg.models.render import RenderOptions


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
    init_from: Path | None = None
    """The checkpoint whose weights the run starts from (`model.init_from`): a recipe that would
    train a tokenizer takes this checkpoint's instead, so the weights and the vocabulary agree."""


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
    ) -> list[str] | Generations:
        """One response per example (TARGETS: attribute targets per example, or None; SEEDS: one
        per example, to seed its own sampling), or Generations with what to record beside them."""

    def explain(self, example: Any) -> list[TokenView]:
        """The example's training tokens with their labels (masked vs trained)."""

    def save(self, directory: Path) -> None:
        """Weights (safetensors), tokenizer and method files into DIRECTORY."""


GROUP = "group"
"""A feature `encode` may add: `[group id]` (an int). When the features carry it, every global batch
holds examples of one group only (cvae: attribute-homogeneous batches, MIRACLE's sampler)."""


@dataclass
class Generations:
    """What `generate` may return instead of a plain list of texts: the texts plus what to record.

    SHARED goes into the `decoding` of every record of the call (cvae: the ODE settings and its
    NFE); RECORDS, one dict per example (or None), into that record's `decoding` (lora: which
    adapter served it, a fallback)."""

    texts: list[str]
    shared: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] | None = None


# -- optional hooks ------------------------------------------------------------------------------


class StepHook(Protocol):
    def on_step(self, step: int) -> None:
        """Called by the trainer before every optimizer step, with the number of steps done so
        far (0 for the first), on every process (cvae: the cyclic β schedule)."""


class AfterTraining(Protocol):
    def after_training(self, run_dir: Path, features: Sequence[dict[str, Any]]) -> Path | None:
        """Called once on the main process after the final checkpoint, with the run directory and
        the validation features (else up to 1,000 training ones); returns a figure it drew, if
        any (cvae: latent_space.png). Failures are logged, never fatal."""


class PreparesRun(Protocol):
    def prepare(
        self,
        features: Sequence[dict[str, Any]],
        *,
        work_dir: Path,
        is_main: bool,
        broadcast: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        """Called once by the trainer on every process of a fresh (not resumed) run, after the
        features are encoded and before the first step, with the training features. Work that
        must happen once runs where IS_MAIN and is shared with `broadcast(tensor)` (the main
        process's tensor, on every process); files go into WORK_DIR, the run's output dir
        (codebook: the codebook initialisation of stage `init`, init_report.json)."""


class ScoresValidation(Protocol):
    """Extra validation metrics. `module(**batch)` may return non-loss outputs under keys starting
    with "_" (e.g. "_logits", (B, C)); `eval_stats` turns a batch and those outputs into
    sum-reducible tensors (summed over batches and processes), `eval_metrics` the sums into
    numbers for the validation record."""

    def eval_stats(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]: ...

    def eval_metrics(self, stats: dict[str, torch.Tensor]) -> dict[str, float]: ...


class ReportsPerplexity(Protocol):
    perplexity: bool
    """False when the validation loss is not a token NLL (classifiers): no `ppl` is logged."""


class Configurable(Protocol):
    def configure(self, cfg: Any) -> None:
        """Take generation-time settings from CFG (the method's `model:` config with the user's
        `model.*` overrides applied, or the checkpoint's own config to reset them); raise
        UsageError for fields training fixed."""


class ChunkedGeneration(Protocol):
    def chunk_size(self, decoding: GenerateConfig) -> int:
        """(example, target) pairs `generate` must receive together (cvae: one ODE solve), so that
        resumed and uninterrupted runs solve the same chunks."""


class BoundedDecoding(Protocol):
    def max_new_tokens_limit(self) -> int | None:
        """The most new tokens the model's positions allow (None: unbounded); `generate` and
        `chat` refuse a larger `max_new_tokens` before any output is written."""


class TimedGeneration(Protocol):
    timings: dict[str, float]
    """Cumulative seconds per generation stage (cvae: encode / ode / decode), for summaries."""


class KnowsUsers(Protocol):
    def known_user(self, user_id: str) -> dict[str, Any] | None:
        """What the model holds for USER_ID (lora: the adapter's index entry, with the user's
        profile), or None when it has nothing for that user (`chat /user`)."""

    def known_users(self) -> list[str]:
        """Every user id the model holds something for (lora: the users of its adapters' index),
        sorted; `serve` lists them in `/v1/models`."""


@dataclass(frozen=True)
class PromptReading:
    """How a checkpoint reads a chat conversation (`serve`, `chat`), as its method declares it."""

    supports: tuple[str, ...]
    """The conditioning this checkpoint uses: its method's, narrowed to what its recipe enables."""
    render: RenderOptions
    """How an example becomes the prompt text whose tokens are counted."""
    prompt_cap: int | None = None
    """The recipe's own cap on prompt tokens (finetune, lora: `model.max_length`), named CAP_NAME."""
    cap_name: str = ""
    context_budget: int | None = None
    """Context tokens the method reads when its positions do not bound them (cvae:
    `model.max_context_tokens`, codebook: `model.max_length`)."""
    decoder_reads_prompt: bool = True
    """The decoder's positions hold the prompt (False: seq2seq, cvae's decoder reading z only)."""
    reply_fields: tuple[str, ...] = ()
    """Keys of a generation's record (`Generations.records`) that a chat reply also shows at its
    top level (lora: `adapter`, `adapter_fallback`)."""


class ReadsPrompts(Protocol):
    def prompt_reading(self, supports: tuple[str, ...]) -> PromptReading:
        """How this model reads a chat prompt, given its method's declared SUPPORTS (without the
        hook: the method's supports and the plain template)."""


class ServesMore(Protocol):
    def served_fingerprint(self) -> str:
        """A fingerprint of what the model serves beyond its checkpoint's weights (lora: its
        adapters' index), or ''. Generation sidecars record it, so appending to an output made
        with other adapters is refused."""


OPTIONAL_HOOKS: dict[str, type] = {
    "on_step": StepHook,
    "after_training": AfterTraining,
    "prepare": PreparesRun,
    "eval_stats": ScoresValidation,
    "eval_metrics": ScoresValidation,
    "perplexity": ReportsPerplexity,
    "configure": Configurable,
    "chunk_size": ChunkedGeneration,
    "max_new_tokens_limit": BoundedDecoding,
    "timings": TimedGeneration,
    "known_user": KnowsUsers,
    "known_users": KnowsUsers,
    "prompt_reading": ReadsPrompts,
    "served_fingerprint": ServesMore,
}
REQUIRED_MEMBERS = (
    "name",
    "tokenizer",
    "module",
    "encode",
    "collate",
    "count_tokens",
    "generate",
    "explain",
    "save",
)


def hook(model: Any, name: str) -> Any:
    """MODEL's optional hook NAME, or None when the method does not provide it.

    Raises KeyError for a name that is not declared here: nothing outside models/ may depend on
    an undeclared member."""
    if name not in OPTIONAL_HOOKS:
        raise KeyError(f"{name!r} is not an optional hook declared in personadlg/models/base.py")
    return getattr(model, name, None)


def as_generations(result: list[str] | Generations) -> Generations:
    """`generate`'s result as Generations (a plain list of texts is accepted)."""
    return result if isinstance(result, Generations) else Generations(list(result))
