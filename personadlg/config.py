"""Recipes: YAML → typed dataclasses, with dotted `KEY=VALUE` overrides and strict validation.

A recipe has `method`, then sections `data`, `model`, `train` and `generate`, each mapping onto a
dataclass (`model` onto the method's own config class). Values are coerced to the field type
(PyYAML reads `1e-3` as a string), unknown keys are errors that list the valid keys with a
did-you-mean, and all problems are collected and reported at once.

Example:
    >>> cfg = load_recipe("finetune/tiny", ["train.lr=3e-4", "train.max_steps=20"])
    >>> cfg.train.lr
    0.0003
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from personadlg.errors import ConfigError
from personadlg.registry import METHODS, did_you_mean

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Generic machinery: build any dataclass from a mapping, coercing values
# ---------------------------------------------------------------------------------------------

_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n"}


class _Problem(Exception):
    pass


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, Sequence, tuple):
        args = get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if is_dataclass(tp):
        return "a mapping"
    return {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        Path: "a path",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert VALUE to type TP or raise ConfigError naming PATH."""
    problems: list[str] = []
    out = _coerce(value, tp, path, problems)
    if problems:
        raise ConfigError(problems)
    return out


def _coerce(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            problems.append(f"{path}: expected {_type_name(tp)}, got null")
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1 and is_dataclass(inner[0]) and isinstance(value, dict):
            return _coerce(value, inner[0], path, problems)  # its own, more precise, problems
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = _coerce(value, arg, path, trial)
            if not trial:
                return out
        problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return None
    if origin is Literal:
        allowed = get_args(tp)
        for a in allowed:
            if value == a or (
                isinstance(a, str) and not isinstance(value, str) and str(value) == a
            ):
                return a
        problems.append(
            f"{path}: expected {_type_name(tp)}, got {value!r}{did_you_mean(str(value), [str(a) for a in allowed])}"
        )
        return None
    if is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, path, problems)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        (item_tp,) = get_args(tp)[:1] or (Any,)
        if isinstance(value, str) and item_tp in (str, Any):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
            return None
        out_list = [_coerce(v, item_tp, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(out_list) if origin is tuple or tp is tuple else out_list
    if origin in (dict, Mapping) or tp is dict:
        args = get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected a mapping, got {value!r}")
            return None
        return {str(k): _coerce(v, val_tp, f"{path}.{k}", problems) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        problems.append(f"{path}: expected true or false, got {value!r}")
        return None
    if tp is int:
        if isinstance(value, bool):
            problems.append(f"{path}: expected an integer, got {value!r}")
            return None
        if isinstance(value, int):
            return value
        try:
            f = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            f = None
        if f is not None and math.isfinite(f) and f.is_integer():
            return int(f)
        problems.append(f"{path}: expected an integer, got {value!r}")
        return None
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None:
            problems.append(f"{path}: expected a number, got {value!r}")
            return None
        if not math.isfinite(number):
            problems.append(f"{path}: expected a finite number, got {value!r}")
            return None
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        problems.append(f"{path}: expected a string, got {value!r}")
        return None
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        problems.append(f"{path}: expected a path, got {value!r}")
        return None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            problems.append(
                f"{path}: expected one of {', '.join(str(m.value) for m in tp)}, got {value!r}"
            )
            return None
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[T], data: Any, path: str, problems: list[str]) -> T:
    if data is None:
        data = {}
    if is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        problems.append(f"{path or 'recipe'}: expected a mapping, got {data!r}")
        return None  # type: ignore[return-value]
    hints = _hints(cls)
    names = [f.name for f in fields(cls) if f.init]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        sub = f"{path}.{key}" if path else key
        if key not in names:
            problems.append(
                f"unknown key '{sub}'{did_you_mean(key, names)}; valid keys{' under ' + repr(path) if path else ''}: {', '.join(names)}"
            )
            continue
        kwargs[key] = _coerce(value, hints[key], sub, problems)
    for f in fields(cls):  # type: ignore[arg-type]
        if (
            f.init
            and f.name not in kwargs
            and f.default is MISSING
            and f.default_factory is MISSING
        ):
            problems.append(f"missing required key '{path + '.' if path else ''}{f.name}'")
    if problems:
        return None  # type: ignore[return-value]
    try:
        return cls(**kwargs)
    except ConfigError as err:
        problems.extend(err.problems)
    except (ValueError, TypeError) as err:
        problems.append(f"{path or cls.__name__}: {err}")
    return None  # type: ignore[return-value]


def build_config(
    cls: type[T], data: Mapping[str, Any] | None, *, path: str = "", source: str | None = None
) -> T:
    """Build dataclass CLS from DATA (a mapping), coercing types; raise ConfigError listing every problem."""
    problems: list[str] = []
    out = _build(cls, data or {}, path, problems)
    if problems:
        raise ConfigError(problems, source=source)
    return out


def check(problems: list[str]) -> None:
    """Raise one ConfigError for a list of cross-field problems (call at the end of `__post_init__`)."""
    if problems:
        raise ConfigError(problems)


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) → plain YAML/JSON-safe data."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def field_help(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for each field of dataclass CLS: for `ls methods --fields`."""
    hints = _hints(cls)
    out = []
    for f in fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = to_dict(f.default_factory())
        else:
            default = "(required)"
        out.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return out


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            hash(key)
        except TypeError:
            continue
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {seen[key] + 1}); each key may appear once",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _no_duplicates,  # type: ignore[arg-type]
)


def load_yaml_text(text: str) -> Any:
    """`yaml.safe_load` that refuses duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-5` → (["train", "lr"], "3e-5"). Values go through YAML, so `[a, b]`, `true`, `null` work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.lr=3e-5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected a dotted key such as train.lr")
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except yaml.constructor.ConstructorError as err:
        raise ConfigError(f"override {text!r}: {err.problem}") from None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted KEY=VALUE overrides to a nested dict (in place) and return it."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(
                    f"override {text!r}: '{'.'.join(keys[: i + 1])}' is not a section"
                )
            node = nxt
        node[keys[-1]] = value
    return data


# ---------------------------------------------------------------------------------------------
# The shared sections of a training recipe
# ---------------------------------------------------------------------------------------------


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
        if self.max_steps < 0 or self.epochs < 0:
            problems.append("train.max_steps and train.epochs must be >= 0")
        if self.max_steps == 0 and self.epochs == 0:
            problems.append("set train.max_steps or train.epochs")
        if not 0 <= self.seed < 2**32:
            problems.append(f"train.seed must be in [0, 2**32), got {self.seed}")
        if self.keep_last < 1:
            problems.append(
                f"train.keep_last must be >= 1 (0 would delete every step checkpoint), got {self.keep_last}"
            )
        if self.weight_decay < 0 or self.max_grad_norm < 0 or self.save_every_minutes < 0:
            problems.append(
                "train.weight_decay, train.max_grad_norm and train.save_every_minutes must be >= 0"
            )
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


def method_config_class(method: str) -> type:
    """The dataclass for the `model:` section of METHOD (imports only its light config module)."""
    entry = METHODS.entry(method)
    target = entry.meta.get("config")
    if target is None:
        raise ConfigError(f"method '{method}' has no config class registered")
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise ConfigError(
            f"method '{method}' is not available in this version of personadlg"
        ) from None
    return getattr(module, attr)


# ---------------------------------------------------------------------------------------------
# Finding and loading recipes
# ---------------------------------------------------------------------------------------------


def recipes_dir() -> Path:
    """Bundled recipes: `personadlg/_recipes` in a wheel, `recipes/` in a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_recipes", here.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    return here.parent / "recipes"


def bundled_recipes() -> list[str]:
    """Names of bundled recipes, e.g. `finetune/tiny`."""
    root = recipes_dir()
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def recipe_summary(path: Path) -> str:
    """The first comment line of a recipe: what it reproduces."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def resolve_recipe(recipe: str | Path) -> Path:
    """A YAML path, or a bundled recipe name (`finetune/tiny`, `finetune/tiny.yaml`)."""
    path = Path(recipe)
    if path.is_file():
        return path
    name = str(recipe).removesuffix(".yaml").removesuffix(".yml")
    name = name.removeprefix("recipes/")
    candidate = recipes_dir() / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    names = bundled_recipes()
    raise ConfigError(
        f"recipe {str(recipe)!r} is neither a file nor a bundled recipe{did_you_mean(name, names)}; "
        f"bundled: {', '.join(names) or 'none'}"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = load_yaml_text(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_recipe(recipe: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a training recipe, apply dotted overrides, coerce and validate everything.

    Args:
        recipe: a YAML path or a bundled recipe name such as `finetune/tiny`.
        overrides: `KEY=VALUE` strings with dotted keys; they win over the file.

    Raises:
        ConfigError: listing every unknown key, bad type and failed cross-field check.
    """
    path = resolve_recipe(recipe)
    data = apply_overrides(read_yaml(path), overrides)
    return build_run_config(data, source=str(path))


def build_run_config(data: Mapping[str, Any], *, source: str | None = None) -> RunConfig:
    """Build a RunConfig from an already-parsed recipe mapping."""
    problems: list[str] = []
    for key in data:
        if key not in RECIPE_SECTIONS:
            problems.append(
                f"unknown key '{key}'{did_you_mean(str(key), RECIPE_SECTIONS)}; valid keys: {', '.join(RECIPE_SECTIONS)}"
            )
    method = data.get("method")
    if not isinstance(method, str) or not method:
        problems.append(f"missing required key 'method' (one of: {', '.join(METHODS.names())})")
        raise ConfigError(problems, source=source)
    if method not in METHODS:
        problems.append(
            f"method: unknown method '{method}'{did_you_mean(method, METHODS.names())}; available: {', '.join(METHODS.names())}"
        )
        raise ConfigError(problems, source=source)
    if METHODS.entry(method).meta.get("trained") is False:
        raise ConfigError(
            f"method {method} is not trained: it is a recipe for `personadlg generate` (e.g. "
            f"`personadlg generate {source or 'RECIPE'} --input test.jsonl --out gen.jsonl`); "
            f"check it with `personadlg validate`",
            source=source,
        )
    model_cls = method_config_class(method)
    sections: dict[str, Any] = {}
    for name, cls in (
        ("data", DataConfig),
        ("model", model_cls),
        ("train", TrainConfig),
        ("generate", GenerateConfig),
    ):
        sections[name] = _build(cls, data.get(name) or {}, name, problems)
    history = data.get("history") or []
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        problems.append("history: expected a list of mappings (written by `train --resume`)")
    lineage = data.get("lineage") or {}
    if not isinstance(lineage, dict):
        problems.append("lineage: expected a mapping (written by `train` with model.init_from)")
    if problems:
        raise ConfigError(problems, source=source)
    return RunConfig(
        method=method, source=source, history=list(history), lineage=dict(lineage), **sections
    )


def dump_yaml(obj: Any) -> str:
    """YAML text for a config (dataclass or mapping), keys in declaration order."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, allow_unicode=True)


def replace(cfg: T, **changes: Any) -> T:
    """dataclasses.replace that re-runs validation."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
