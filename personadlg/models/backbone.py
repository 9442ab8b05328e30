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
    `tokenizer.path` or the PRETRAINED model. TOKENIZER_CFG is a TokenizerConfig, CTX a BuildContext."""
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
    source = tokenizer_cfg.path or pretrained
    assert source is not None  # the method's config guarantees a model or a tokenizer path
    return load_tokenizer(source)


def build_from_config(from_config: dict[str, Any], tokenizer: Any, *, arch: str = "auto") -> Any:
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
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_config(config)
    logger.info(
        "built %s from config: %.2fM parameters",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


def load_pretrained(name: str | Path, *, arch: str = "auto", dtype: str = "auto") -> Any:
    """`from_pretrained` a causal LM or seq2seq model by hub id or local dir (safetensors only,
    unless the user passed --allow-pickle)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    config = from_pretrained(AutoConfig, name, weights=False)
    seq2seq = arch == "seq2seq" or (arch == "auto" and is_seq2seq(config))
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, _DTYPES[dtype])
    model = from_pretrained(cls, name, dtype=torch_dtype)
    logger.info(
        "loaded %s (%s): %.1fM parameters",
        name,
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


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
    if problems:
        raise ConfigError(problems)
