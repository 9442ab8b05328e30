"""Feeding z to any Hugging Face causal LM, MIRACLE's two ways at once, without touching its code:

1. an embedding offset: `latent_embed(z)` (d_z → hidden) is added to every input token embedding,
   through a forward hook on the model's input embeddings (so `generate` gets it at every step);
2. a key/value prefix: `latent_proj(z)` (d_z → layers × kv-heads × head-dim) becomes one cached
   position in every layer, used as both key and value, through the model's own cache
   (`models/prefix.py`, P = 1), so the tokens start at position 1 and attend to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from personadlg.models.prefix import cache_geometry, prefix_cache


class LatentInjection(nn.Module):
    """The two maps from z into a decoder, and the hook that applies the embedding offset."""

    def __init__(self, lm: nn.Module, latent_dim: int) -> None:
        super().__init__()
        cfg: Any = lm.config
        self.layers, self.kv_heads, self.head_dim = cache_geometry(cfg)
        self.latent_embed = nn.Linear(latent_dim, int(cfg.hidden_size), bias=False)
        self.latent_proj = nn.Linear(
            latent_dim, self.layers * self.kv_heads * self.head_dim, bias=False
        )
        # The offset starts at zero, so a fresh decoder begins as a plain LM and z's share grows as
        # it helps; a random map would swamp the small token embeddings of from-scratch decoders
        # (every position gets the same large vector, which layer norm then makes dominant).
        nn.init.zeros_(self.latent_embed.weight)
        std = float(getattr(cfg, "initializer_range", 0.02) or 0.02)
        nn.init.normal_(self.latent_proj.weight, std=std)  # on the scale of the decoder's weights
        self._offset: torch.Tensor | None = None
        self._lm_config = cfg
        lm.get_input_embeddings().register_forward_hook(self._add_offset)  # type: ignore[operator]

    def _add_offset(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        off = self._offset
        if off is None:
            return output
        if output.shape[0] != off.shape[0]:  # beams: rows are repeated example-major
            off = off.repeat_interleave(output.shape[0] // off.shape[0], dim=0)
        return output + off[:, None, :].to(output.dtype)

    @contextmanager
    def offset(self, z: torch.Tensor) -> Iterator[None]:
        """While active, the decoder's input embeddings get `latent_embed(z)` added: z (B, d_z)."""
        self._offset = self.latent_embed(z)
        try:
            yield
        finally:
            self._offset = None

    def prefix(
        self,
        z: torch.Tensor,
        *,
        dtype: torch.dtype | None = None,
        repeat: int = 1,
        read_only: bool = False,
    ) -> Any:
        """A cache holding one key = value position per layer: z (B, d_z) → a Cache of
        (B·repeat, kv, 1, hd) per layer (`models/prefix.py`, P = 1; READ_ONLY for training)."""
        p = self.latent_proj(z)
        if dtype is not None:
            p = p.to(dtype)
        if repeat > 1:
            p = p.repeat_interleave(repeat, dim=0)
        p = p.view(p.shape[0], self.layers, self.kv_heads, 1, self.head_dim)
        return prefix_cache(p, p, self._lm_config, read_only=read_only)
