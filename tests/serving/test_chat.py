"""`personadlg serve` through the real openai client: replies equal `chat` / `generate` for the same
example and seed, streaming, n, seeds, stop, max_tokens, persona, lora users, cvae attributes,
and what /v1/models and /health say."""

from __future__ import annotations

import asyncio
import json

import httpx2 as httpx
import openai
import pytest

from personadlg.data.schema import Example, Message
from personadlg.generation.chat import ChatSession
from personadlg.generation.generate import decoding_config, generate_file
from personadlg.models.base import as_generations
from personadlg.registry import METHODS
from personadlg.serving.conditioning import choice_seed
from tests.conftest import read_jsonl, write_jsonl
from tests.serving.conftest import FORCE, echo

GREEDY = {"temperature": 0, "extra_body": FORCE}
HI = [{"role": "user", "content": "hi! what did you do today?"}]


def session(loaded_models, name: str, *overrides: str, **kwargs) -> ChatSession:
    cfg, model = loaded_models[name]
    return ChatSession(
        model=model,
        decoding=decoding_config(cfg.generate, list(overrides)),
        method=cfg.method,
        supports=METHODS.get(cfg.method).supports,
        attribute_space=cfg.data.attributes,
        **kwargs,
    )


def text(response) -> str:
    return response.choices[0].message.content


def test_models_and_health_describe_what_is_served(server, client, lora_checkpoint):
    models = {m.id: m.model_extra["personadlg"] for m in client.models.list().data}
    assert list(models) == ["ft", "lora", "cvae"]
    assert models["ft"]["method"] == "finetune" and models["ft"]["supports"] == ["persona"]
    assert models["lora"]["supports"] == ["profile", "user"]
    assert models["lora"]["checkpoint"] == str(lora_checkpoint.resolve())
    users = {u["id"]: u for u in models["lora"]["users"]}
    assert sorted(users) == ["u-006", "u-007"]
    assert users["u-006"]["adapter"] == "u-006" and users["u-006"]["profile"]["occupation"]
    assert models["cvae"]["supports"] == ["attributes"]
    assert models["cvae"]["attributes"]["attitude"] == ["pessimistic", "optimistic"]
    assert models["cvae"]["batched"] is False and models["ft"]["batched"] is True
    assert models["ft"]["max_new_tokens_limit"] == 127
    one = client.models.retrieve("lora")
    assert one.id == "lora" and one.owned_by == "personadlg"
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["models"] == ["ft", "lora", "cvae"]
    assert set(health["batching"]) == {"ft", "lora", "cvae"}
    assert health["settings"] == {
        "batch_window_ms": 20,
        "max_batch": 32,
        "max_messages": 256,
        "shutdown_timeout": 30.0,
    }


def test_greedy_reply_equals_chat_and_generate(client, loaded_models, trained_tiny, tmp_path):
    messages = [
        {"role": "system", "content": "i keep bees. i sell honey at the market."},
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": "hi! how are you?"},
        {"role": "user", "content": "good. what do you do for a living?"},
    ]
    r = client.chat.completions.create(model="ft", messages=messages, **GREEDY)
    e = echo(r)
    assert e["persona"] == ["i keep bees.", "i sell honey at the market."]
    assert e["persona_source"] == "system" and e["decoding"]["greedy"] is True
    assert e["context_messages"] == 3 and r.choices[0].finish_reason in ("stop", "length")

    s = session(
        loaded_models,
        "ft",
        "do_sample=false",
        "min_new_tokens=6",
        "no_repeat_ngram_size=1",
        persona=e["persona"],
    )
    s.history = [Message("user", "hello there"), Message("assistant", "hi! how are you?")]
    assert text(r) == s.reply("good. what do you do for a living?") != ""

    data = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {
                "id": "d1",
                "messages": [*messages[1:], {"role": "assistant", "content": "x"}],
                "persona": e["persona"],
            }
        ],
    )
    generate_file(
        trained_tiny,
        data,
        tmp_path / "g.jsonl",
        overrides=["do_sample=false", "min_new_tokens=6", "no_repeat_ngram_size=1"],
        turns="last",
        loaded=loaded_models["ft"],
    )
    assert read_jsonl(tmp_path / "g.jsonl")[0]["generation"] == text(r)

    # the persona field instead of a system message: the same reply; a system message is then ignored
    r2 = client.chat.completions.create(
        model="ft",
        messages=[{"role": "system", "content": "i am a pilot."}, *messages[1:]],
        temperature=0,
        extra_body={**FORCE, "persona": e["persona"]},
    )
    assert text(r2) == text(r)
    assert echo(r2)["persona_source"] == "request" and "system messages ignored" in " ".join(
        echo(r2)["notes"]
    )


def test_persona_changes_the_reply(client):
    replies = {
        text(
            client.chat.completions.create(
                model="ft", messages=HI, temperature=0, extra_body={**FORCE, "persona": p}
            )
        )
        for p in ([], ["i keep bees ."], ["i am a pilot .", "i fly to paris every week ."])
    }
    assert len(replies) > 1


def test_streaming_chunks_join_to_the_full_reply(client, server):
    args = {"model": "ft", "messages": HI, "temperature": 0.9, "seed": 11, "extra_body": FORCE}
    full = client.chat.completions.create(**args)
    chunks = list(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text(full)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert echo(chunks[0])["seed"] == 11 and echo(chunks[0])["choices"] == echo(full)["choices"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[
        0
    ].finish_reason
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    )
    assert len(chunks) > 4  # role, several word deltas, finish, usage

    raw = httpx.post(
        server.url + "/v1/chat/completions",
        json={
            "model": "ft",
            "messages": HI,
            "stream": True,
            "seed": 11,
            "temperature": 0.9,
            **FORCE,
        },
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [ln for ln in raw.text.split("\n\n") if ln]
    assert all(ev.startswith("data: ") for ev in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"

    async def stream_async() -> str:
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        out = []
        async for c in await aclient.chat.completions.create(**args, stream=True):
            out.append(c.choices[0].delta.content or "")
        await aclient.close()
        return "".join(out)

    assert asyncio.run(stream_async()) == text(full)


def test_n_choices_have_their_own_seeds_and_reproduce(client):
    args = {"model": "ft", "messages": HI, "n": 3, "temperature": 1.0, "extra_body": FORCE}
    a = client.chat.completions.create(**args, seed=5)
    b = client.chat.completions.create(**args, seed=5)
    c = client.chat.completions.create(**args, seed=6)
    texts = [ch.message.content for ch in a.choices]
    assert len(texts) == 3 and [ch.index for ch in a.choices] == [0, 1, 2]
    assert texts == [ch.message.content for ch in b.choices]
    assert texts != [ch.message.content for ch in c.choices]
    assert len(set(texts)) > 1
    seeds = [ch["seed"] for ch in echo(a)["choices"]]
    assert seeds == [choice_seed(5, i) for i in range(3)] and echo(a)["seed_source"] == "request"
    # no seed: a fresh one, reported; sending it back reproduces the reply
    d = client.chat.completions.create(**args)
    assert echo(d)["seed_source"] == "random"
    again = client.chat.completions.create(**args, seed=echo(d)["seed"])
    assert [ch.message.content for ch in again.choices] == [ch.message.content for ch in d.choices]
    # usage: the prompt once, the completions summed
    assert (
        a.usage.prompt_tokens > 0
        and a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    )


def test_max_tokens_and_stop(client):
    full = client.chat.completions.create(
        model="ft",
        messages=HI,
        temperature=0,
        max_tokens=8,
        extra_body={"min_tokens": 8, "no_repeat_ngram_size": 1},
    )
    assert full.choices[0].finish_reason == "length"
    assert 0 < full.usage.completion_tokens <= 8
    short = client.chat.completions.create(
        model="ft",
        messages=HI,
        temperature=0,
        max_tokens=2,
        extra_body={"min_tokens": 2, "no_repeat_ngram_size": 1},
    )
    assert short.usage.completion_tokens <= 2 and text(full).startswith(text(short)[:1])
    assert echo(short)["decoding"]["max_new_tokens"] == 2
    stop = text(full)[len(text(full)) // 2 :][:3]
    cut = client.chat.completions.create(
        model="ft",
        messages=HI,
        temperature=0,
        max_tokens=8,
        stop=[stop, "zzzz"],
        extra_body={"min_tokens": 8, "no_repeat_ngram_size": 1},
    )
    assert text(cut) == text(full)[: text(full).find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens


def test_lora_user_gets_their_adapter_and_unknown_users_the_base(client, loaded_models, server):
    r = client.chat.completions.create(model="lora", messages=HI, user="u-006", **GREEDY)
    e = echo(r)
    assert e["adapter"] == "u-006" and e["profile_source"] == "adapter" and e["profile"]
    s = session(
        loaded_models, "lora", "do_sample=false", "min_new_tokens=6", "no_repeat_ngram_size=1"
    )
    s.set_user("u-006")
    assert text(r) == s.reply(HI[0]["content"])

    unknown = client.chat.completions.create(model="lora", messages=HI, user="u-999", **GREEDY)
    e = echo(unknown)
    assert e["adapter"] is None and "no adapter for user 'u-999'" in e["adapter_fallback"]
    base = session(
        loaded_models, "lora", "do_sample=false", "min_new_tokens=6", "no_repeat_ngram_size=1"
    )
    assert text(unknown) == base.reply(HI[0]["content"])

    # a given profile wins over the adapter's
    own = client.chat.completions.create(
        model="lora",
        messages=HI,
        user="u-006",
        temperature=0,
        extra_body={**FORCE, "profile": {"age": "20s", "occupation": "pilot"}},
    )
    assert echo(own)["profile"] == {"age": "20s", "occupation": "pilot"}
    assert echo(own)["profile_source"] == "request"

    # users mixed in one batch: each reply equals that user's reply alone
    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        rs = await asyncio.gather(
            *(
                aclient.chat.completions.create(model="lora", messages=HI, user=u, **GREEDY)
                for u in ("u-006", "u-007", "u-999", "u-007")
            )
        )
        await aclient.close()
        assert max(echo(x)["batch"]["requests"] for x in rs) > 1
        return [text(x) for x in rs]

    alone = {
        u: text(client.chat.completions.create(model="lora", messages=HI, user=u, **GREEDY))
        for u in ("u-006", "u-007", "u-999")
    }
    assert asyncio.run(together()) == [
        alone["u-006"],
        alone["u-007"],
        alone["u-999"],
        alone["u-007"],
    ]


def test_cvae_attributes_steer_the_reply(client, loaded_models):
    cfg, model = loaded_models["cvae"]
    combos = [
        None,
        {"attitude": "pessimistic"},
        {"attitude": "optimistic"},
        {
            "attitude": "optimistic",
            "language_style": "lyrical",
            "mental_characteristics": "critical",
        },
    ]
    # long sampled replies: the tiny 12-step decoder reacts to its latent only a little
    long = {"min_tokens": 24, "no_repeat_ngram_size": 1}
    replies = []
    for target in combos:
        r = client.chat.completions.create(
            model="cvae",
            messages=HI,
            seed=5,
            temperature=1.0,
            max_tokens=24,
            extra_body={**long, **({"attributes": target} if target else {})},
        )
        e = echo(r)
        assert e["attributes"] == target and e["batch"] == {"requests": 1, "examples": 1}
        assert (e["decoding"]["latent"]["nfe"] > 0) == (target is not None)  # the ODE moved z
        replies.append(text(r))
    assert len(set(replies)) > 1

    # the reply is what the model generates alone for that example, target and seed
    decoding = decoding_config(
        cfg.generate,
        ["min_new_tokens=24", "max_new_tokens=24", "no_repeat_ngram_size=1", "temperature=1.0"],
    )
    ex = Example(
        id="x", dialogue_id="x", context=[Message("user", HI[0]["content"])], attributes=combos[2]
    )
    direct = as_generations(
        model.generate([ex], decoding=decoding, seeds=[choice_seed(5, 0)], targets=[combos[2]])
    )
    assert direct.texts == [replies[2]]


@pytest.mark.parametrize(
    "attributes, expected",
    [
        (
            {"attitude": "optimistc"},
            "attributes.attitude: unknown aspect 'optimistc' (did you mean 'optimistic'?)",
        ),
        (
            {"atitude": "optimistic"},
            "attributes: unknown attribute 'atitude' (did you mean 'attitude'?)",
        ),
    ],
)
def test_undeclared_attributes_are_a_400_naming_the_field(client, attributes, expected):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="cvae", messages=HI, extra_body={"attributes": attributes}
        )
    err = info.value.body
    assert info.value.status_code == 400 and err["param"] == "attributes"
    assert err["message"].startswith(expected)


def test_fields_a_model_does_not_use_are_noted(client):
    r = client.chat.completions.create(
        model="cvae", messages=HI, user="u-006", extra_body={**FORCE, "persona": ["i keep bees ."]}
    )
    notes = " ".join(echo(r)["notes"])
    assert "does not use the persona" in notes and "does not use the user id" in notes
