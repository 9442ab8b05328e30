"""A key/value prefix of P positions in every layer of a causal LM, for training and generation.

Methods that condition a decoder on vectors (cvae: z as P = 1 position; codebook: M persona codes
as P = M) give every layer P extra key/value positions through the model's own cache (a
transformers `Cache`, never legacy tuples). One rule places the tokens after them, the same in
training and in generation: a token's position id is the number of attended positions before it,
prefix included (`cumsum(attention_mask) - 1`), which is also what `generate` computes.

    keys = values = proj(z).view(B, layers, kv_heads, P, head_dim)
    cache = prefix_cache(keys, values, lm.config, read_only=True)
    out = lm(**teacher_forced_inputs(ids, mask, P), **cache_kwargs(lm, cache))         # training
    lm.generate(**generation_inputs(ids, mask, P, pad), **cache_kwargs(lm, cache), ...)  # decoding
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable
from functools import lru_cache
from typing import Any

import torch


def cache_geometry(config: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a causal LM config (GQA / MQA models included)."""
    layers = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    hidden = int(config.hidden_size)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    return layers, kv, head_dim


def new_cache(config: Any) -> Any:
    """An empty `DynamicCache` for a model of CONFIG."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # transformers 4.x
        return DynamicCache()


@lru_cache(maxsize=8)
def _prefix_only(base: Hashable) -> type:
    """BASE (a DynamicCache class) whose `update` returns the stored prefix followed by the new
    states without storing them."""

    class PrefixOnlyCache(base):  # type: ignore[valid-type,misc]
        read_only = True  # a layer's replay under gradient checkpointing changes nothing

        def update(
            self,
            key_states: torch.Tensor,
            value_states: torch.Tensor,
            layer_idx: int,
            *args: Any,
            **kwargs: Any,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            layer = self.layers[layer_idx]
            return (
                torch.cat([layer.keys, key_states], dim=-2),
                torch.cat([layer.values, value_states], dim=-2),
            )

    return PrefixOnlyCache


def prefix_cache(
    keys: torch.Tensor, values: torch.Tensor, config: Any, *, read_only: bool = False
) -> Any:
    """A cache holding a prefix of P positions in every layer.

    KEYS, VALUES: (B, layers, kv_heads, P, head_dim), as `cache_geometry(config)` says.
    READ_ONLY: for one teacher-forced forward (training): the tokens' own keys and values are not
    stored (required with gradient checkpointing, which replays each layer); generation needs the
    default, a cache that grows."""
    layers, kv, head_dim = cache_geometry(config)
    if (
        keys.shape != values.shape
        or keys.dim() != 5
        or keys.shape[1:3] != (layers, kv)
        or keys.shape[4] != head_dim
    ):
        raise ValueError(
            f"prefix keys/values must be (B, {layers}, {kv}, P, {head_dim}), got {tuple(keys.shape)} / {tuple(values.shape)}"
        )
    cache = new_cache(config)
    for layer in range(layers):
        cache.update(keys[:, layer], values[:, layer], layer)
    if read_only:
        cache.__class__ = _prefix_only(type(cache))  # type: ignore[arg-type]
    return cache


def positions_after_prefix(full_mask: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """Position ids (B, T) of the tokens after a P-position prefix: the number of attended
    positions before each (FULL_MASK (B, P + T) covers the prefix and the tokens)."""
    return (full_mask.long().cumsum(-1) - 1).clamp(min=0)[:, prefix_len:]


def teacher_forced_inputs(
    ids: torch.Tensor, mask: torch.Tensor, prefix_len: int
) -> dict[str, torch.Tensor]:
    """Forward inputs for tokens IDS / MASK (B, T) after a cached P-position prefix."""
    full = torch.cat([mask.new_ones(mask.shape[0], prefix_len), mask], dim=1)
    return {
        "input_ids": ids,
        "attention_mask": full,
        "position_ids": positions_after_prefix(full, prefix_len),
    }


def generation_inputs(
    ids: torch.Tensor, mask: torch.Tensor, prefix_len: int, pad_token_id: int
) -> dict[str, torch.Tensor]:
    """`generate` inputs for a prompt IDS / MASK (B, T) after a cached P-position prefix: P
    placeholder columns stand for the cached positions (generate feeds only the uncached ones)."""
    b = ids.shape[0]
    return {
        "input_ids": torch.cat([ids.new_full((b, prefix_len), pad_token_id), ids], dim=1),
        "attention_mask": torch.cat([mask.new_ones(b, prefix_len), mask], dim=1),
    }


@lru_cache(maxsize=64)
def _cache_arg(cls: Any) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> dict[str, Any]:
    """{the model's own name for the cache argument: CACHE} (`cache` in transformers 5; before it,
    `past_key_values`), for its forward and its `generate`."""
    cls: Any = type(model)
    return {_cache_arg(cls): cache}
