"""Gaussian latent encoders: a Hugging Face encoder, masked mean pooling, a tanh pooler, then
a linear map to (mu, logvar). MIRACLE's prior q(z | c) and posterior q(z | c, r)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the unmasked token states: hidden (B, T, H), mask (B, T) → (B, H)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class GaussianHead(nn.Module):
    """Pooled encoder state → (mu, logvar): tanh(W_pool h + b) then Linear(H → 2 d_z, no bias).

    NORMALIZE: standardise h first (layer norm without parameters), for a frozen sentence encoder
    whose mean-pooled states are small (all-MiniLM-L6-v2: about 0.1 per dimension), which would
    otherwise give posterior means far below the sampling noise."""

    def __init__(self, hidden: int, latent_dim: int, *, normalize: bool = False) -> None:
        super().__init__()
        self.pool = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 2 * latent_dim, bias=False)
        self.normalize = normalize

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pooled (B, H) → mu (B, d_z), logvar (B, d_z)."""
        if self.normalize:
            pooled = F.layer_norm(pooled, (pooled.shape[-1],))
        mu, logvar = self.out(torch.tanh(self.pool(pooled))).chunk(2, dim=-1)
        return mu, logvar


def encoder_hidden_size(encoder: Any) -> int:
    cfg = encoder.config
    return int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or cfg.n_embd)


def encode_states(encoder: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of an HF encoder's last hidden states: ids, mask (B, T) → (B, H)."""
    out = encoder(input_ids=ids, attention_mask=mask)
    return masked_mean(out.last_hidden_state, mask)
