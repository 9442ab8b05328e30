"""A codebook (MORPHEUS) checkpoint behind the API: the persona is inferred from the messages —
the reply carries the chosen codes and equals `chat`'s reply to the same conversation."""

from __future__ import annotations

import pytest

from personadlg.data.schema import Message
from personadlg.generation.chat import ChatSession
from personadlg.generation.generate import decoding_config
from personadlg.registry import METHODS
from personadlg.training.checkpoint import load_checkpoint
from tests.serving.conftest import FORCE, echo


@pytest.fixture(scope="module")
def codebook_checkpoint(tmp_path_factory, small_data):
    from personadlg.training.trainer import train
    from tests.models.test_codebook import codebook_recipe

    out = tmp_path_factory.mktemp("serve-codebook") / "codebook-tiny"
    return train(codebook_recipe(small_data, out)).final_dir


def test_codebook_replies_carry_the_inferred_codes_and_equal_chat(
    start_server, codebook_checkpoint
):
    import openai

    server = start_server([codebook_checkpoint], names=["cb"])
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=60)
    (card,) = client.models.list().data
    assert card.model_extra["personadlg"]["supports"] == ["history"]
    messages = [
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "hi! i just came back from the bakery."},
        {"role": "user", "content": "what do you bake?"},
    ]
    r = client.chat.completions.create(
        model="cb",
        messages=messages,
        temperature=0,
        extra_body={**FORCE, "persona": ["i love the sea ."]},
    )
    e = echo(r)
    codes = e["choices"][0]["codes"]
    assert e["method"] == "codebook" and isinstance(codes, list) and codes
    assert all(isinstance(c, int) for c in codes)
    assert any("persona" in n for n in e["notes"])  # the persona sent is not what the model uses

    cfg, model = load_checkpoint(codebook_checkpoint)
    s = ChatSession(
        model=model,
        decoding=decoding_config(
            cfg.generate, ["do_sample=false", "min_new_tokens=6", "no_repeat_ngram_size=1"]
        ),
        method=cfg.method,
        supports=METHODS.get(cfg.method).supports,
    )
    s.history = [Message("user", "hello there"), Message("assistant", messages[1]["content"])]
    assert r.choices[0].message.content == s.reply("what do you bake?")
    assert s.last_record["codes"] == codes
