"""Sampling's top-k / top-p keep the tokens transformers' warpers keep, with the same probabilities,
whether the nucleus fits in the sorted candidates or reaches past them (exact fallback)."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

from personadlg.models import decoding
from personadlg.models.decoding import PerRowSampler, nucleus


def _hf(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    warpers = LogitsProcessorList()
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return torch.softmax(warpers(None, scores.clone()), dim=-1)


def _ours(scores: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    rows = nucleus(torch.softmax(scores, -1), top_k=top_k, top_p=top_p)
    dense = torch.zeros_like(scores)
    for i, (weights, ids) in enumerate(rows):
        dense[i].scatter_add_(0, ids, weights)
    return dense / dense.sum(-1, keepdim=True)


@pytest.mark.parametrize(("top_k", "top_p"), [(0, 0.9), (50, 1.0), (50, 0.9), (0, 0.5), (7, 0.3)])
@pytest.mark.parametrize("sharpness", [0.5, 8.0])  # flat (wide nucleus) and peaked distributions
def test_the_nucleus_equals_transformers_warpers(top_k, top_p, sharpness, monkeypatch):
    monkeypatch.setattr(
        decoding, "CANDIDATES", 64
    )  # some rows' nucleus reaches past the candidates
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(6, 3000, generator=g) * sharpness
    torch.testing.assert_close(_ours(scores, top_k, top_p), _hf(scores, top_k, top_p))


def test_the_sampler_draws_only_kept_tokens_per_row_and_reproducibly():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 500, generator=g) * 3
    kept = _hf(scores, 0, 0.8) > 0
    for seed in range(20):
        out = PerRowSampler([seed, seed + 1, seed + 2], top_p=0.8)(None, scores)
        choice = out.argmax(-1)
        assert all(kept[i, c] for i, c in enumerate(choice.tolist()))
        again = PerRowSampler([seed, seed + 1, seed + 2], top_p=0.8)(None, scores).argmax(-1)
        assert torch.equal(choice, again)


def test_a_rows_draw_does_not_depend_on_the_rest_of_the_batch(monkeypatch):
    """The same row and seed give the same token whether its batch-mates have narrow or wide nuclei
    (per-example seeds must make a reply independent of the batch it is generated in)."""
    monkeypatch.setattr(decoding, "CANDIDATES", 64)
    g = torch.Generator().manual_seed(2)
    peaked = torch.randn(1, 3000, generator=g) * 8  # its nucleus fits in the candidates
    flat = torch.randn(3, 3000, generator=g) * 0.1  # theirs do not
    for seed in range(10):
        alone = PerRowSampler([seed], top_p=0.9)(None, peaked).argmax(-1)
        mixed = PerRowSampler([seed, 1, 2, 3], top_p=0.9)(None, torch.cat([peaked, flat])).argmax(
            -1
        )
        assert mixed[0] == alone[0]
