"""MORPHEUS's loss terms: vector quantisation, code prediction, contrast between encodings and codes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def vq_loss(z: torch.Tensor, codes: torch.Tensor, *, beta: float) -> torch.Tensor:
    """L_V = ||sg[z] - e||² + beta ||z - sg[e]||², mean over elements (Z, CODES: (S, D)).

    The first term moves the chosen codes towards the encodings, the second (commitment) keeps the
    encodings near their codes."""
    return F.mse_loss(codes, z.detach()) + beta * F.mse_loss(z, codes.detach())


def straight_through(z: torch.Tensor, codes: torch.Tensor, mode: str) -> torch.Tensor:
    """The vectors the decoder is conditioned on (S, D), and where L_G's gradient goes.

    encoder: value = the codes, gradient = the encodings (VQ-VAE); codebook: value and gradient =
    the codes; reverse: value = the encodings, gradient = the codes (the reference code)."""
    if mode == "encoder":
        return z + (codes - z).detach()
    if mode == "codebook":
        return codes
    if mode == "reverse":
        return codes + (z - codes).detach()
    raise ValueError(f"unknown straight-through mode {mode!r}")


def info_nce(
    z: torch.Tensor,
    codebook: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    detach_negatives: bool = True,
) -> torch.Tensor:
    """InfoNCE between encodings Z (S, D) and every code of CODEBOOK (N, D) by cosine
    similarity / TEMPERATURE, the positive being each encoding's own code TARGETS (S,).

    With DETACH_NEGATIVES the codes receive gradient only as positives (pulled towards their
    encodings); pushing every other code away from the data kills codes that no encoding is
    nearest to yet. The encodings still see every negative."""
    zn = F.normalize(z.float(), dim=-1)
    en = F.normalize(codebook.float(), dim=-1)
    sims = zn @ (en.detach() if detach_negatives else en).T
    if detach_negatives:
        pos = (zn * en[targets]).sum(-1)
        sims = sims.scatter(1, targets[:, None], pos[:, None])
    return F.cross_entropy(sims / temperature, targets)


def code_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, kind: str = "ce", gamma: float = 2.0
) -> torch.Tensor:
    """Code prediction loss over LOGITS (S, N) for TARGETS (S,): cross-entropy, or focal
    (mean of (1 - p_t)^gamma · CE, the reference's choice)."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    if kind == "focal":
        pt = torch.exp(-ce)
        return ((1 - pt) ** gamma * ce).mean()
    return ce.mean()


def token_nll(logits: torch.Tensor, labels: torch.Tensor, ignore: int = -100) -> torch.Tensor:
    """Mean next-token NLL of LABELS (B, T) under LOGITS (B, T, V) (shifted by one)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=ignore,
    )
