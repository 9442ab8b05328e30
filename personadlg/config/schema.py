"""The shared sections of a training recipe (`data:`, `train:`, `generate:`), the fields every
method's `model:` section has, and the resolved recipe, RunConfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from personadlg.config.coercion import check
from personadlg.config.dump import to_dict


@dataclass
class DataConfig:
    """`data:` section: where the dialogues are and how to read them."""

    train: str | None = field(
        default=None,
        metadata={
            "help": "training dialogues (any supported format); 'demo' = the bundled demo corpus"
        },
    )
    valid: str | None = field(
        default=None,
        metadata={"help": "validation dialogues, evaluated every train.eval_every steps"},
    )
    test: str | None = field(
        default=None, metadata={"help": "test dialogues (used by generate / eval defaults)"}
    )
    format: str = field(
        default="auto", metadata={"help": "input format of the files (auto-detected by default)"}
    )
    attributes: dict[str, list[str]] = field(
        default_factory=dict, metadata={"help": "declared attribute space: attribute -> aspects"}
    )
    turns: Literal["all", "last"] = field(
        default="all", metadata={"help": "train on every assistant message or only the last one"}
    )
    max_context_turns: int = field(
        default=0, metadata={"help": "keep only the last N context messages (0 = all)"}
    )
    valid_fraction: float = field(
        default=0.0,
        metadata={
            "help": "hold out this share of data.train for validation when data.valid is not set"
        },
    )
    attribute: str | None = field(
        default=None,
        metadata={"help": "the attribute an attribute classifier learns (method classifier)"},
    )

    def __post_init__(self) -> None:
        problems = []
        if self.max_context_turns < 0:
            problems.append(f"data.max_context_turns must be >= 0, got {self.max_context_turns}")
        if not 0 <= self.valid_fraction < 1:
            problems.append(f"data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        for attr, aspects in self.attributes.items():
            if len(aspects) < 2 or len(set(aspects)) != len(aspects):
                problems.append(
                    f"data.attributes.{attr}: expected at least two distinct aspects, got {aspects}"
                )
        check(problems)


@dataclass
class TrainConfig:
    """`train:` section, shared by every method."""

    output_dir: str = field(
        default="runs/run", metadata={"help": "run directory: step-NNNNNN/, final/, metrics.jsonl"}
    )
    epochs: float = field(
        default=1.0, metadata={"help": "passes over the training data (ignored when max_steps > 0)"}
    )
    max_steps: int = field(default=0, metadata={"help": "optimizer steps to run (0 = use epochs)"})
    batch_size: int = field(default=8, metadata={"help": "examples per device per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=5e-5, metadata={"help": "peak learning rate (AdamW)"})
    param_lr: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "peak learning rates of the parameters whose names match a glob, e.g. {'heads.*': 2e-3} for a method's new parts on a pretrained model; the first matching pattern wins, the rest use train.lr; a pattern that matches no parameter is an error"
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    scheduler: Literal["linear", "cosine", "constant"] = field(
        default="linear", metadata={"help": "learning-rate schedule after warm-up"}
    )
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "fraction of steps for linear warm-up"}
    )
    warmup_steps: int = field(
        default=0, metadata={"help": "warm-up steps (overrides warmup_ratio when > 0)"}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = field(
        default="no", metadata={"help": "mixed precision; 'auto' = bf16 where the device has it"}
    )
    seed: int = field(default=0, metadata={"help": "seed for weights, data order, dropout"})
    log_every: int = field(
        default=10, metadata={"help": "optimizer steps between metrics.jsonl lines"}
    )
    eval_every: int = field(
        default=0, metadata={"help": "steps between validation passes (0 = at the end only)"}
    )
    save_every: int = field(
        default=0,
        metadata={"help": "steps between checkpoints (0 = only the timed ones and final)"},
    )
    save_every_minutes: float = field(
        default=15.0,
        metadata={
            "help": "also save a checkpoint when this many minutes passed since the last one, so a "
            "killed run loses at most that much (0 = off)"
        },
    )
    keep_last: int = field(
        default=2, metadata={"help": "step checkpoints to keep, >= 1 (final/ is always kept)"}
    )
    early_stopping_patience: int = field(
        default=0, metadata={"help": "stop after N evaluations without improvement (0 = off)"}
    )
    tensorboard: bool = field(
        default=False, metadata={"help": "also log to TensorBoard under output_dir/tb"}
    )

    def __post_init__(self) -> None:
        problems = []
        if self.batch_size < 1:
            problems.append(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.grad_accum < 1:
            problems.append(f"train.grad_accum must be >= 1, got {self.grad_accum}")
        if self.lr <= 0:
            problems.append(f"train.lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("max_steps", "epochs"):
            if getattr(self, name) < 0:
                problems.append(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps == 0 and self.epochs == 0:
            problems.append("set train.max_steps or train.epochs")
        if not 0 <= self.seed < 2**32:
            problems.append(f"train.seed must be in [0, 2**32), got {self.seed}")
        if self.keep_last < 1:
            problems.append(
                f"train.keep_last must be >= 1 (0 would delete every step checkpoint), got {self.keep_last}"
            )
        for name in ("weight_decay", "max_grad_norm", "save_every_minutes"):
            if getattr(self, name) < 0:
                problems.append(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for name in (
            "log_every",
            "eval_every",
            "save_every",
            "keep_last",
            "warmup_steps",
            "early_stopping_patience",
        ):
            if getattr(self, name) < 0:
                problems.append(f"train.{name} must be >= 0, got {getattr(self, name)}")
        check(problems)


@dataclass
class GenerateConfig:
    """`generate:` section: decoding defaults for `personadlg generate` and `chat`."""

    max_new_tokens: int = field(default=64, metadata={"help": "longest response in tokens"})
    min_new_tokens: int = field(
        default=0, metadata={"help": "shortest response in tokens (end token suppressed before)"}
    )
    do_sample: bool = field(
        default=False, metadata={"help": "sample instead of greedy / beam search"}
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    top_k: int = field(default=0, metadata={"help": "top-k sampling (0 = off)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling (1.0 = off)"})
    num_beams: int = field(default=1, metadata={"help": "beam search width"})
    repetition_penalty: float = field(
        default=1.0, metadata={"help": "repetition penalty (1.0 = off)"}
    )
    no_repeat_ngram_size: int = field(
        default=0, metadata={"help": "forbid repeating n-grams of this size (0 = off)"}
    )
    batch_size: int = field(default=16, metadata={"help": "examples per generation batch"})
    seed: int = field(
        default=0, metadata={"help": "base seed; each example gets its own derived seed"}
    )
    max_loaded_adapters: int = field(
        default=32,
        metadata={
            "help": "lora: user adapters kept in memory at once (least recently used unloaded first)"
        },
    )

    def __post_init__(self) -> None:
        problems = []
        if self.max_loaded_adapters < 1:
            problems.append(
                f"generate.max_loaded_adapters must be >= 1, got {self.max_loaded_adapters}"
            )
        if self.max_new_tokens < 1:
            problems.append(f"generate.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            problems.append(
                f"generate.min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}"
            )
        if self.temperature <= 0:
            problems.append(f"generate.temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"generate.top_p must be in (0, 1], got {self.top_p}")
        if self.num_beams < 1 or self.batch_size < 1:
            problems.append("generate.num_beams and generate.batch_size must be >= 1")
        if self.top_k < 0:
            problems.append(f"generate.top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            problems.append(
                f"generate.repetition_penalty must be > 0 (1.0 = off), got {self.repetition_penalty}"
            )
        if self.no_repeat_ngram_size < 0:
            problems.append(
                f"generate.no_repeat_ngram_size must be >= 0 (0 = off), got {self.no_repeat_ngram_size}"
            )
        if not 0 <= self.seed < 2**32:
            problems.append(f"generate.seed must be in [0, 2**32), got {self.seed}")
        check(problems)


@dataclass
class ModelConfig:
    """Fields every method's `model:` section has (method configs derive from this)."""

    init_from: str | None = field(
        default=None,
        metadata={
            "help": "start from another run's weights: a run dir (its final/) or a checkpoint dir; "
            "parameters are matched by name (any method whose modules match)"
        },
    )
    init_strict: bool = field(
        default=True,
        metadata={
            "help": "with init_from: missing or unexpected parameter names are an error (false: listed and skipped)"
        },
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata={
            "help": "weights dtype of the Hugging Face models (auto: as stored; from-scratch models float32); mixed precision is train.mixed_precision"
        },
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = field(
        default="auto",
        metadata={
            "help": "attention kernel of the Hugging Face models (auto: transformers' choice, sdpa where supported)"
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "recompute activations in the backward pass (less memory, ~30% more compute); key/value prefixes (cvae, codebook) are kept"
        },
    )


@dataclass
class RunConfig:
    """A resolved training recipe."""

    method: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    source: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    """Changes made when a run was resumed: [{step, changed: {field: {from, to}}}] (config.yaml)."""
    lineage: dict[str, Any] = field(default_factory=dict)
    """Where the weights started (`model.init_from`): the source checkpoint and its weights' sha256."""

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe, sections in recipe order (what `config.yaml` in a checkpoint holds)."""
        out = {
            "method": self.method,
            **{k: to_dict(getattr(self, k)) for k in ("data", "model", "train", "generate")},
        }
        if self.history:
            out["history"] = to_dict(self.history)
        if self.lineage:
            out["lineage"] = to_dict(self.lineage)
        return out


RECIPE_SECTIONS = ("method", "data", "model", "train", "generate", "history", "lineage")
