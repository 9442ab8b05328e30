"""Codebook initialisation (MORPHEUS stage 2): EM, k-means and the simple ablation inits."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from itertools import pairwise

import pytest
import torch

from personadlg.errors import UsageError
from personadlg.models.codebook import init as init_module
from personadlg.models.codebook.init import (
    INIT_METHODS,
    InitReport,
    gmm_em,
    init_codebook,
    kmeans,
    nearest,
    usage,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These problems are small: one BLAS thread is as fast, and immune to a loaded machine
    (two OpenMP threads on two busy cores run several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def blobs(
    n_clusters: int, per: int, dim: int, *, spread: float = 10.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x (n_clusters*per, dim), true centres, labels): unit-variance clusters, centres ~ N(0, spread^2)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * spread
    labels = torch.arange(n_clusters).repeat_interleave(per)
    x = centres[labels] + torch.randn(n_clusters * per, dim, generator=g)
    perm = torch.randperm(len(x), generator=g)
    return x[perm], centres, labels[perm]


def reference_em(
    x: torch.Tensor, n: int, *, max_iterations: int = 30, tol: float = 1e-4, seed: int = 2048
) -> torch.Tensor:
    """The reference's `em_algorithm_independent_dimensions_stable`, faithfully but small:
    diagonal Gaussians with no mixing weights, mu and var ~ U[0, 1), each sample's row of
    log-likelihoods min-max normalised to [0, 1] before the softmax, stop on |mu' - mu|_F < tol
    (returning the previous mu). Matmul expansion instead of the (S, N, D) broadcast (same values).
    """
    _, d = x.shape
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(n, d, generator=g)
    var = torch.rand(n, d, generator=g)
    for it in range(max_iterations):
        v = var.clamp_min(1e-20)
        quad = (x * x) @ (1 / v).T - 2 * x @ (mu / v).T + (mu * mu / v).sum(1)
        ll = -0.5 * (quad + torch.log(2 * math.pi * v).sum(1))  # (S, N)
        lo = ll.min(1, keepdim=True).values
        hi = ll.max(1, keepdim=True).values
        r = torch.softmax((ll - lo) / (hi - lo), dim=1)
        rs = r.sum(0)[:, None]
        new_mu = r.T @ x / rs
        new_var = r.T @ (x * x) / rs - new_mu**2
        if it > 0 and torch.linalg.norm(new_mu - mu) < tol:
            return mu
        mu, var = new_mu, new_var
    return mu


def matched_error(found: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """For every true centre, the distance to the nearest found code."""
    return torch.cdist(truth.double(), found.double()).min(1).values


def cluster_means(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.stack([x[labels == i].mean(0) for i in range(k)])


# --------------------------------------------------------------------------------------------
# EM
# --------------------------------------------------------------------------------------------


def test_em_recovers_separated_clusters() -> None:
    x, centres, labels = blobs(8, 200, 16)
    means, variances, weights, report = gmm_em(x, 8, seed=0)
    assert means.shape == (8, 16) and variances.shape == (8, 16) and weights.shape == (8,)
    assert means.dtype == torch.float32
    assert matched_error(means, centres).max() < 0.6  # sampling error ~ sqrt(16/200) = 0.28
    assert matched_error(means, cluster_means(x, labels, 8)).max() < 1e-3
    assert torch.allclose(weights.sum(), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(weights, torch.full((8,), 1 / 8), atol=1e-3)
    assert ((variances > 0.7) & (variances < 1.4)).all()  # unit-variance clusters
    assert report.used == 8 and report.usage_perplexity > 7.99
    assert report.method == "em" and report.codes == 8 and report.samples == 1600
    assert report.log_likelihood is not None and math.isfinite(report.log_likelihood)
    assert report.log_likelihood == report.history[-1]


def test_em_does_not_collapse_but_the_reference_does() -> None:
    x, _, _ = blobs(20, 150, 64, seed=3)
    centre = x.mean(0)
    data_spread = (x - centre).norm(dim=1).mean()

    ref = reference_em(x, 100)
    ref_spread = (ref - centre).norm(dim=1).mean()
    assert ref_spread < 0.02 * data_spread  # the reference's codes sit on the global mean

    codes, report = init_codebook(x, 100, method="em", seed=0)
    spread = (codes - centre).norm(dim=1).mean()
    assert spread > 0.8 * data_spread
    assert report.used == 100
    assert report.usage_perplexity > 50
    # every true cluster is covered
    assert usage(nearest(x, codes), 100)[0] == 100
    _, ref_perplexity = usage(nearest(x, ref), 100)
    assert ref_perplexity < report.usage_perplexity / 2


def test_em_history_monotone_and_converges_early() -> None:
    x, _, _ = blobs(6, 100, 8, spread=3.0, seed=5)  # overlapping enough to need a few steps
    _, _, _, report = gmm_em(x, 6, seed=1, max_iterations=200, tol=1e-6)
    h = report.history
    assert len(h) == report.iterations + 1 >= 3
    for a, b in pairwise(h):
        assert b >= a - 1e-6 * abs(a)
    assert report.converged and report.iterations < 200


def test_em_stops_at_max_iterations() -> None:
    x, _, _ = blobs(6, 100, 8, spread=1.0, seed=5)
    _, _, _, report = gmm_em(x, 12, seed=0, max_iterations=2, tol=0.0)
    assert report.iterations == 2 and not report.converged and len(report.history) == 3


def test_em_variance_floor_with_duplicates() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 10, generator=g)
    x[:, :3] = 2.5  # constant dimensions: zero data variance
    x[:100] = x[0]  # 100 identical points: a zero-variance cluster
    x[100:150, 5] = -1.0  # zero variance in one dimension of part of the data
    means, variances, weights, report = gmm_em(x, 5, seed=0, min_variance=1e-3)
    for t in (means, variances, weights):
        assert torch.isfinite(t).all()
    assert (variances > 0).all()
    assert report.log_likelihood is not None and math.isfinite(report.log_likelihood)
    assert torch.allclose(means[:, :3], torch.full((5, 3), 2.5))
    codes, report = init_codebook(x, 5, method="kmeans")
    assert torch.isfinite(codes).all()


# --------------------------------------------------------------------------------------------
# k-means
# --------------------------------------------------------------------------------------------


def test_kmeans_recovers_centres_and_is_seeded() -> None:
    x, centres, labels = blobs(8, 200, 16)
    found, report = kmeans(x, 8, seed=0)
    assert matched_error(found, cluster_means(x, labels, 8)).max() < 1e-4
    assert matched_error(found, centres).max() < 0.6
    assert report.converged and report.iterations < 100
    assert report.used == 8 and report.log_likelihood is None
    h = report.history
    assert all(b <= a * (1 + 1e-9) for a, b in pairwise(h))  # inertia never increases

    hard = torch.randn(400, 5, generator=torch.Generator().manual_seed(9))  # no structure
    a, _ = init_codebook(hard, 12, method="kmeans", seed=0)
    b, _ = init_codebook(hard, 12, method="kmeans", seed=0)
    c, _ = init_codebook(hard, 12, method="kmeans", seed=1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    e1, _ = init_codebook(hard, 12, method="em", seed=0)
    e2, _ = init_codebook(hard, 12, method="em", seed=0)
    e3, _ = init_codebook(hard, 12, method="em", seed=1)
    assert torch.equal(e1, e2)
    assert not torch.allclose(e1, e3)


def test_kmeans_reseeds_empty_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _, _ = blobs(3, 50, 4, spread=50.0, seed=2)
    # a seeding with a repeated centre: ties go to the first copy, the second is empty
    monkeypatch.setattr(
        init_module, "_kmeanspp", lambda xc, x2, n, gen, chunk: torch.tensor([0, 0, 1, 2])
    )
    codes, report = kmeans(x, 4, seed=0)
    assert report.reseeded >= 1
    assert torch.isfinite(codes).all() and report.used == 4


def test_em_reseeds_empty_components() -> None:
    g = torch.Generator().manual_seed(0)
    xc = torch.randn(50, 3, generator=g, dtype=torch.float64)
    ll = torch.randn(50, generator=g, dtype=torch.float64)
    ll[17] = -1e6  # the worst-explained sample
    nk = torch.tensor([30.0, 20.0, 0.0], dtype=torch.float64)
    sx = torch.randn(3, 3, generator=g, dtype=torch.float64) * nk[:, None]
    sxx = torch.ones(3, 3, dtype=torch.float64) * nk[:, None] * 5
    stats = init_module._Stats(float(ll.mean()), ll, nk, sx, sxx)
    floor = torch.full((3,), 1e-3, dtype=torch.float64)
    mu, var, pi, fresh = init_module._m_step(stats, xc, floor, torch.ones(3, dtype=torch.float64))
    assert fresh == 1
    assert torch.equal(mu[2], xc[17])
    assert torch.allclose(var[2], var[:2].mean(0))
    assert pi[2] > 0 and torch.allclose(pi.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(mu[:2], sx[:2] / nk[:2, None])


# --------------------------------------------------------------------------------------------
# random / sequential / mean
# --------------------------------------------------------------------------------------------


def test_random_init() -> None:
    x, _, _ = blobs(4, 250, 6, spread=5.0)
    codes, report = init_codebook(x, 400, method="random", seed=0)
    assert codes.shape == (400, 6) and report.iterations == 0
    assert torch.allclose(codes.mean(0), x.mean(0), atol=0.5 * x.std(0).max().item() / 2)
    ratio = codes.std(0) / x.std(0)
    assert ((ratio > 0.85) & (ratio < 1.15)).all()
    again, _ = init_codebook(x, 400, method="random", seed=0)
    other, _ = init_codebook(x, 400, method="random", seed=1)
    assert torch.equal(codes, again) and not torch.allclose(codes, other)


def test_sequential_init_first_distinct_rows_in_order() -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(20, 4, generator=g)
    order = [0, 0, 1, 0, 2, 1, 3, 4, 4, 5, 6, 7, 2, 8, 9, 10]
    x = rows[order]
    codes, report = init_codebook(x, 6, method="sequential")
    assert torch.equal(codes, rows[:6])
    assert report.note == "" and report.iterations == 0
    # -0.0 and 0.0 are the same row
    z = torch.tensor([[0.0, 1.0], [-0.0, 1.0], [2.0, 3.0]])
    codes, _ = init_codebook(z, 2, method="sequential")
    assert torch.equal(codes, torch.tensor([[0.0, 1.0], [2.0, 3.0]]))


def test_mean_init_close_to_global_mean() -> None:
    x, _, _ = blobs(4, 100, 6, spread=5.0)
    codes, _ = init_codebook(x, 10, method="mean", seed=0)
    dist = (codes - x.mean(0)).abs() / x.std(0)
    assert (dist < 1e-2).all()
    assert torch.unique(codes, dim=0).shape[0] == 10  # noise keeps the codes apart


# --------------------------------------------------------------------------------------------
# degenerate data, validation, chunking, size
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", INIT_METHODS)
def test_fewer_distinct_samples_than_codes(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(5, 3, generator=g)
    x = rows[torch.randint(5, (40,), generator=g)]
    x[:5] = rows  # all 5 present
    codes, report = init_codebook(x, 10, method=method, seed=0)
    assert codes.shape == (10, 3) and torch.isfinite(codes).all()
    assert "fewer distinct samples (5) than codes (10)" in report.note
    if method in ("em", "kmeans", "sequential"):
        assert torch.cdist(rows, codes).min(1).values.max() < 1e-6  # every distinct row is a code
        assert torch.unique(codes, dim=0).shape[0] == 10  # jittered copies, not duplicates
        assert report.used == 5
    if method == "em":
        assert report.log_likelihood is not None and math.isfinite(report.log_likelihood)


@pytest.mark.parametrize("method", INIT_METHODS)
def test_single_row_and_tiny_inputs(method: str) -> None:
    x = torch.tensor([[1.0, -2.0, 3.0]])
    codes, report = init_codebook(x, 4, method=method)
    assert codes.shape == (4, 3) and torch.isfinite(codes).all()
    assert report.samples == 1 and report.used == 1
    codes, _ = init_codebook(x.double(), 1, method=method)
    assert codes.dtype == torch.float64 and torch.allclose(codes, x.double(), atol=1e-2)


def test_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(UsageError) as err:
        init_codebook(torch.zeros(4, 2), 2, method="vq")
    for name in INIT_METHODS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("x", "n", "match"),
    [
        (torch.zeros(5), 2, "2-D"),
        (torch.zeros(0, 3), 2, "at least one sample"),
        (torch.tensor([[0.0, float("nan")]]), 1, "finite"),
        (torch.tensor([[0.0, float("inf")]]), 1, "finite"),
        (torch.zeros(4, 2), 0, "positive integer"),
    ],
)
def test_input_validation(x: torch.Tensor, n: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        init_codebook(x, n)


@pytest.mark.parametrize("method", ["em", "kmeans"])
def test_chunked_equals_unchunked(method: str) -> None:
    x, _, _ = blobs(5, 30, 6, spread=4.0, seed=4)
    a, ra = init_codebook(x, 7, method=method, seed=3, chunk_size=7)
    b, rb = init_codebook(x, 7, method=method, seed=3, chunk_size=100_000)
    assert torch.allclose(a, b, atol=1e-5)
    assert ra.iterations == rb.iterations
    assert ra.history == pytest.approx(rb.history, rel=1e-9)
    assert torch.equal(nearest(x, a, chunk_size=7), nearest(x, a))


def test_nearest_and_usage() -> None:
    codes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.tensor([[1.0, 1.0], [9.0, 1.0], [8.0, -1.0], [-1.0, 0.5]])
    assign = nearest(x, codes, chunk_size=3)
    assert assign.tolist() == [0, 1, 1, 0]
    used, perplexity = usage(assign, 3)
    assert used == 2 and perplexity == pytest.approx(2.0)
    assert usage(torch.arange(4), 4) == (4, pytest.approx(4.0))
    assert usage(torch.zeros(5, dtype=torch.long), 4) == (1, pytest.approx(1.0))


def test_report_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    x, _, _ = blobs(3, 20, 4)
    with caplog.at_level(logging.INFO, logger="personadlg.models.codebook.init"):
        _, report = init_codebook(x, 3, method="em")
    lines = [r for r in caplog.records if r.name == "personadlg.models.codebook.init"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "em" in lines[0].getMessage() and "3/3 codes" in lines[0].getMessage()
    d = report.to_dict()
    assert isinstance(report, InitReport)
    assert json.loads(json.dumps(d)) == d
    assert set(d) >= {"method", "iterations", "converged", "log_likelihood", "used", "note"}


def test_large_input_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    x = torch.randn(10_000, 768, generator=torch.Generator().manual_seed(0))
    codes, report = init_codebook(x, 100, method="em", max_iterations=2)
    assert codes.shape == (100, 768) and torch.isfinite(codes).all()
    assert report.iterations <= 2 and report.used > 50
    # nothing printed (stderr may hold a handler an earlier CLI test left on a closed stream)
    assert capsys.readouterr().out == ""
