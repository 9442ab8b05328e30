"""Composing attribute targets in latent space: an energy over the latent heads, and the ODE that
moves z to low energy (MIRACLE §EBM + ODE sampling, LatentOps' VP-ODE).

Energy of a latent z for targets c (one aspect index per attribute, -1 = not targeted):

    E(z | c) = -sum_i w_i log softmax(f_i(z))[c_i]

The probability-flow ODE of the VP-SDE whose data density is N(0, I) x prod_i p(c_i | z) reduces
(the z terms cancel) to

    dz/dt = -1/2 beta(t) s * grad_z(-E(z | c)),   beta(t) = beta_min + t (beta_max - beta_min),

integrated from t = 1 to t = 0, with s = `guidance_scale`. The gradient is taken per example: the
energy is a sum of per-example terms, so row k of the gradient involves z_k only (the reference
broadcast a (B, 1) against a (B,) tensor and scaled every gradient by the batch size).

The error norm used by adaptive solvers is the largest per-example RMS error, so every latent
meets the tolerance whatever else is in its batch (batching changes z only within tolerance;
fixed-grid solvers make it exactly batch-independent).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from personadlg.errors import PersonadlgError
from personadlg.models.cvae.config import FIXED_GRID, ODEConfig


def log_likelihood(
    z: torch.Tensor, heads: Sequence[nn.Module], targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum_i w_i log p_i(c_i | z) per example: z (N, d_z), targets (N, A) long (-1 = none), weights (A,) → (N,)."""
    total = z.new_zeros(z.shape[0])
    for i, head in enumerate(heads):
        wanted = targets[:, i] >= 0
        if not bool(wanted.any()) or float(weights[i]) == 0.0:
            continue
        dtype = next(head.parameters()).dtype
        logp = torch.log_softmax(head(z.to(dtype)).float(), dim=-1)
        picked = logp.gather(1, targets[:, i].clamp(min=0).unsqueeze(1)).squeeze(1)  # (N,)
        total = total + weights[i] * torch.where(wanted, picked, torch.zeros_like(picked))
    return total


def _mlp_parts(head: nn.Module) -> tuple[nn.Linear, nn.Linear] | None:
    """(first, last) linear layers of a Linear → ReLU → Linear head, else None."""
    if (
        isinstance(head, nn.Sequential)
        and len(head) == 3
        and isinstance(head[0], nn.Linear)
        and isinstance(head[1], nn.ReLU)
        and isinstance(head[2], nn.Linear)
    ):
        return head[0], head[2]
    return None


class FusedHeads:
    """The Linear → ReLU → Linear heads fused into two matmuls, with the targets' one-hot weights
    precomputed: `grad(z)` is grad_z sum_i w_i log p_i(c_i | z) in a handful of tensor ops (an ODE
    solver calls it dozens of times, and per-op overhead dominates such small heads)."""

    def __init__(
        self, heads: Sequence[nn.Module], targets: torch.Tensor, weights: torch.Tensor
    ) -> None:
        parts = [_mlp_parts(h) for h in heads]
        if any(p is None for p in parts):
            raise TypeError("FusedHeads needs Linear → ReLU → Linear heads")
        firsts = [p[0] for p in parts if p is not None]
        lasts = [p[1] for p in parts if p is not None]
        dev = firsts[0].weight.device
        self.w1 = torch.cat([f.weight.float() for f in firsts])  # (sum H, d)
        self.b1 = torch.cat([_bias(f) for f in firsts])  # (sum H,)
        cs = [lst.out_features for lst in lasts]
        self.w2 = torch.block_diag(*[lst.weight.float() for lst in lasts])  # (sum C, sum H)
        self.b2 = torch.cat([_bias(lst) for lst in lasts])  # (sum C,)
        self.slices = []
        start = 0
        for c in cs:
            self.slices.append(slice(start, start + c))
            start += c
        self.same_classes = cs[0] if len(set(cs)) == 1 else 0  # one reshaped softmax for all heads
        n = targets.shape[0]
        # d log p_c / d logits = onehot(c) - p, weighted by w_i on targeted rows
        self.row_weight = torch.zeros(n, start, device=dev)
        self.onehot = torch.zeros(n, start, device=dev)
        for i, sl in enumerate(self.slices):
            wanted = (targets[:, i] >= 0).float().to(dev) * float(weights[i])
            self.row_weight[:, sl] = wanted.unsqueeze(1)
            rows = torch.nonzero(targets[:, i] >= 0).squeeze(1)
            self.onehot[rows, sl.start + targets[rows, i].to(dev)] = 1.0

    def grad(self, z: torch.Tensor) -> torch.Tensor:
        """(N, d_z) → (N, d_z)."""
        h = torch.addmm(self.b1, z, self.w1.T)
        logits = torch.addmm(self.b2, h.clamp(min=0), self.w2.T)
        if self.same_classes:
            n = logits.shape[0]
            probs = torch.softmax(logits.view(n, -1, self.same_classes), dim=-1).view(n, -1)
        else:
            probs = torch.cat([torch.softmax(logits[:, sl], dim=-1) for sl in self.slices], dim=1)
        g_logits = (self.onehot - probs) * self.row_weight
        g_h = (g_logits @ self.w2).masked_fill_(h <= 0, 0.0)
        return g_h @ self.w1


def _bias(layer: nn.Linear) -> torch.Tensor:
    if layer.bias is not None:
        return layer.bias.detach().float()
    return torch.zeros(layer.out_features, device=layer.weight.device)


def log_likelihood_grad(
    z: torch.Tensor, heads: Sequence[nn.Module], targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """grad_z sum_i w_i log p_i(c_i | z), row by row, by autograd: (N, d_z) → (N, d_z)."""
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(log_likelihood(zz, heads, targets, weights).sum(), zz)
    return g


def energy(
    z: torch.Tensor, heads: Sequence[nn.Module], targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """E(z | c) per example: (N, d_z) → (N,)."""
    return -log_likelihood(z, heads, targets, weights)


class _Drift(nn.Module):
    """The ODE's right-hand side; counts its evaluations."""

    def __init__(
        self,
        heads: Sequence[nn.Module],
        targets: torch.Tensor,
        weights: torch.Tensor,
        cfg: ODEConfig,
    ) -> None:
        super().__init__()
        self.heads, self.targets, self.weights, self.cfg = list(heads), targets, weights, cfg
        self.fused: FusedHeads | None = None
        if all(_mlp_parts(h) is not None for h in heads):
            with torch.no_grad():
                self.fused = FusedHeads(heads, targets, weights)
        self.nfe = 0

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        if self.nfe > self.cfg.max_nfe:
            raise PersonadlgError(
                f"the ODE needed more than model.ode.max_nfe={self.cfg.max_nfe} function evaluations; "
                "loosen model.ode.atol / rtol, lower guidance_scale or use a fixed-grid solver"
            )
        c = self.cfg
        # row k of the gradient involves z_k only
        if self.fused is not None:
            grad = self.fused.grad(z)
        else:
            grad = log_likelihood_grad(z, self.heads, self.targets, self.weights)
        beta = c.beta_min + t * (c.beta_max - c.beta_min)
        return -0.5 * beta * c.guidance_scale * grad


def _per_example_rms(x: torch.Tensor) -> torch.Tensor:
    """torchdiffeq error norm: the largest per-row RMS (rows = examples)."""
    return x.reshape(x.shape[0], -1).pow(2).mean(-1).sqrt().max()


@dataclass
class ODEResult:
    z: torch.Tensor
    """(N, d_z) the moved latents."""
    nfe: int
    """function evaluations of the drift (each evaluates every example once)."""


def guide(
    z0: torch.Tensor,
    heads: Sequence[nn.Module],
    targets: torch.Tensor,
    cfg: ODEConfig,
    *,
    weights: torch.Tensor | None = None,
) -> ODEResult:
    """Move latents Z0 (N, d_z) towards the TARGETS (N, A) by integrating the ODE from t=1 to t=0.

    Rows without any target, or a zero guidance scale, are returned unchanged (nfe 0 when no row
    has a target).
    """
    from torchdiffeq import odeint

    if weights is None:
        weights = torch.ones(len(heads))
    weights = weights.to(device=z0.device, dtype=torch.float32)
    active = (targets >= 0).any(dim=1)
    if cfg.guidance_scale == 0 or not bool(active.any()):
        return ODEResult(z=z0.clone(), nfe=0)
    drift = _Drift(heads, targets[active], weights, cfg)
    t = torch.tensor([1.0, 0.0], device=z0.device, dtype=torch.float32)
    options: dict[str, object] = {}
    kwargs: dict[str, object] = {}
    if cfg.solver in FIXED_GRID:
        options["step_size"] = cfg.step_size
    else:
        kwargs.update(rtol=cfg.rtol, atol=cfg.atol)
        options["norm"] = _per_example_rms
    start = z0[active].detach().float()
    with torch.no_grad():
        path = odeint(drift, start, t, method=cfg.solver, options=options, **kwargs)
    z = z0.clone()
    z[active] = path[-1].to(z0.dtype)
    return ODEResult(z=z, nfe=drift.nfe)
