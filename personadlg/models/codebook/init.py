"""Codebook initialisation (MORPHEUS stage 2): N code vectors from persona-segment encodings.

Given encodings ``x`` of shape (S, D), :func:`init_codebook` returns codes of shape (N, D) and an
:class:`InitReport`. Methods (the paper's ablations, see ``INIT_METHODS``):

- ``em``: diagonal Gaussian-mixture EM (:func:`gmm_em`); the means are the codes. Unlike the
  reference (which min-max normalises each sample's log-likelihoods before the softmax and so
  collapses every code to the global mean), responsibilities come from a log-sum-exp over
  ``log pi_k + log N(x | mu_k, diag(var_k))``.
- ``kmeans``: Lloyd's k-means with k-means++ seeding (:func:`kmeans`).
- ``random``: codes drawn from N(data mean, data per-dimension std).
- ``sequential``: the first N distinct encodings in order (the reference's online fill).
- ``mean``: the global mean plus seeded noise of 1e-3 x the per-dimension std (batch-mean init).

When the data hold fewer distinct rows k than codes N, every method still returns N codes:
em / kmeans / sequential use the k distinct rows plus N - k seeded jittered copies of them (noise
1e-3 x the per-dimension std), and ``InitReport.note`` says so.

Everything is computed in float64 on the input's device, in chunks of ``chunk_size`` samples;
nothing of size (S, N, D) is ever built (distances and log-densities use matmul expansions).
Results are returned in the input's dtype (float32 for non-floating input) and device.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch

from personadlg.errors import UsageError
from personadlg.models.codebook.config import INIT_METHODS

logger = logging.getLogger(__name__)

_LOG_2PI = math.log(2.0 * math.pi)
_ABS_VAR_EPS = 1e-12
"""Absolute part of the EM variance floor (added to ``min_variance`` x the data variance)."""
_DEAD_MASS = 1e-2
"""An EM component is empty when its total responsibility is below this many samples."""
_JITTER = 1e-3
"""Noise of jittered copies and of the ``mean`` init, relative to the per-dimension std."""
_DUP_REL = 1e-12
"""k-means++: squared distances below this fraction of |x|^2 + |c|^2 count as duplicates."""


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


@dataclass
class InitReport:
    """What an initialisation did. ``history`` has ``iterations + 1`` entries for em / kmeans:
    the value at the seeding, then after each iteration (em: mean per-sample log-likelihood;
    kmeans: inertia, the sum of squared distances to the nearest centre); empty otherwise.
    ``converged`` is True for the non-iterative methods (random, sequential, mean) and when the
    data have fewer distinct rows than codes (nothing to iterate). ``used`` and
    ``usage_perplexity`` come from Euclidean nearest-code assignments of all samples."""

    method: str
    codes: int
    samples: int
    iterations: int
    converged: bool
    log_likelihood: float | None
    history: list[float] = field(default_factory=list)
    used: int = 0
    usage_perplexity: float = 0.0
    reseeded: int = 0
    seconds: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# public helpers
# --------------------------------------------------------------------------------------------


def nearest(x: torch.Tensor, codes: torch.Tensor, *, chunk_size: int = 8192) -> torch.Tensor:
    """Index of the Euclidean-nearest code for every sample.

    x: (S, D), codes: (N, D) -> (S,) long, on x's device. Computed in float64, in chunks.
    """
    if x.dim() != 2 or codes.dim() != 2 or x.shape[1] != codes.shape[1]:
        raise ValueError(
            f"nearest: expected x (S, D) and codes (N, D) with the same D, "
            f"got {tuple(x.shape)} and {tuple(codes.shape)}"
        )
    if codes.shape[0] < 1:
        raise ValueError("nearest: codes is empty")
    _check_chunk(chunk_size)
    c = codes.detach().to(device=x.device, dtype=torch.float64)
    c2 = (c * c).sum(1)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for a in range(0, x.shape[0], chunk_size):
        xc = x[a : a + chunk_size].detach().to(torch.float64)
        d2 = (xc * xc).sum(1, keepdim=True) - 2.0 * (xc @ c.T) + c2
        out[a : a + chunk_size] = d2.argmin(1)
    return out


def usage(assignments: torch.Tensor, n_codes: int) -> tuple[int, float]:
    """(codes used, usage perplexity) of an assignment vector (S,) with values in [0, n_codes).

    Perplexity = exp(entropy of the assignment distribution): N when all codes are used equally,
    1 when one code takes everything; 0.0 for an empty assignment.
    """
    a = assignments.detach().reshape(-1).to(torch.long)
    if a.numel() == 0:
        return 0, 0.0
    if int(a.min()) < 0 or int(a.max()) >= n_codes:
        raise ValueError(f"usage: assignments must lie in [0, {n_codes})")
    counts = torch.bincount(a, minlength=n_codes).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * p.log()).sum())
    return int((counts > 0).sum()), math.exp(entropy)


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------


def init_codebook(
    x: torch.Tensor,
    n_codes: int,
    *,
    method: str = "em",
    seed: int = 0,
    max_iterations: int = 100,
    tol: float = 1e-4,
    min_variance: float = 1e-3,
    chunk_size: int = 8192,
) -> tuple[torch.Tensor, InitReport]:
    """Initialise N codes from encodings x (S, D) -> (codes (N, D), report).

    ``max_iterations``, ``tol``: em / kmeans only (see :func:`gmm_em`, :func:`kmeans`);
    ``min_variance``: em only. Unknown ``method`` -> UsageError.
    """
    if method not in INIT_METHODS:
        raise UsageError(
            f"unknown codebook init method {method!r}; known methods: {', '.join(INIT_METHODS)}"
        )
    _validate(
        x,
        n_codes,
        name="n_codes",
        max_iterations=max_iterations,
        tol=tol,
        min_variance=min_variance,
        chunk_size=chunk_size,
    )
    start = time.perf_counter()
    if method == "em":
        means, _, _, report = _gmm_em(
            x, n_codes, seed, max_iterations, tol, min_variance, chunk_size, start
        )
        _log(report)
        return means, report
    if method == "kmeans":
        centres, report = _kmeans(x, n_codes, seed, max_iterations, tol, chunk_size, start)
        _log(report)
        return centres, report

    gen = _generator(seed)
    data = _prepare(x)
    distinct = _first_distinct(x, n_codes)
    note = ""
    if method == "random":
        noise = torch.randn(n_codes, data.xc.shape[1], generator=gen, dtype=torch.float64)
        codes_c = noise.to(data.xc.device) * data.var.sqrt()
    elif method == "mean":
        noise = torch.randn(n_codes, data.xc.shape[1], generator=gen, dtype=torch.float64)
        codes_c = noise.to(data.xc.device) * data.jitter
    else:
        codes_c = data.xc.new_zeros(0)
    if method == "sequential":  # the rows themselves (exact), not centred and shifted back
        rows = x.detach()[torch.tensor(distinct, dtype=torch.long, device=x.device)]
        codes = _output(_fill_jittered(rows.to(torch.float64), n_codes, data.jitter, gen), x)
    else:
        codes = _output(codes_c + data.mean, x)
    if len(distinct) < n_codes:
        note = _few_note(len(distinct), n_codes, jittered=method == "sequential")
    report = _report(method, x, codes, chunk_size, start, iterations=0, converged=True, note=note)
    _log(report)
    return codes, report


def gmm_em(
    x: torch.Tensor,
    n_components: int,
    *,
    seed: int = 0,
    max_iterations: int = 100,
    tol: float = 1e-4,
    min_variance: float = 1e-3,
    chunk_size: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, InitReport]:
    """Diagonal Gaussian-mixture EM on x (S, D) -> (means (N, D), variances (N, D),
    weights (N,), report).

    - Seeding: k-means++ on the means (a CPU ``torch.Generator`` seeded with ``seed``), then one
      hard assignment to the seeds gives the initial means, variances and weights.
    - E-step: responsibilities by log-sum-exp over log pi_k + log N(x | mu_k, diag(var_k)), the
      quadratic form by matmul expansion, S processed in chunks.
    - Variance floor: ``min_variance`` x the per-dimension data variance + 1e-12 (absolute).
    - Convergence (relative, absolute below |LL| = 1): stop when the mean per-sample
      log-likelihood improves by less than ``tol * max(1, |LL|)``; at most ``max_iterations``
      M-steps. ``report.log_likelihood`` is the final parameters' mean log-likelihood (nats).
    - Components whose total responsibility falls below 0.01 samples are re-seeded at the
      lowest-likelihood (distinct) samples with the average live variance (``report.reseeded``);
      no convergence is declared in such an iteration, and the log-likelihood may dip there.
    """
    _validate(
        x,
        n_components,
        name="n_components",
        max_iterations=max_iterations,
        tol=tol,
        min_variance=min_variance,
        chunk_size=chunk_size,
    )
    start = time.perf_counter()
    out = _gmm_em(x, n_components, seed, max_iterations, tol, min_variance, chunk_size, start)
    _log(out[3])
    return out


def kmeans(
    x: torch.Tensor,
    n_clusters: int,
    *,
    seed: int = 0,
    max_iterations: int = 100,
    tol: float = 1e-4,
    chunk_size: int = 8192,
) -> tuple[torch.Tensor, InitReport]:
    """Lloyd's k-means on x (S, D) -> (centres (N, D), report).

    k-means++ seeding (CPU generator seeded with ``seed``), chunked distances, at most
    ``max_iterations`` updates. Converged when the total squared centre shift
    sum_k |c_k' - c_k|^2 <= ``tol`` x the mean per-dimension data variance (scikit-learn's
    convention). Empty clusters are re-seeded at the farthest samples, farthest-first
    (``report.reseeded``); no convergence is declared in such an iteration.
    """
    _validate(
        x,
        n_clusters,
        name="n_clusters",
        max_iterations=max_iterations,
        tol=tol,
        min_variance=0.0,
        chunk_size=chunk_size,
    )
    start = time.perf_counter()
    centres, report = _kmeans(x, n_clusters, seed, max_iterations, tol, chunk_size, start)
    _log(report)
    return centres, report


# --------------------------------------------------------------------------------------------
# EM
# --------------------------------------------------------------------------------------------


class _Stats(NamedTuple):
    ll: float  # mean per-sample log-likelihood
    ll_samples: torch.Tensor  # (S,)
    nk: torch.Tensor  # (N,) total responsibility
    sx: torch.Tensor  # (N, D) sum_s r_sk x_s
    sxx: torch.Tensor  # (N, D) sum_s r_sk x_s^2


def _gmm_em(
    x: torch.Tensor,
    n: int,
    seed: int,
    max_iterations: int,
    tol: float,
    min_variance: float,
    chunk_size: int,
    start: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, InitReport]:
    gen = _generator(seed)
    data = _prepare(x)
    xc = data.xc
    s, _ = xc.shape
    floor = min_variance * data.var + _ABS_VAR_EPS
    distinct = _first_distinct(x, n)

    if len(distinct) < n:
        # all distinct points plus jittered copies; weights split over a point's codes
        base = xc[torch.tensor(distinct, dtype=torch.long, device=xc.device)]
        mu = _fill_jittered(base, n, data.jitter, gen)
        owner = torch.arange(n, device=xc.device) % len(distinct)
        counts = torch.bincount(nearest(xc, base, chunk_size=chunk_size), minlength=len(distinct))
        shares = torch.bincount(owner, minlength=len(distinct))
        pi = (counts.to(torch.float64) / shares.to(torch.float64))[owner] / s
        var = floor.expand(n, -1).clone()
        stats = _e_step(xc, mu, var, pi, chunk_size)
        return _em_finish(
            x,
            mu + data.mean,
            var,
            pi,
            chunk_size,
            start,
            iterations=0,
            converged=True,
            stats=stats,
            history=[stats.ll],
            reseeded=0,
            note=_few_note(len(distinct), n, jittered=True),
        )

    x2 = (xc * xc).sum(1)
    seeds = xc[_kmeanspp(xc, x2, n, gen, chunk_size)]
    # initial parameters from one hard assignment to the seeds
    _, _, sums, counts, sumsq = _assign(xc, x2, seeds, chunk_size, squares=True)
    nk = counts.to(torch.float64)
    safe = nk.clamp_min(1.0)[:, None]
    mu = torch.where(nk[:, None] > 0, sums / safe, seeds)
    var = torch.where(nk[:, None] > 1, sumsq / safe - mu * mu, data.var.expand(n, -1))
    var = torch.maximum(var, floor)
    pi = nk.clamp_min(1.0) / nk.clamp_min(1.0).sum()

    stats = _e_step(xc, mu, var, pi, chunk_size)
    history = [stats.ll]
    iterations, converged, reseeded = 0, False, 0
    while iterations < max_iterations:
        mu, var, pi, fresh = _m_step(stats, xc, floor, data.var)
        reseeded += fresh
        iterations += 1
        previous = stats.ll
        stats = _e_step(xc, mu, var, pi, chunk_size)
        history.append(stats.ll)
        if fresh == 0 and stats.ll - previous < tol * max(1.0, abs(previous)):
            converged = True
            break
    return _em_finish(
        x,
        mu + data.mean,
        var,
        pi,
        chunk_size,
        start,
        iterations=iterations,
        converged=converged,
        stats=stats,
        history=history,
        reseeded=reseeded,
        note="",
    )


def _e_step(
    xc: torch.Tensor, mu: torch.Tensor, var: torch.Tensor, pi: torch.Tensor, chunk_size: int
) -> _Stats:
    """Log-sum-exp responsibilities and the sufficient statistics, chunk by chunk."""
    s, d = xc.shape
    inv = 1.0 / var  # (N, D)
    lin = mu * inv  # (N, D)
    m2 = (mu * lin).sum(1)  # (N,) sum_d mu^2 / var
    const = var.log().sum(1) + d * _LOG_2PI  # (N,)
    log_pi = pi.clamp_min(1e-300).log()
    nk = torch.zeros_like(pi)
    sx = torch.zeros_like(mu)
    sxx = torch.zeros_like(mu)
    ll_samples = torch.empty(s, dtype=torch.float64, device=xc.device)
    for a in range(0, s, chunk_size):
        xb = xc[a : a + chunk_size]
        xb2 = xb * xb
        # sum_d (x - mu)^2 / var, expanded; a sum of squares, so rounding below 0 is clamped
        quad = (xb2 @ inv.T - 2.0 * (xb @ lin.T) + m2).clamp_min_(0.0)  # (B, N)
        logp = log_pi - 0.5 * (quad + const)
        lse = torch.logsumexp(logp, dim=1)
        r = (logp - lse[:, None]).exp_()
        ll_samples[a : a + chunk_size] = lse
        nk += r.sum(0)
        sx += r.T @ xb
        sxx += r.T @ xb2
    return _Stats(float(ll_samples.mean()), ll_samples, nk, sx, sxx)


def _m_step(
    stats: _Stats, xc: torch.Tensor, floor: torch.Tensor, data_var: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """New (mu, var, pi) and the number of empty components re-seeded."""
    nk = stats.nk.clone()
    safe = nk.clamp_min(1e-300)[:, None]
    mu = stats.sx / safe
    var = torch.maximum(stats.sxx / safe - mu * mu, floor)
    dead = nk < _DEAD_MASS
    n_dead = int(dead.sum())
    if n_dead:
        live = ~dead
        width = var[live].mean(0) if bool(live.any()) else torch.maximum(data_var, floor)
        picks = _distinct_order(xc, torch.argsort(stats.ll_samples), n_dead)
        idx = dead.nonzero().squeeze(1)[: len(picks)]
        mu[idx] = xc[picks]
        var[idx] = width
        nk[idx] = 1.0
        n_dead = len(picks)
    pi = nk / nk.sum()
    return mu, var, pi, n_dead


def _em_finish(
    x: torch.Tensor,
    means: torch.Tensor,
    var: torch.Tensor,
    pi: torch.Tensor,
    chunk_size: int,
    start: float,
    *,
    iterations: int,
    converged: bool,
    stats: _Stats,
    history: list[float],
    reseeded: int,
    note: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, InitReport]:
    codes = _output(means, x)
    report = _report(
        "em",
        x,
        codes,
        chunk_size,
        start,
        iterations=iterations,
        converged=converged,
        log_likelihood=stats.ll,
        history=history,
        reseeded=reseeded,
        note=note,
    )
    return codes, _output(var, x), _output(pi, x), report


# --------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------


def _kmeans(
    x: torch.Tensor,
    n: int,
    seed: int,
    max_iterations: int,
    tol: float,
    chunk_size: int,
    start: float,
) -> tuple[torch.Tensor, InitReport]:
    gen = _generator(seed)
    data = _prepare(x)
    xc = data.xc
    x2 = (xc * xc).sum(1)
    distinct = _first_distinct(x, n)
    if len(distinct) < n:
        base = xc[torch.tensor(distinct, dtype=torch.long, device=xc.device)]
        centres = _fill_jittered(base, n, data.jitter, gen)
        _, mind2, _, _, _ = _assign(xc, x2, centres, chunk_size)
        codes = _output(centres + data.mean, x)
        report = _report(
            "kmeans",
            x,
            codes,
            chunk_size,
            start,
            iterations=0,
            converged=True,
            history=[float(mind2.sum())],
            note=_few_note(len(distinct), n, jittered=True),
        )
        return codes, report

    threshold = tol * float(data.var.mean())
    centres = xc[_kmeanspp(xc, x2, n, gen, chunk_size)].clone()
    _, mind2, sums, counts, _ = _assign(xc, x2, centres, chunk_size)
    history = [float(mind2.sum())]
    iterations, converged, reseeded = 0, False, 0
    while iterations < max_iterations:
        new = sums / counts.clamp_min(1).to(torch.float64)[:, None]
        empty = (counts == 0).nonzero().squeeze(1)
        if len(empty):
            # farthest-first: each re-seeded centre also shortens the others' distances
            far_d2 = mind2.clone()
            for k in empty.tolist():
                j = int(far_d2.argmax())
                new[k] = xc[j]
                far_d2 = torch.minimum(far_d2, _sqdist_to(xc, x2, xc[j], chunk_size))
            reseeded += len(empty)
        shift = float(((new - centres) ** 2).sum())
        centres = new
        iterations += 1
        _, mind2, sums, counts, _ = _assign(xc, x2, centres, chunk_size)
        history.append(float(mind2.sum()))
        if len(empty) == 0 and shift <= threshold:
            converged = True
            break
    codes = _output(centres + data.mean, x)
    report = _report(
        "kmeans",
        x,
        codes,
        chunk_size,
        start,
        iterations=iterations,
        converged=converged,
        history=history,
        reseeded=reseeded,
    )
    return codes, report


def _assign(
    xc: torch.Tensor,
    x2: torch.Tensor,
    centres: torch.Tensor,
    chunk_size: int,
    *,
    squares: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest centre per sample: (assignment (S,), squared distance (S,), per-centre sums
    (N, D), counts (N,), per-centre sums of squares (N, D), zeros unless ``squares``)."""
    s = xc.shape[0]
    n = centres.shape[0]
    c2 = (centres * centres).sum(1)
    arg = torch.empty(s, dtype=torch.long, device=xc.device)
    mind2 = torch.empty(s, dtype=torch.float64, device=xc.device)
    sums = torch.zeros_like(centres)
    sumsq = torch.zeros_like(centres)
    for a in range(0, s, chunk_size):
        xb = xc[a : a + chunk_size]
        d2 = x2[a : a + chunk_size, None] - 2.0 * (xb @ centres.T) + c2
        best, idx = d2.min(1)
        arg[a : a + chunk_size] = idx
        mind2[a : a + chunk_size] = best.clamp_min(0.0)
        sums.index_add_(0, idx, xb)
        if squares:
            sumsq.index_add_(0, idx, xb * xb)
    counts = torch.bincount(arg, minlength=n)
    return arg, mind2, sums, counts, sumsq


def _sqdist_to(
    xc: torch.Tensor, x2: torch.Tensor, c: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Squared distances (S,) of every sample to one point c (D,); near-duplicates -> 0."""
    c2 = float(c @ c)
    out = torch.empty_like(x2)
    for a in range(0, xc.shape[0], chunk_size):
        xb2 = x2[a : a + chunk_size]
        d2 = (xb2 - 2.0 * (xc[a : a + chunk_size] @ c) + c2).clamp_min_(0.0)
        d2[d2 <= _DUP_REL * (xb2 + c2)] = 0.0
        out[a : a + chunk_size] = d2
    return out


def _kmeanspp(
    xc: torch.Tensor, x2: torch.Tensor, n: int, gen: torch.Generator, chunk_size: int
) -> torch.Tensor:
    """k-means++ (D^2) seeding: n sample indices. Needs at least n distinct rows."""
    s = xc.shape[0]
    chosen = [int(torch.randint(s, (1,), generator=gen))]
    mind2 = _sqdist_to(xc, x2, xc[chosen[0]], chunk_size)
    mind2[chosen[0]] = 0.0
    for _ in range(1, n):
        weights = mind2.cpu()
        if float(weights.sum()) > 0.0:
            j = int(torch.multinomial(weights, 1, generator=gen))
        else:  # only (near-)duplicates of chosen rows remain: take any unchosen row
            free = torch.ones(s, dtype=torch.bool)
            free[chosen] = False
            j = int(free.nonzero()[int(torch.randint(int(free.sum()), (1,), generator=gen))])
        chosen.append(j)
        mind2 = torch.minimum(mind2, _sqdist_to(xc, x2, xc[j], chunk_size))
        mind2[j] = 0.0
    return torch.tensor(chosen, dtype=torch.long, device=xc.device)


# --------------------------------------------------------------------------------------------
# shared internals
# --------------------------------------------------------------------------------------------


class _Data(NamedTuple):
    xc: torch.Tensor  # (S, D) float64, centred
    mean: torch.Tensor  # (D,) float64
    var: torch.Tensor  # (D,) float64, population variance
    jitter: torch.Tensor  # (D,) std of jitter noise: _JITTER x std (a fallback where std = 0)


def _prepare(x: torch.Tensor) -> _Data:
    xc = x.detach().to(torch.float64, copy=True)
    mean = xc.mean(0)
    xc -= mean
    var = (xc * xc).mean(0)
    std = var.sqrt()
    overall = float(var.mean().sqrt())
    if overall <= 0.0:
        overall = max(1.0, float(mean.abs().max()))
    jitter = _JITTER * torch.where(std > 0, std, torch.full_like(std, overall))
    return _Data(xc, mean, var, jitter)


def _first_distinct(x: torch.Tensor, n: int) -> list[int]:
    """Indices of the first (at most) n distinct rows of x, in order (exact, -0.0 == 0.0)."""
    seen: set[bytes] = set()
    found: list[int] = []
    block = max(256, 2 * n)
    for a in range(0, x.shape[0], block):
        rows = x[a : a + block].detach()
        if rows.dtype == torch.bfloat16:
            rows = rows.float()
        arr = (rows + 0).cpu().contiguous().numpy()  # + 0 turns -0.0 into 0.0
        for i, row in enumerate(arr):
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                found.append(a + i)
                if len(found) == n:
                    return found
    return found


def _distinct_order(xc: torch.Tensor, order: torch.Tensor, k: int) -> list[int]:
    """The first k rows along ``order`` that are not exact duplicates of each other."""
    picks: list[int] = []
    for j in order.tolist():
        if all(not torch.equal(xc[j], xc[p]) for p in picks):
            picks.append(j)
            if len(picks) == k:
                break
    return picks


def _fill_jittered(
    base: torch.Tensor, n: int, jitter: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """base (k, D) followed by n - k jittered copies of its rows, round-robin -> (n, D)."""
    k = base.shape[0]
    if k >= n:
        return base[:n].clone()
    owner = torch.arange(k, n, device=base.device) % k
    noise = torch.randn(n - k, base.shape[1], generator=gen, dtype=torch.float64)
    copies = base[owner] + noise.to(base.device) * jitter
    return torch.cat([base, copies])


def _few_note(k: int, n: int, *, jittered: bool) -> str:
    head = f"fewer distinct samples ({k}) than codes ({n})"
    if jittered:
        return (
            f"{head}: all {k} distinct samples are codes, the other {n - k} are seeded jittered "
            f"copies of them (noise {_JITTER:g} x per-dimension std); no iterations run"
        )
    return f"{head}: codes drawn as usual"


def _output(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return t.to(device=x.device, dtype=dtype).contiguous()


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


def _report(
    method: str,
    x: torch.Tensor,
    codes: torch.Tensor,
    chunk_size: int,
    start: float,
    *,
    iterations: int,
    converged: bool,
    log_likelihood: float | None = None,
    history: list[float] | None = None,
    reseeded: int = 0,
    note: str = "",
) -> InitReport:
    used, perplexity = usage(nearest(x, codes, chunk_size=chunk_size), codes.shape[0])
    return InitReport(
        method=method,
        codes=int(codes.shape[0]),
        samples=int(x.shape[0]),
        iterations=iterations,
        converged=converged,
        log_likelihood=log_likelihood,
        history=[float(h) for h in history or []],
        used=used,
        usage_perplexity=perplexity,
        reseeded=reseeded,
        seconds=time.perf_counter() - start,
        note=note,
    )


def _log(report: InitReport) -> None:
    ll = "n/a" if report.log_likelihood is None else f"{report.log_likelihood:.4g}"
    logger.info(
        "codebook init %s: %d iterations, converged=%s, log-likelihood=%s, used %d/%d codes, "
        "usage perplexity %.1f, %.2fs%s",
        report.method,
        report.iterations,
        report.converged,
        ll,
        report.used,
        report.codes,
        report.usage_perplexity,
        report.seconds,
        f" ({report.note})" if report.note else "",
    )


def _check_chunk(chunk_size: int) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")


def _validate(
    x: torch.Tensor,
    n: int,
    *,
    name: str,
    max_iterations: int,
    tol: float,
    min_variance: float,
    chunk_size: int,
) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor of shape (S, D), got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D (S, D), got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x needs at least one sample and one dimension, got {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"x must be real-valued, got dtype {x.dtype}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite (it contains NaN or inf)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int)
        or max_iterations < 0
    ):
        raise ValueError(f"max_iterations must be an integer >= 0, got {max_iterations!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be finite and >= 0, got {tol!r}")
    if not (math.isfinite(min_variance) and min_variance >= 0):
        raise ValueError(f"min_variance must be finite and >= 0, got {min_variance!r}")
    _check_chunk(chunk_size)
