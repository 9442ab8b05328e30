"""The key/value prefix helper: teacher-forced logits with a P-position prefix equal step-by-step
decoding with the same prefix, for GPT-2, a Llama-style model (grouped key/value heads) and a BERT
run as a decoder (all-MiniLM-L6-v2's architecture, `is_decoder=True`)."""

from __future__ import annotations

import pytest
import torch

from personadlg.models.prefix import (
    cache_geometry,
    cache_kwargs,
    generation_inputs,
    positions_after_prefix,
    prefix_cache,
    teacher_forced_inputs,
)


def _tiny(arch: str):
    from transformers import AutoModelForCausalLM, BertConfig, GPT2Config, LlamaConfig

    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=97, n_layer=2, n_head=2, n_embd=32, n_positions=64)
    elif arch == "bert":
        cfg = BertConfig(
            vocab_size=97,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            is_decoder=True,
        )
    else:
        cfg = LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
@pytest.mark.parametrize("prefix_len", [1, 3])
def test_teacher_forcing_with_a_prefix_equals_step_by_step_decoding(arch, prefix_len):
    model = _tiny(arch)
    layers, kv, hd = cache_geometry(model.config)
    if arch == "llama":
        assert kv == 2 and hd == 8  # grouped key/value heads
    b, t = 2, 6
    keys = torch.randn(b, layers, kv, prefix_len, hd)
    values = torch.randn(b, layers, kv, prefix_len, hd)
    ids = torch.randint(1, 97, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    with torch.no_grad():
        forced = model(
            **teacher_forced_inputs(ids, mask, prefix_len),
            **cache_kwargs(model, prefix_cache(keys, values, model.config)),
        ).logits
        # the read-only prefix of training gives the same logits and stays P positions long
        frozen = prefix_cache(keys, values, model.config, read_only=True)
        again = model(
            **teacher_forced_inputs(ids, mask, prefix_len), **cache_kwargs(model, frozen)
        ).logits
        torch.testing.assert_close(again, forced)
        assert frozen.get_seq_length() == prefix_len
        cache = prefix_cache(keys, values, model.config)
        steps = []
        for i in range(t):
            full = torch.ones(b, prefix_len + i + 1, dtype=torch.long)
            out = model(
                input_ids=ids[:, i : i + 1],
                attention_mask=full,
                position_ids=positions_after_prefix(full, prefix_len)[:, -1:],
                **cache_kwargs(model, cache),
            )
            steps.append(out.logits[:, -1])
    torch.testing.assert_close(forced, torch.stack(steps, dim=1), rtol=1e-5, atol=1e-5)
    # the prefix matters: other keys and values, other logits
    with torch.no_grad():
        other = model(
            **teacher_forced_inputs(ids, mask, prefix_len),
            **cache_kwargs(model, prefix_cache(keys + 1, values - 1, model.config)),
        ).logits
    assert not torch.allclose(forced, other)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_generate_with_a_prefix_follows_the_teacher_forced_argmax(arch):
    model = _tiny(arch)
    layers, kv, hd = cache_geometry(model.config)
    p, b = 2, 2
    keys, values = torch.randn(b, layers, kv, p, hd), torch.randn(b, layers, kv, p, hd)
    prompt = torch.randint(1, 97, (b, 3))
    mask = torch.ones_like(prompt)
    inputs = generation_inputs(prompt, mask, p, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            **cache_kwargs(model, prefix_cache(keys, values, model.config)),
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
        new = out[:, inputs["input_ids"].shape[1] :]
        seq = torch.cat([prompt, new], dim=1)
        forced = model(
            **teacher_forced_inputs(seq, torch.ones_like(seq), p),
            **cache_kwargs(model, prefix_cache(keys, values, model.config)),
        ).logits
    expected = forced[:, prompt.shape[1] - 1 : -1].argmax(-1)
    assert torch.equal(new, expected)


def test_the_prefix_shape_is_checked():
    model = _tiny("gpt2")
    with pytest.raises(ValueError, match="prefix keys/values must be"):
        prefix_cache(torch.zeros(1, 2, 2, 1, 5), torch.zeros(1, 2, 2, 1, 5), model.config)
