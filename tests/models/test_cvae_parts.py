"""The cvae method's pieces, checked against hand-computed values and reference formulas:
KL with free bits, the beta schedules, the gap loss, the energy gradient and the ODE, the latent
injection into a Hugging Face decoder, and attribute-homogeneous batches."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from personadlg.models.cvae.config import ODEConfig
from personadlg.models.cvae.losses import (
    beta_at,
    free_bits_kl,
    gap_loss,
    gaussian_kl,
    mutual_information,
)
from personadlg.models.cvae.ode import FusedHeads, guide, log_likelihood, log_likelihood_grad
from personadlg.models.prefix import cache_kwargs
from personadlg.training.data import epoch_batches

# -- losses -----------------------------------------------------------------------------------------


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    lv_q, lv_p = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    ours = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu_q, torch.exp(0.5 * lv_q)),
        torch.distributions.Normal(mu_p, torch.exp(0.5 * lv_p)),
    )
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_q, lv_q), torch.zeros(4, 6), atol=1e-6)


def test_free_bits_counts_only_dimensions_above_the_threshold():
    kl = torch.tensor([[0.5, 1.0, 2.0], [0.95, 0.1, 0.0]])
    # row 0: 1.0 + 2.0; row 1: 0.95 → mean (3.0 + 0.95) / 2
    assert float(free_bits_kl(kl, 0.9)) == pytest.approx(1.975)
    assert float(free_bits_kl(kl, 0.0)) == pytest.approx((3.5 + 1.05) / 2)


def test_cyclic_step_schedule_is_the_references_zero_one_cycle():
    values = [
        beta_at(s, schedule="cyclic_step", period=40, zero_steps=8, ramp_steps=16)
        for s in range(81)
    ]
    assert values[:8] == [0.0] * 8 and values[8:40] == [1.0] * 32
    assert values[40:48] == [0.0] * 8 and values[48] == 1.0 and values[80] == 0.0


def test_cyclic_linear_schedule_ramps_then_holds():
    b = [
        beta_at(s, schedule="cyclic_linear", period=10, zero_steps=2, ramp_steps=4)
        for s in range(12)
    ]
    assert b == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert beta_at(123, schedule="constant", period=10, zero_steps=2, ramp_steps=4) == 1.0


def test_gap_loss_pulls_batch_centres_towards_the_other_attributes_cache():
    z = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]])
    groups = torch.tensor([[True, False], [True, False], [False, True]])
    centres = torch.tensor([[9.0, 9.0], [1.0, 1.0]])
    seen = torch.tensor([True, True])
    loss, new = gap_loss(z, groups, centres, seen, sign="pull", margin=1.0)
    # attribute 0: centre (2, 1) vs cache[1] (1, 1) → MSE 0.5; attribute 1: (0, 4) vs (9, 9) → (81+25)/2
    assert float(loss) == pytest.approx(0.5 + 53.0)
    assert torch.equal(new[0], torch.tensor([2.0, 1.0])) and torch.equal(new[1], z[2])
    push, _ = gap_loss(z, groups, centres, seen, sign="push", margin=1.0)
    assert float(push) == pytest.approx(-(0.5 + 1.0))  # the far pair is clamped at the margin
    unseen, _ = gap_loss(z, groups, centres, torch.tensor([False, False]), sign="pull", margin=1.0)
    assert float(unseen) == 0.0


def test_mutual_information_is_higher_when_means_differ():
    g = torch.Generator().manual_seed(0)
    logvar = torch.full((64, 4), -2.0)
    same = mutual_information(torch.zeros(64, 4), logvar, torch.Generator().manual_seed(1))
    apart = mutual_information(
        torch.randn(64, 4, generator=g) * 3, logvar, torch.Generator().manual_seed(1)
    )
    assert float(apart) > float(same) + 2.0
    assert float(apart) <= math.log(64) + 1e-4  # I(x; z) <= log N for a batch mixture


# -- energy and ODE ----------------------------------------------------------------------------------


def _heads(d=6, sizes=(2, 3, 2), seed=0):
    torch.manual_seed(seed)
    return [nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, k)) for k in sizes]


@pytest.mark.parametrize("sizes", [(2, 3, 2), (2, 2, 2)])  # per-head and one reshaped softmax
def test_fused_gradient_equals_autograd_of_the_energy(sizes):
    heads = _heads(sizes=sizes)
    z = torch.randn(20, 6)
    targets = torch.randint(-1, 2, (20, 3))
    weights = torch.tensor([1.0, 0.5, 2.0])
    with torch.no_grad():
        fused = FusedHeads(heads, targets, weights).grad(z)
    assert torch.allclose(fused, log_likelihood_grad(z, heads, targets, weights), atol=1e-6)


def test_energy_gradient_is_per_example_not_scaled_by_the_batch():
    """The reference summed a (B, B) broadcast, multiplying every gradient by B; ours is per row."""
    heads = _heads()
    z = torch.randn(16, 6)
    targets = torch.randint(0, 2, (16, 3))
    w = torch.ones(3)
    batch = log_likelihood_grad(z, heads, targets, w)
    alone = torch.cat(
        [log_likelihood_grad(z[i : i + 1], heads, targets[i : i + 1], w) for i in range(16)]
    )
    assert torch.allclose(batch, alone, atol=1e-6)


def test_ode_moves_latents_towards_their_own_targets():
    heads = _heads()
    z0 = torch.randn(12, 6)
    targets = torch.tensor([[0, 1, -1], [1, 2, 0], [-1, -1, -1]] * 4)
    w = torch.ones(3)
    res = guide(z0, heads, targets, ODEConfig(guidance_scale=1.0))
    before, after = log_likelihood(z0, heads, targets, w), log_likelihood(res.z, heads, targets, w)
    active = (targets >= 0).any(1)
    assert bool((after[active] > before[active]).all())
    assert torch.equal(res.z[~active], z0[~active])  # no target: left alone
    assert torch.isfinite(res.z).all() and res.nfe > 0
    again = guide(z0, heads, targets, ODEConfig(guidance_scale=1.0))
    assert torch.equal(res.z, again.z) and res.nfe == again.nfe  # deterministic


def test_stronger_guidance_reaches_higher_likelihood_and_zero_scale_is_a_no_op():
    heads = _heads()
    z0 = torch.randn(8, 6)
    targets = torch.zeros(8, 3, dtype=torch.long)
    w = torch.ones(3)
    lls = [
        log_likelihood(guide(z0, heads, targets, ODEConfig(guidance_scale=s)).z, heads, targets, w)
        .detach()
        .mean()
        .item()
        for s in (0.1, 1.0, 4.0)
    ]
    assert lls[0] < lls[1] < lls[2]
    off = guide(z0, heads, targets, ODEConfig(guidance_scale=0.0))
    assert torch.equal(off.z, z0) and off.nfe == 0


def test_batching_changes_adaptive_steps_not_the_outcome_and_fixed_grids_not_at_all():
    heads = _heads()
    z0 = torch.randn(10, 6)
    targets = torch.randint(0, 2, (10, 3))
    w = torch.ones(3)
    cfg = ODEConfig(guidance_scale=8.0)
    whole = guide(z0, heads, targets, cfg).z
    split = torch.cat([guide(z0[i : i + 1], heads, targets[i : i + 1], cfg).z for i in range(10)])
    with torch.no_grad():
        start = log_likelihood(z0, heads, targets, w)
        ll_whole = log_likelihood(whole, heads, targets, w)
        ll_split = log_likelihood(split, heads, targets, w)
    # solved in a batch or alone, every latent gains about as much likelihood under its targets
    assert float((ll_whole - start).mean()) > 0.8
    assert torch.allclose(ll_whole, ll_split, atol=0.1), (ll_whole, ll_split)
    rk4 = ODEConfig(guidance_scale=2.0, solver="rk4", step_size=0.05)
    whole = guide(z0, heads, targets, rk4).z
    split = torch.cat([guide(z0[i : i + 1], heads, targets[i : i + 1], rk4).z for i in range(10)])
    assert torch.allclose(whole, split, atol=1e-5)


def test_ode_weights_silence_an_attribute():
    heads = _heads()
    z0 = torch.randn(6, 6)
    only_first = torch.tensor([[1, -1, -1]] * 6)
    both = torch.tensor([[1, 2, -1]] * 6)
    cfg = ODEConfig(guidance_scale=1.0, solver="rk4", step_size=0.1)
    a = guide(z0, heads, only_first, cfg).z
    b = guide(z0, heads, both, cfg, weights=torch.tensor([1.0, 0.0, 1.0])).z
    assert torch.allclose(a, b, atol=1e-6)


def test_too_many_function_evaluations_is_a_clear_error():
    from personadlg.errors import PersonadlgError

    heads = _heads()
    with pytest.raises(PersonadlgError, match="max_nfe"):
        guide(torch.randn(4, 6), heads, torch.zeros(4, 3, dtype=torch.long), ODEConfig(max_nfe=3))


# -- latent injection ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=64,
        n_layer=2,
        n_head=2,
        n_embd=16,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    lm = GPT2LMHeadModel(cfg).eval()
    return lm


def test_injection_uses_the_models_own_cache_and_reaches_every_position(tiny_lm):
    from personadlg.models.cvae.inject import LatentInjection

    inj = LatentInjection(tiny_lm, 4)
    nn.init.normal_(inj.latent_embed.weight, std=0.5)
    nn.init.normal_(inj.latent_proj.weight, std=0.5)
    z = torch.randn(3, 4)
    cache = inj.prefix(z)
    assert cache.get_seq_length() == 1
    ids = torch.randint(3, 64, (3, 5))
    mask = torch.ones(3, 6, dtype=torch.long)
    pos = torch.arange(1, 6).expand(3, 5)

    def logits(zz, use_offset=True):
        with inj.offset(zz) if use_offset else torch.no_grad():
            return tiny_lm(
                input_ids=ids,
                attention_mask=mask,
                **cache_kwargs(tiny_lm, inj.prefix(zz)),
                position_ids=pos,
            ).logits

    with torch.no_grad():
        base = logits(z)
        other = logits(z + 1.0)
        no_offset = logits(z, use_offset=False)
    assert (base - other).abs().amax(dim=-1).min() > 1e-4  # z changes every position
    assert not torch.allclose(base, no_offset)  # the embedding offset is applied
    assert inj._offset is None  # and removed after the block


def test_latent_decoding_equals_a_step_by_step_loop_without_cache(tiny_lm):
    """`generate` with the prefix cache, left padding and the offset hook gives exactly the tokens
    of a naive loop that re-runs the whole sequence with a fresh prefix at every step."""
    from personadlg.config import GenerateConfig
    from personadlg.models.cvae.inject import LatentInjection
    from personadlg.models.decoding import generate_ids

    inj = LatentInjection(tiny_lm, 4)
    torch.manual_seed(1)
    nn.init.normal_(inj.latent_embed.weight, std=1.0)
    nn.init.normal_(inj.latent_proj.weight, std=1.0)
    z = torch.randn(3, 4)
    # [prefix slot, left padding, BOS, prompt]
    ids = torch.tensor([[0, 0, 0, 1, 7, 8], [0, 0, 1, 9, 10, 11], [0, 1, 12, 13, 14, 15]])
    mask = torch.tensor([[1, 0, 0, 1, 1, 1], [1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    steps = 6
    with torch.no_grad(), inj.offset(z):
        new = generate_ids(
            tiny_lm,
            ids,
            mask,
            cfg=GenerateConfig(max_new_tokens=steps, min_new_tokens=steps),
            seeds=[0, 0, 0],
            pad_token_id=0,
            eos_token_id=2,
            **cache_kwargs(tiny_lm, inj.prefix(z)),
        )
    cur, m = ids.clone(), mask.clone()
    naive = []
    with torch.no_grad(), inj.offset(z):
        for _ in range(steps):
            pos = (m.cumsum(-1) - 1).clamp(min=0).masked_fill(m == 0, 1)
            out = tiny_lm(
                input_ids=cur[:, 1:],
                attention_mask=m,
                **cache_kwargs(tiny_lm, inj.prefix(z)),
                position_ids=pos[:, 1:],
            )
            logits = out.logits[:, -1]
            logits[:, 2] = -float("inf")  # min_new_tokens: no EOS
            nxt = logits.argmax(-1)
            naive.append(nxt)
            cur = torch.cat([cur, nxt[:, None]], 1)
            m = torch.cat([m, torch.ones(3, 1, dtype=m.dtype)], 1)
    assert new.tolist() == torch.stack(naive, 1).tolist()
    beams = generate_ids(
        tiny_lm,
        ids,
        mask,
        cfg=GenerateConfig(max_new_tokens=4, num_beams=3),
        seeds=[0, 0, 0],
        pad_token_id=0,
        eos_token_id=2,
        **cache_kwargs(tiny_lm, inj.prefix(z, repeat=3)),
    )
    assert beams.shape[0] == 3


# -- attribute-homogeneous batches ------------------------------------------------------------------


def test_group_batches_are_homogeneous_cover_and_replay():
    groups = [i % 3 for i in range(50)]
    kw = dict(epoch=2, seed=5, batch_size=4, groups=groups)
    batches = epoch_batches(50, **kw)
    assert all(len({groups[i] for i in b}) == 1 for b in batches)
    assert all(len(b) == 4 for b in batches)
    # each group of 16 or 17 loses fewer than one batch
    assert len(batches) == sum(n // 4 for n in (17, 17, 16))
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    assert epoch_batches(50, **kw) == batches  # same (seed, epoch) → same batches
    assert epoch_batches(50, **{**kw, "epoch": 3}) != batches
    # two processes split each global batch; both halves come from the same group
    r0 = epoch_batches(50, epoch=2, seed=5, batch_size=2, world_size=2, rank=0, groups=groups)
    r1 = epoch_batches(50, epoch=2, seed=5, batch_size=2, world_size=2, rank=1, groups=groups)
    assert [a + b for a, b in zip(r0, r1)] == batches
    assert epoch_batches(6, epoch=0, seed=0, batch_size=2) != []  # groups are optional
