"""Hugging Face backbones: load a pretrained model (hub id or dir), or build one from a config.

Shared by every method. Loading runs no code from a model directory and unpickles nothing unless
the user passed `--trust-remote-code` / `--allow-pickle` (`models/loading.py`), and tokenizers
trained for from-scratch recipes are saved once by the main process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from personadlg.models.loading import from_pretrained

logger = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _quiet_transformers() -> None:
    """No tqdm bars from transformers inside library calls (the CLI draws its own progress)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


_quiet_transformers()


def position_limit(config: Any) -> int | None:
    """The number of positions a transformers config's absolute position embeddings allow (None: no limit)."""
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def is_seq2seq(config: Any) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def load_tokenizer(path: str | Path) -> Any:
    """AutoTokenizer with a pad token (the EOS token when the tokenizer has none, as for GPT-2)."""
    from transformers import AutoTokenizer

    tok = from_pretrained(AutoTokenizer, path, what="tokenizer", weights=False)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def train_or_load_tokenizer(
    texts: Iterable[str] | None,
    *,
    path: Path,
    vocab_size: int,
    min_frequency: int,
    is_main: bool,
    barrier: Any,
    cls_sep: bool = False,
) -> Any:
    """Main process trains a byte-level BPE tokenizer on TEXTS and saves it to PATH; all load it."""
    from personadlg.models.tokenizer import train_tokenizer

    if is_main:
        assert texts is not None
        tok = train_tokenizer(
            texts, vocab_size=vocab_size, min_frequency=min_frequency, cls_sep=cls_sep
        )
        tok.save_pretrained(path)
        logger.info("trained a %d-token BPE tokenizer on the training data", len(tok))
    barrier()
    return load_tokenizer(path)


def has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer_config.json").is_file() or (
        directory / "tokenizer.json"
    ).is_file()


def dialogue_tokenizer(
    tokenizer_cfg: Any,
    ctx: Any,
    *,
    render: Any,
    pretrained: str | None,
) -> Any:
    """A generator's tokenizer: with `tokenizer.train`, trained on the training examples rendered
    as plain prompts (RENDER = the method's RenderOptions) plus their replies; else loaded from
    `tokenizer.path` or the PRETRAINED model (an encoder's tokenizer made a decoder's:
    `tokenizer.causal_tokenizer`). TOKENIZER_CFG is a TokenizerConfig, CTX a BuildContext."""
    if tokenizer_cfg.train and ctx.init_from is not None and has_tokenizer(ctx.init_from):
        logger.info("using the tokenizer of %s (model.init_from)", ctx.init_from)
        return load_tokenizer(ctx.init_from)
    if tokenizer_cfg.train:
        from personadlg.models.render import header_lines, plain_prompt

        texts = (
            (
                plain_prompt(header_lines(ex, render), ex.context) + " " + (ex.reference or "")
                for ex in ctx.train_examples()
            )
            if ctx.is_main
            else None
        )
        return train_or_load_tokenizer(
            texts,
            path=ctx.work_dir / "tokenizer",
            vocab_size=tokenizer_cfg.vocab_size,
            min_frequency=tokenizer_cfg.min_frequency,
            is_main=ctx.is_main,
            barrier=ctx.barrier,
        )
    from personadlg.models.tokenizer import causal_tokenizer

    source = tokenizer_cfg.path or pretrained
    assert source is not None  # the method's config guarantees a model or a tokenizer path
    return causal_tokenizer(load_tokenizer(source))


def _torch_dtype(dtype: str) -> Any:
    import torch

    return "auto" if dtype == "auto" else getattr(torch, _DTYPES[dtype])


def _attn_kwargs(attn_implementation: str) -> dict[str, Any]:
    return {} if attn_implementation == "auto" else {"attn_implementation": attn_implementation}


def knobs(model_cfg: Any) -> dict[str, Any]:
    """`dtype` and `attn_implementation` of a `model:` section, as keyword arguments of
    `load_pretrained` / `build_from_config` / `load_encoder`."""
    return {
        "dtype": getattr(model_cfg, "dtype", "auto"),
        "attn_implementation": getattr(model_cfg, "attn_implementation", "auto"),
    }


def load_encoder(
    name: str | Path,
    *,
    what: str = "encoder",
    dtype: str = "auto",
    attn_implementation: str = "auto",
    **kwargs: Any,
) -> Any:
    """`AutoModel.from_pretrained` an encoder (hub id, dir, or bundled copy) under the load policy
    (a pooler left out with `add_pooling_layer=False` is expected to be unused)."""
    from transformers import AutoModel

    model, _ = load_reporting(
        AutoModel,
        name,
        what=what,
        unused=("pooler.",) if kwargs.get("add_pooling_layer") is False else (),
        dtype=_torch_dtype(dtype),
        **_attn_kwargs(attn_implementation),
        **kwargs,
    )
    return model


def encoder_from_config(
    conf: dict[str, Any], tokenizer: Any, *, dtype: str = "auto", attn_implementation: str = "auto"
) -> Any:
    """A randomly initialised encoder (`AutoModel`) from a config dict ({model_type: bert, ...})."""
    from transformers import AutoConfig, AutoModel

    kwargs = {k: v for k, v in conf.items() if k != "model_type"}
    config = AutoConfig.for_model(
        conf["model_type"], vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **kwargs
    )
    model = AutoModel.from_config(config, **_attn_kwargs(attn_implementation))
    return model.to(_torch_dtype(dtype)) if dtype not in ("auto", "float32") else model


def build_from_config(
    from_config: dict[str, Any],
    tokenizer: Any,
    *,
    arch: str = "auto",
    dtype: str = "auto",
    attn_implementation: str = "auto",
) -> Any:
    """A randomly initialised model from a transformers config dict ({model_type: gpt2, n_layer: 2, ...})."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kwargs = {k: v for k, v in from_config.items() if k != "model_type"}
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = AutoConfig.for_model(
        from_config["model_type"], vocab_size=len(tokenizer), **ids, **kwargs
    )
    if is_seq2seq(config) and getattr(config, "decoder_start_token_id", None) is None:
        config.decoder_start_token_id = tokenizer.pad_token_id
    seq2seq = arch == "seq2seq" or (arch == "auto" and is_seq2seq(config))
    if not seq2seq and is_encoder_only(config):
        config.is_decoder = True  # an encoder type (bert, ...) built as a causal LM
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = cls.from_config(config, **_attn_kwargs(attn_implementation))
    if dtype not in ("auto", "float32"):
        model = model.to(_torch_dtype(dtype))
    logger.info(
        "built %s from config: %.2fM parameters",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


DECODABLE_ENCODERS = frozenset(
    {
        "bert",
        "bert-generation",
        "big_bird",
        "camembert",
        "data2vec-text",
        "electra",
        "ernie",
        "megatron-bert",
        "rembert",
        "roberta",
        "roberta-prelayernorm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xmod",
    }
)
"""Encoder model types that transformers also runs as a causal LM (`*ForCausalLM` / `BertLMHeadModel`
with `is_decoder=True`): causal self-attention, a key/value cache, `generate`."""


def is_encoder_only(config: Any) -> bool:
    """CONFIG is a bidirectional encoder (BERT, MiniLM, RoBERTa, ...) not yet made a decoder."""
    return config.model_type in DECODABLE_ENCODERS and not bool(
        getattr(config, "is_decoder", False)
    )


WARM_START_NEW = ("cls.predictions.", "lm_head.", "generator_lm_head", "generator_predictions.")
"""Parameters a warm-started decoder gets new (its LM head's transform and bias): missing from an
encoder checkpoint by design, so not worth a warning."""


def load_reporting(
    cls: Any,
    name: str | Path,
    *,
    what: str,
    new: tuple[str, ...] = (),
    unused: tuple[str, ...] = (),
    **kwargs: Any,
) -> tuple[Any, list[str]]:
    """`from_pretrained(CLS, NAME)` with transformers' load report replaced by one warning that
    lists only surprises: weights missing from the checkpoint other than those starting with NEW
    (a head this model adds), and checkpoint weights left unused other than those starting with
    UNUSED. Returns (model, the missing weights that were expected to be new)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = from_pretrained(cls, name, what=what, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    missing = sorted(info.get("missing_keys") or [])
    odd = [f"missing {k}" for k in missing if not (new and k.startswith(new))]
    odd += [
        f"unused {k}"
        for k in info.get("unexpected_keys") or []
        if not (unused and k.startswith(unused))
    ]
    odd += [
        f"other shape {k[0] if isinstance(k, tuple) else k}"
        for k in info.get("mismatched_keys") or []
    ]
    if odd:
        logger.warning(
            "%s (%s): %d weights not as in the checkpoint: %s",
            name,
            what,
            len(odd),
            ", ".join(odd[:8]) + (" ..." if len(odd) > 8 else ""),
        )
    return model, [k for k in missing if new and k.startswith(new)]


def _warm_start_decoder(name: str | Path, config: Any, **kwargs: Any) -> Any:
    """A pretrained encoder as a causal decoder (the BERT2BERT warm start, Rothe et al. 2020):
    `is_decoder=True` (causal self-attention, no cross-attention), the LM head's output tied to
    the word embeddings, its transform layer and bias new."""
    from transformers import AutoModelForCausalLM

    config.is_decoder = True
    config.add_cross_attention = False
    config.tie_word_embeddings = True
    model, fresh = load_reporting(
        AutoModelForCausalLM,
        name,
        what="decoder",
        new=WARM_START_NEW,
        unused=("pooler.",),
        config=config,
        **kwargs,
    )
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    logger.info(
        "warm-started a causal decoder from the encoder %s (%s, %.1fM parameters): causal "
        "self-attention, LM head %s the word embeddings, %d new head tensors",
        name,
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
        "tied to" if tied else "NOT tied to",
        len(fresh),
    )
    return model


def load_pretrained(
    name: str | Path,
    *,
    arch: str = "auto",
    dtype: str = "auto",
    attn_implementation: str = "auto",
) -> Any:
    """`from_pretrained` a causal LM or seq2seq model by hub id or local dir (safetensors only,
    unless the user passed --allow-pickle). An encoder-only checkpoint (BERT, MiniLM, ...) asked
    for as a causal LM is warm-started as a decoder (`is_encoder_only`)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = from_pretrained(AutoConfig, name, weights=False)
    seq2seq = arch == "seq2seq" or (arch == "auto" and is_seq2seq(config))
    kwargs = {"dtype": _torch_dtype(dtype), **_attn_kwargs(attn_implementation)}
    if not seq2seq and is_encoder_only(config):
        return _warm_start_decoder(name, config, **kwargs)
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = from_pretrained(cls, name, **kwargs)
    logger.info(
        "loaded %s (%s): %.1fM parameters",
        name,
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


def enable_gradient_checkpointing(module: Any) -> int:
    """Recompute each transformer layer's activations in the backward pass (non-reentrant
    `torch.utils.checkpoint`) in every Hugging Face model inside MODULE; returns how many layers.

    personadlg checkpoints the layers itself rather than through transformers' switch, which drops
    the key/value cache in training (GPT-2 even at the model level) and with it the prefixes cvae
    and codebook condition on. A layer is checkpointed when it is training with gradients and gets
    no cache or only a read-only prefix (`prefix_cache(..., read_only=True)`, whose replay changes
    nothing); a call with a growing cache runs as it is."""
    from transformers import PreTrainedModel
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in module.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        if getattr(layer, "_personadlg_checkpointed", False):
            continue
        layer.forward = _checkpointed(layer, layer.forward)
        setattr(layer, "_personadlg_checkpointed", True)  # noqa: B010
    if not layers:  # an architecture without checkpointable layers of transformers 5
        for sub in module.modules():
            if isinstance(sub, PreTrainedModel) and sub.supports_gradient_checkpointing:
                sub.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
    return len(layers)


def _checkpointed(layer: Any, forward: Any) -> Any:
    import torch
    from torch.utils.checkpoint import checkpoint
    from transformers import Cache

    def growing_cache(values: Any) -> bool:
        return any(isinstance(v, Cache) and not getattr(v, "read_only", False) for v in values)

    def run(*args: Any, **kwargs: Any) -> Any:
        if not (layer.training and torch.is_grad_enabled()) or growing_cache(
            [*args, *kwargs.values()]
        ):
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def check_model_types(model_cfg: Any) -> None:
    """Every `*from_config.model_type` of a `model:` section must be a transformers model type.

    Raises ConfigError naming the field, the value and a did-you-mean (before any work starts)."""
    from dataclasses import fields, is_dataclass

    from transformers import CONFIG_MAPPING

    from personadlg.errors import ConfigError
    from personadlg.registry import did_you_mean

    if not is_dataclass(model_cfg):
        return
    known = list(CONFIG_MAPPING.keys())
    problems = []
    for f in fields(model_cfg):
        value = getattr(model_cfg, f.name)
        if f.name.endswith("from_config") and isinstance(value, dict) and value:
            mt = value.get("model_type")
            if mt not in CONFIG_MAPPING:
                problems.append(
                    f"model.{f.name}.model_type: expected a transformers model type (gpt2, llama, bert, t5, ...), "
                    f"got {mt!r}{did_you_mean(str(mt), known)}"
                )
            else:
                problems += from_config_problems(
                    f"model.{f.name}", value, positions=_positions_needed(model_cfg, f.name)
                )
    if problems:
        raise ConfigError(problems)


def _positions_needed(model_cfg: Any, config_key: str) -> tuple[int, str] | None:
    """The positions a model built from MODEL_CFG's CONFIG_KEY must have, and why: the longest
    training sequence (`model.max_length`), after the codebook decoder's prefix slots (None: not
    known)."""
    max_length = getattr(model_cfg, "max_length", None)
    if not isinstance(max_length, int) or isinstance(max_length, bool):
        return None
    slots = getattr(model_cfg, "slots", None)
    if config_key == "decoder_from_config" and isinstance(slots, int):
        return max_length + slots, f"model.max_length {max_length} + model.slots {slots}"
    if config_key == "from_config":
        return max_length, f"model.max_length {max_length}"
    return None


def from_config_problems(
    where: str, from_config: dict[str, Any], *, positions: tuple[int, str] | None = None
) -> list[str]:
    """What `build_from_config` would fail on (or build unusable), found without building:
    WHERE (e.g. `model.from_config`) with non-positive sizes, a width not divisible by the
    number of heads, or fewer absolute positions than POSITIONS (the number, and where it comes
    from). Sizes are named as the recipe
    writes them (`n_embd` for gpt2, `hidden_size` for bert, ...)."""
    from transformers import AutoConfig

    kwargs = {k: v for k, v in from_config.items() if k != "model_type"}
    try:
        config = AutoConfig.for_model(from_config["model_type"], **kwargs)
    except Exception as err:  # a transformers config's own checks: ValueError, TypeError, ...
        return [f"{where}: {' '.join(str(err).split())}"]
    attribute_map: dict[str, str] = dict(getattr(config, "attribute_map", {}) or {})

    def name_of(standard: str) -> str:
        actual = attribute_map.get(standard, standard)
        for key in kwargs:
            if attribute_map.get(key, key) == actual:
                return key
        return actual

    problems: list[str] = []
    sizes: dict[str, int] = {}
    for standard in (
        "num_hidden_layers",
        "num_attention_heads",
        "hidden_size",
        "max_position_embeddings",
    ):
        actual = attribute_map.get(standard, standard)
        if not hasattr(config, actual):
            continue
        value = getattr(config, actual)
        if value is None and standard == "max_position_embeddings":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(
                f"{where}.{name_of(standard)}: expected a positive integer, got {value!r}"
            )
        else:
            sizes[standard] = value
    heads, width = sizes.get("num_attention_heads"), sizes.get("hidden_size")
    if heads and width and width % heads:
        problems.append(
            f"{where}.{name_of('hidden_size')}: expected a multiple of "
            f"{name_of('num_attention_heads')} ({heads}), got {width}"
        )
    limit = sizes.get("max_position_embeddings")
    if limit is not None and positions is not None and limit < positions[0]:
        problems.append(
            f"{where}.{name_of('max_position_embeddings')}: expected at least {positions[0]} "
            f"positions (the longest training sequence: {positions[1]}), got {limit}"
        )
    return problems
