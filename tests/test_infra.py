"""The test infrastructure itself: offline guard and tiny models built from configs."""

from __future__ import annotations

import socket
import threading

import pytest


def test_outbound_connection_fails_the_test():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(RuntimeError, match="tests must stay offline"):
        s.connect(("93.184.216.34", 80))
    s.close()
    with pytest.raises(RuntimeError, match="tests must stay offline"):
        socket.create_connection(("huggingface.co", 443), timeout=1)


def test_loopback_is_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    t = threading.Thread(target=lambda: server.accept()[0].sendall(b"ok"))
    t.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        assert c.recv(2) == b"ok"
    t.join()
    server.close()


def test_hub_download_is_impossible():
    from transformers import AutoConfig

    with pytest.raises(OSError):
        AutoConfig.from_pretrained("gpt2-this-model-does-not-exist-locally")


def test_tiny_tokenizer_round_trips_text(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    text = "The lantern glowed over the harbour, 你好, ünïcode!"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert len(tok) == 1000
    assert {tok.pad_token, tok.eos_token, tok.cls_token, tok.sep_token, tok.mask_token} <= set(
        tok.get_vocab()
    )


@pytest.mark.parametrize(
    "fixture,auto_cls",
    [
        ("tiny_gpt2_dir", "AutoModelForCausalLM"),
        ("tiny_bert_dir", "AutoModel"),
        ("tiny_t5_dir", "AutoModelForSeq2SeqLM"),
    ],
)
def test_tiny_models_load_and_reload_identically(request, fixture, auto_cls):
    import torch
    import transformers
    from transformers import AutoTokenizer

    path = request.getfixturevalue(fixture)
    cls = getattr(transformers, auto_cls)
    tok = AutoTokenizer.from_pretrained(path)
    a, b = cls.from_pretrained(path).eval(), cls.from_pretrained(path).eval()
    assert sum(p.numel() for p in a.parameters()) < 500_000
    batch = tok(
        ["I bake bread on Sundays.", "Pepper sleeps all day."], return_tensors="pt", padding=True
    )
    kwargs = dict(batch)
    kwargs.pop("token_type_ids", None)
    if auto_cls == "AutoModelForSeq2SeqLM":
        kwargs["decoder_input_ids"] = batch["input_ids"][:, :3]
    with torch.no_grad():
        out_a, out_b = a(**kwargs), b(**kwargs)
    first = out_a[0]
    assert torch.isfinite(first).all()
    assert torch.equal(first, out_b[0])
    assert (path / "model.safetensors").is_file()
