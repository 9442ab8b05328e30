"""An encoder checkpoint (all-MiniLM-L6-v2's layout; a tiny stand-in here) warm-started as a causal
decoder: the encoder's weights kept, the LM head tied to the embeddings, causal attention, greedy
with and without the cache alike; its tokenizer made a decoder's; WordPiece text decoded with English
spacing; the GPU knobs (dtype, attn_implementation, gradient checkpointing) applied; the
reply-only loss equal to the model's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from personadlg.models.backbone import (
    enable_gradient_checkpointing,
    is_encoder_only,
    load_pretrained,
    load_tokenizer,
)
from personadlg.models.detokenize import decode, english_spacing, is_wordpiece, truecase
from personadlg.models.lm_loss import IGNORE, reply_aligned, reply_loss
from personadlg.models.tokenizer import causal_tokenizer
from tests.conftest import DEMO


def _decoder(path: Path):
    torch.manual_seed(0)
    return load_pretrained(path, arch="causal").eval()


def test_an_encoder_checkpoint_loads_as_a_causal_decoder_with_its_weights(tiny_minilm_dir):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    assert is_encoder_only(AutoConfig.from_pretrained(tiny_minilm_dir))
    lm = _decoder(tiny_minilm_dir)
    assert type(lm).__name__ == "BertLMHeadModel" and lm.config.is_decoder
    assert not lm.config.add_cross_attention
    # the LM head's output matrix is the word embedding matrix (one tensor)
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    saved = load_file(str(tiny_minilm_dir / "model.safetensors"))
    ours = lm.state_dict()
    body = [k for k in saved if not k.startswith("pooler.")]
    assert body and all(torch.equal(ours["bert." + k], saved[k]) for k in body)
    # saved as a decoder, it loads as one: no second warm start, identical logits
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    with torch.no_grad():
        before = lm(input_ids=ids).logits
    out = tiny_minilm_dir.parent / "decoder-saved"
    lm.save_pretrained(out)
    again = load_pretrained(out, arch="causal").eval()
    assert not is_encoder_only(again.config)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, before)


def test_loading_reports_only_surprises(tiny_minilm_dir, tmp_path, caplog):
    """The new LM head and an unused pooler are expected (one info line, no transformers report);
    a checkpoint that lacks body weights is a warning naming them."""
    import logging

    from safetensors.torch import load_file, save_file

    with caplog.at_level(logging.INFO):
        load_pretrained(tiny_minilm_dir, arch="causal")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not warnings, [r.getMessage() for r in warnings]
    assert any("new head tensors" in r.getMessage() for r in caplog.records)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_minilm_dir.iterdir():
        if f.name != "model.safetensors":
            (broken / f.name).write_bytes(f.read_bytes())
    state = load_file(str(tiny_minilm_dir / "model.safetensors"))
    state.pop("encoder.layer.1.output.dense.weight")
    save_file(state, str(broken / "model.safetensors"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_pretrained(broken, arch="causal")
    assert any("bert.encoder.layer.1.output.dense.weight" in r.getMessage() for r in caplog.records)


def test_the_warm_started_decoder_is_causal(tiny_minilm_dir):
    lm = _decoder(tiny_minilm_dir)
    a = torch.tensor([[2, 50, 51, 52, 53, 54]])
    b = a.clone()
    b[0, 4:] = torch.tensor([90, 91])  # change only the last two tokens
    with torch.no_grad():
        la, lb = lm(input_ids=a).logits, lm(input_ids=b).logits
    torch.testing.assert_close(la[:, :4], lb[:, :4])  # earlier positions never see later tokens
    assert not torch.allclose(la[:, 4:], lb[:, 4:])


def test_greedy_with_and_without_the_cache_agree(tiny_minilm_dir):
    tok = causal_tokenizer(load_tokenizer(tiny_minilm_dir))
    lm = _decoder(tiny_minilm_dir)
    prompts = ["User: how was work?\nAssistant:", "User: do you like the sea?\nAssistant:"]
    enc = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):  # left padding, as generation pads
        ids[i, width - len(e) :], mask[i, width - len(e) :] = torch.tensor(e), 1
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        cached = lm.generate(input_ids=ids, attention_mask=mask, use_cache=True, **kw)
        plain = lm.generate(input_ids=ids, attention_mask=mask, use_cache=False, **kw)
    assert torch.equal(cached, plain)


def test_an_encoder_tokenizer_becomes_a_decoders(tiny_minilm_dir, tmp_path):
    enc = load_tokenizer(tiny_minilm_dir)
    assert enc.eos_token is None and enc("hi there")["input_ids"][-1] == enc.sep_token_id
    tok = causal_tokenizer(enc)
    assert tok.bos_token == "[CLS]" and tok.eos_token == "[SEP]" and tok.pad_token == "[PAD]"
    ids = tok("Hi there")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids  # BOS only, no end token
    assert ids[1:] == enc("hi there", add_special_tokens=False)["input_ids"]  # still uncased
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again("Hi there")["input_ids"] == ids and again.eos_token == "[SEP]"
    assert causal_tokenizer(again) is again  # a decoder's tokenizer is left as it is


@pytest.mark.parametrize(
    ("spaced", "text"),
    [
        ("i ' m fine , thanks !", "i'm fine, thanks!"),
        ("don ' t you think so ?", "don't you think so?"),
        ("we ' ll see ; maybe .", "we'll see; maybe."),
        ("at five o ' clock ( sharp )", "at five o'clock (sharp)"),
        ("my e - mail , at 5 : 30 or 2 . 5 hours", "my e-mail, at 5:30 or 2.5 hours"),
        ('she said " hello " to me', 'she said "hello" to me'),
        ("it costs $ 5 , 000 at 7 p. m.", "it costs $5,000 at 7 p.m."),
        ("well ... ok", "well... ok"),
        ("##ing along , ##ly", "ing along, ly"),
        ("the kids ' s ' s toys", "the kids's's toys"),  # every apostrophe, overlapping ones too
    ],
)
def test_english_spacing_reattaches_what_wordpiece_spaces_out(spaced, text):
    assert english_spacing(spaced) == text


def test_truecase_capitalises_sentences_and_i():
    assert truecase("i'm here. so am i! what now? i guess so") == (
        "I'm here. So am I! What now? I guess so"
    )


def test_wordpiece_decoding_gives_back_the_demo_text(tiny_minilm_dir):
    """Encode → decode → the lowercased original, for nearly every demo reply (the rest: a spaced
    dash " - " comes back as a hyphen)."""
    tok = causal_tokenizer(load_tokenizer(tiny_minilm_dir))
    assert is_wordpiece(tok)
    replies = [
        m["content"]
        for line in DEMO.read_text(encoding="utf-8").splitlines()
        for m in json.loads(line)["messages"]
        if m["role"] == "assistant"
    ]
    ids = [
        tok(" " + r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in replies
    ]
    same = sum(decode(tok, i) == r.lower() for i, r in zip(ids, replies))
    assert same / len(replies) > 0.9, same / len(replies)
    assert all("##" not in decode(tok, i) and "[SEP]" not in decode(tok, i) for i in ids[:50])
    cased = sum(decode(tok, i, truecase_text=True) == r for i, r in zip(ids, replies))
    assert cased > 0.5 * len(replies)  # proper names stay lowercase


def test_byte_level_decoding_is_left_exact(tiny_tokenizer_dir):
    tok = load_tokenizer(tiny_tokenizer_dir)
    text = "i ' m , spaced  as   written"
    assert not is_wordpiece(tok)
    assert decode(tok, tok(text)["input_ids"]) == text


# -- the reply-only loss --------------------------------------------------------------------------


def _features(tok, pairs):
    feats = []
    for prompt, reply in pairs:
        p = tok(prompt)["input_ids"]
        r = tok(" " + reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        feats.append({"input_ids": p + r, "labels": [IGNORE] * len(p) + r})
    return feats


PAIRS = [
    ("User: hi\nAssistant:", "hello there, how are you?"),
    ("Persona: i keep bees.\nUser: what do you do all day?\nAssistant:", "bees."),
    ("User: ok\nAssistant:", "fine by me, i think"),
]


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_the_reply_loss_equals_the_models_own_loss(arch, tiny_gpt2_dir, tiny_minilm_dir):
    from personadlg.models.collate import pad_sequences

    path = tiny_gpt2_dir if arch == "gpt2" else tiny_minilm_dir
    tok = causal_tokenizer(load_tokenizer(path))
    lm = _decoder(path)
    feats = _features(tok, PAIRS)
    batch = reply_aligned(feats, tok.pad_token_id)
    firsts = [(row != IGNORE).nonzero()[0].item() for row in batch["labels"]]
    assert len(set(firsts)) == 1  # every reply starts in the same column
    assert batch["position_ids"][batch["attention_mask"].bool()].min() == 0
    ids, mask = pad_sequences([f["input_ids"] for f in feats], tok.pad_token_id)
    labels, _ = pad_sequences([f["labels"] for f in feats], IGNORE)
    with torch.no_grad():
        theirs = lm(input_ids=ids, attention_mask=mask, labels=labels).loss
        ours = reply_loss(lm, **batch)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


# -- the knobs -------------------------------------------------------------------------------------


def test_dtype_and_attention_kernel_are_applied(tiny_minilm_dir):
    lm = load_pretrained(
        tiny_minilm_dir, arch="causal", dtype="bfloat16", attn_implementation="eager"
    )
    assert next(lm.parameters()).dtype == torch.bfloat16
    assert lm.config._attn_implementation == "eager"


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_gradient_checkpointing_keeps_a_prefix_and_the_gradients(
    arch, tiny_gpt2_dir, tiny_minilm_dir
):
    """With a read-only key/value prefix, checkpointed training gives the loss and the gradients of
    plain training (a growing cache would be dropped or written twice by the replay)."""
    from personadlg.models.prefix import (
        cache_geometry,
        cache_kwargs,
        prefix_cache,
        teacher_forced_inputs,
    )

    path = tiny_gpt2_dir if arch == "gpt2" else tiny_minilm_dir
    results = []
    for checkpointing in (False, True):
        lm = _decoder(path)
        lm.config.hidden_dropout_prob = lm.config.attention_probs_dropout_prob = 0.0
        for m in lm.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        lm.train()
        if checkpointing:
            assert enable_gradient_checkpointing(lm) == 2  # its two layers
        layers, kv, hd = cache_geometry(lm.config)
        g = torch.Generator().manual_seed(0)
        keys = torch.randn(2, layers, kv, 2, hd, generator=g, requires_grad=True)
        ids = torch.randint(5, 300, (2, 7), generator=g)
        mask = torch.ones_like(ids)
        cache = prefix_cache(keys, keys, lm.config, read_only=True)
        out = lm(**teacher_forced_inputs(ids, mask, 2), **cache_kwargs(lm, cache), use_cache=True)
        loss = out.logits.float().logsumexp(-1).mean()
        calls: list[int] = []
        mlp = next(m for n, m in lm.named_modules() if n.endswith(("0.mlp", "0.intermediate")))
        inner = mlp.forward
        mlp.forward = lambda *a, _calls=calls, _inner=inner, **k: (  # hooks miss replays
            _calls.append(1) or _inner(*a, **k)
        )
        loss.backward()
        results.append((loss.detach(), keys.grad.clone(), lm.get_input_embeddings().weight.grad))
        assert len(calls) == (1 if checkpointing else 0)  # the backward pass ran the layer again
    (l0, k0, e0), (l1, k1, e1) = results
    torch.testing.assert_close(l1, l0)
    torch.testing.assert_close(k1, k0)  # the prefix got the same gradient: it was not dropped
    torch.testing.assert_close(e1, e0)
