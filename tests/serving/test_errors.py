"""Errors in OpenAI's JSON shape with the right status: 400 naming the field (never FastAPI's 422),
404 with a did-you-mean, 401, 413, 503 while loading; a bad request never fails its neighbours."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.serving.conftest import FORCE, echo, wait_ready

HI = [{"role": "user", "content": "hi! what did you do today?"}]


def post(server, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60, **kwargs)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    "body, param, words",
    [
        ({"model": "ft"}, "messages", "field required"),
        ({"messages": HI}, "model", "field required"),
        ({"model": "ft", "messages": []}, "messages", "at least 1"),
        (
            {"model": "ft", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
            "'user'",
        ),
        (
            {"model": "ft", "messages": [*HI, {"role": "assistant", "content": "ok"}]},
            "messages[1].role",
            "must be the user's",
        ),
        (
            {"model": "ft", "messages": [{"role": "user", "content": "  "}]},
            "messages[0].content",
            "empty",
        ),
        ({"model": "ft", "messages": HI, "n": 0}, "n", "greater than or equal to 1"),
        (
            {"model": "ft", "messages": HI, "temperature": 5},
            "temperature",
            "less than or equal to 2",
        ),
        ({"model": "ft", "messages": HI, "top_p": 0}, "top_p", "greater than 0"),
        ({"model": "ft", "messages": HI, "max_tokens": 500}, "max_tokens", "at most 127"),
        (
            {"model": "ft", "messages": HI, "max_tokens": 4, "min_tokens": 9},
            "min_tokens",
            "at most max_tokens",
        ),
        ({"model": "ft", "messages": HI, "stop": ["ok", ""]}, "stop", "non-empty"),
        ({"model": "ft", "messages": HI, "seed": -1}, "seed", "greater than or equal to 0"),
        (
            {"model": "ft", "messages": HI, "seed": 2**63},
            "seed",
            "less than or equal to 9223372036854775807",
        ),
        (
            {"model": "ft", "messages": HI, "profile": {"age": {"x": 1}}},
            "profile.age",
            "a string, a number",
        ),
        ({"model": "ft", "messages": HI, "persona": "i keep bees"}, "persona", "valid list"),
        (
            {"model": "ft", "messages": HI, "attributes": {"attitude": 3}},
            "attributes.attitude",
            "valid string",
        ),
        (
            {"model": "ft", "messages": HI, "tools": [{"type": "function"}]},
            "tools",
            "not supported",
        ),
        ({"model": "ft", "messages": HI, "logprobs": True}, "logprobs", "not supported"),
        ({"model": "ft", "messages": HI, "extra_body": {"persona": []}}, "extra_body", "top level"),
        (
            {"model": "ft", "messages": HI, "response_format": {"type": "json_object"}},
            "response_format",
            "only type 'text'",
        ),
        (
            {"model": "ft", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].type",
            "only text",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(server, body, param, words):
    r = post(server, body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert err["message"].startswith(param) and words in err["message"], err["message"]


def test_invalid_json_and_unknown_routes(server):
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=b'{"model": "ft", ',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "not valid JSON" in error_of(r)["message"]
    r = httpx.get(server.url + "/v1/nothing")
    assert r.status_code == 404 and error_of(r)["message"] == "no such endpoint: GET /v1/nothing"


def test_text_content_parts_are_joined(client):
    parts = [{"type": "text", "text": "hi! what did you "}, {"type": "text", "text": "do today?"}]
    a = client.chat.completions.create(
        model="ft", messages=[{"role": "user", "content": parts}], temperature=0, extra_body=FORCE
    )
    b = client.chat.completions.create(model="ft", messages=HI, temperature=0, extra_body=FORCE)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_unknown_model_is_404_with_did_you_mean(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="loraa", messages=HI)
    err = info.value.body
    assert err["param"] == "model" and err["code"] == "model_not_found"
    assert "(did you mean 'lora'?)" in err["message"] and "ft, lora, cvae" in err["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_a_prompt_too_long_for_the_positions_is_413(client, server):
    long = " ".join(["tell me about your bees and the honey"] * 40)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="ft", messages=[{"role": "user", "content": long}])
    assert info.value.status_code == 413
    err = info.value.body
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    assert "room for 96 (model.max_length 96)" in err["message"]
    # a long history is fine: its oldest turns are dropped, as in training and generate
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "tell me about your bees"}
        for i in range(40)
    ]
    r = client.chat.completions.create(model="ft", messages=[*history, *HI], extra_body=FORCE)
    assert r.usage.prompt_tokens <= 96 and echo(r)["context_messages"] == 41


def test_wrong_or_missing_api_key_is_401(start_server, trained_tiny, monkeypatch):
    server = start_server([trained_tiny], names=["ft"], api_key="s3cret")
    good = openai.OpenAI(base_url=server.base_url, api_key="s3cret", max_retries=0)
    assert good.chat.completions.create(model="ft", messages=HI).choices
    assert [m.id for m in good.models.list().data] == ["ft"]
    bad = openai.OpenAI(base_url=server.base_url, api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="ft", messages=HI)
    assert info.value.body["code"] == "invalid_api_key" and "s3cret" not in str(info.value.body)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert (
        httpx.post(
            server.url + "/v1/chat/completions", json={"model": "ft", "messages": HI}
        ).status_code
        == 401
    )
    assert httpx.get(server.url + "/health").status_code == 200  # open: for load balancers


def test_503_while_loading_then_ready(start_server, trained_tiny):
    from personadlg.serving.app import default_loader

    release = threading.Event()
    load = default_loader()

    def slow_load(path, cfg):
        assert release.wait(60)
        return load(path, cfg)

    server = start_server([trained_tiny], names=["ft"], loader=slow_load, ready=False)
    r = httpx.get(server.url + "/health")
    assert r.status_code == 503 and r.json() == {
        "status": "loading",
        "models": [],
        "loading": ["ft"],
    }
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="ft", messages=HI)
    assert info.value.status_code == 503 and info.value.body["code"] == "model_loading"
    assert info.value.response.headers["retry-after"] == "1"
    assert httpx.get(server.url + "/v1/models").status_code == 503
    release.set()
    assert wait_ready(server.url)["models"] == ["ft"]
    assert client.chat.completions.create(model="ft", messages=HI).choices


class Flaky:
    """A model whose generate fails for any batch holding the message BOOM."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, examples, **kwargs):
        if any("BOOM" in ex.context[-1].content for ex in examples):
            raise RuntimeError("the model fell over")
        return self.inner.generate(examples, **kwargs)


def test_a_failing_request_does_not_fail_its_batch(start_server, trained_tiny):
    from personadlg.serving.app import default_loader

    load = default_loader()
    server = start_server(
        [trained_tiny], names=["ft"], loader=lambda p, c: Flaky(load(p, c)), batch_window_ms=200
    )
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    words = ["bees", "honey", "the market", "BOOM", "flowers", "rain"]
    alone = {
        w: client.chat.completions.create(
            model="ft",
            messages=[{"role": "user", "content": f"tell me about {w}"}],
            seed=1,
            temperature=0.9,
            extra_body=FORCE,
        )
        .choices[0]
        .message.content
        for w in words
        if w != "BOOM"
    }

    async def together() -> list[Any]:
        aclient = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        out = await asyncio.gather(
            *(
                aclient.chat.completions.create(
                    model="ft",
                    messages=[{"role": "user", "content": f"tell me about {w}"}],
                    seed=1,
                    temperature=0.9,
                    extra_body=FORCE,
                )
                for w in words
            ),
            return_exceptions=True,
        )
        await aclient.close()
        return out

    results = dict(zip(words, asyncio.run(together())))
    boom = results.pop("BOOM")
    assert isinstance(boom, openai.InternalServerError) and boom.status_code == 500
    assert "the model fell over" in boom.body["message"]
    assert {w: r.choices[0].message.content for w, r in results.items()} == alone
    stats = httpx.get(server.url + "/health").json()["batching"]["ft"]
    assert stats["retries"] >= 1 and stats["failed_requests"] == 1
