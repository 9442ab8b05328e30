"""The CVAE's loss pieces as plain functions: Gaussian KL with free bits, the beta schedule,
the attribute distance ("gap") loss and the posterior diagnostics."""

from __future__ import annotations

import math

import torch


def gaussian_kl(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) per dimension: (B, d_z) → (B, d_z), in nats."""
    return 0.5 * (
        logvar_p
        - logvar_q
        - 1.0
        + torch.exp(logvar_q - logvar_p)
        + (mu_q - mu_p).pow(2) * torch.exp(-logvar_p)
    )


def free_bits_kl(kl: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mean over the batch of the sum of the dimensions whose KL exceeds THRESHOLD: (B, d_z) → ()."""
    if threshold <= 0:
        return kl.sum(-1).mean()
    return (kl * (kl > threshold).to(kl.dtype)).sum(-1).mean()


def beta_at(step: int, *, schedule: str, period: int, zero_steps: int, ramp_steps: int) -> float:
    """KL weight multiplier at optimizer STEP (0-based).

    cyclic_step (MIRACLE): 0 for the first ZERO_STEPS of every PERIOD, else 1.
    cyclic_linear: 0 for ZERO_STEPS, then rising linearly to 1 over RAMP_STEPS, then 1.
    constant: always 1.
    """
    if schedule == "constant":
        return 1.0
    phase = step % period
    if phase < zero_steps:
        return 0.0
    if schedule == "cyclic_step":
        return 1.0
    return min(1.0, (phase - zero_steps + 1) / ramp_steps)


def gap_loss(
    z: torch.Tensor,
    groups: torch.Tensor,
    centres: torch.Tensor,
    seen: torch.Tensor,
    *,
    sign: str,
    margin: float,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Attribute distance loss and the new batch centres.

    For every attribute a labelled in the batch, the centre c_a of its examples' z is compared to
    the cached centres of the other attributes: pull = sum MSE(c_a, cache_b), push = -sum
    min(MSE, margin). Returns (loss, {a: c_a detached}) for the caller to cache.

    Shapes: z (B, d_z); groups (B, A) bool, example b labelled for attribute a; centres (A, d_z)
    cached centres; seen (A,) bool, the cache of a is set.
    """
    loss = z.new_zeros(())
    new: dict[int, torch.Tensor] = {}
    for a in range(groups.shape[1]):
        rows = groups[:, a]
        if not bool(rows.any()):
            continue
        centre = z[rows].mean(0)
        for b in range(groups.shape[1]):
            if b == a or not bool(seen[b]):
                continue
            mse = (centre - centres[b]).pow(2).mean()
            loss = loss + (mse if sign == "pull" else -torch.clamp(mse, max=margin))
        new[a] = centre.detach()
    return loss, new


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over dims; broadcasts, (..., d_z) → (...)."""
    return -0.5 * (((z - mu).pow(2) * torch.exp(-logvar)) + logvar + math.log(2 * math.pi)).sum(-1)


def mutual_information(
    mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Monte-Carlo estimate of I(x; z) under q(z|x) within one batch (Hoffman & Johnson 2016):
    mean_i [log q(z_i|x_i) - log (1/B sum_j q(z_i|x_j))] with z_i ~ q(z|x_i); between 0-ish and
    log B. (B, d_z) → ()."""
    b, _ = mu.shape
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + eps * torch.exp(0.5 * logvar)
    log_qz_x = gaussian_log_density(z[:, None, :], mu[None], logvar[None])  # (B, B): z_i under x_j
    log_qz = torch.logsumexp(log_qz_x, dim=1) - math.log(b)
    return (log_qz_x.diagonal() - log_qz).mean()
