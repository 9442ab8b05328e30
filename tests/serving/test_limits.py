"""What one request may cost, and how odd bodies are answered: at most `--max-messages` messages,
a long history cut by characters before it is tokenised (off the event loop, so `/health` and
other clients are answered meanwhile), the key checked before the body is read, JSON bodies only,
text fields checked as the CLI checks its inputs, and OpenAI's error JSON even for errors nothing
else caught."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest

from tests.serving.conftest import FORCE

KEY = "s3cret"
AUTH = {"authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "hi! what did you do today?"}]


@pytest.fixture(scope="module")
def keyed(start_server, trained_tiny):
    """A server of the tiny finetune model ("ft") that wants the key KEY; default limits."""
    return start_server([trained_tiny], names=["ft"], api_key=KEY)


def post(server: Any, body: Any = None, *, content: bytes | None = None, **kwargs: Any):
    headers = {**AUTH, **kwargs.pop("headers", {})}
    if content is None:
        content = json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as \\ud800
        headers.setdefault("content-type", "application/json")
    return httpx.post(
        server.url + "/v1/chat/completions",
        content=content,
        headers=headers,
        timeout=kwargs.pop("timeout", 60),
        **kwargs,
    )


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def history(count: int, content: str) -> list[dict[str, str]]:
    """COUNT alternating user / assistant messages of CONTENT, then HI's user message."""
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": content} for i in range(count)
    ]
    return [*turns, *HI]


class HealthWatch:
    """Polls GET /health from a thread while a request is in flight; the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url, self.slowest, self.failures = url, 0.0, 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                ok = httpx.get(self.url + "/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.slowest = max(self.slowest, time.monotonic() - t)
            self.failures += not ok
            self.polls += 1
            self._stop.wait(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_too_many_messages_is_400_at_once_while_others_are_answered(keyed):
    many = history(10_000, "tell me about your bees")  # 10,001 messages
    normal = {"model": "ft", "messages": HI, "temperature": 0, **FORCE}
    with HealthWatch(keyed.url) as health, ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        heavy = pool.submit(post, keyed, {"model": "ft", "messages": many}, timeout=30)
        other = pool.submit(post, keyed, normal, timeout=30)
        r = heavy.result()
        heavy_s = time.monotonic() - started
        answered = other.result()
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == "messages" and err["code"] == "too_many_messages"
    assert "at most 256 messages, got 10001" in err["message"]
    assert heavy_s < 10
    assert answered.status_code == 200 and answered.json()["choices"][0]["message"]["content"]
    assert health.failures == 0 and health.slowest < 2


def test_a_long_history_is_cut_cheaply_and_health_stays_responsive(keyed):
    long = history(199, "tell me about your bees and the honey and the market " * 45)  # 200
    body = {"model": "ft", "messages": long, "temperature": 0, **FORCE}
    assert 400_000 < len(json.dumps(body)) < 600_000
    alone = post(keyed, {"model": "ft", "messages": HI, "temperature": 0, **FORCE}).json()
    with HealthWatch(keyed.url) as health:
        started = time.monotonic()
        r = post(keyed, body, timeout=30)
        took = time.monotonic() - started
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["personadlg"]["context_messages"] == 200
    # no older turn fits the model's 96 prompt tokens: it reads what the newest message alone gives
    assert reply["usage"]["prompt_tokens"] == alone["usage"]["prompt_tokens"] <= 96
    assert reply["choices"][0]["message"] == alone["choices"][0]["message"]
    assert took < 15
    assert health.polls > 0 and health.failures == 0 and health.slowest < 2


@pytest.mark.parametrize(
    "extra",
    [
        {"messages": [{"role": "user", "content": "tell me about your bees " * 40_000}]},
        {"messages": HI, "persona": ["i keep bees and sell the honey. " * 100] * 64},
    ],
    ids=["a 1M-character message", "64 persona sentences of 3,200 characters"],
)
def test_a_huge_last_message_is_413_before_it_is_tokenised(keyed, monkeypatch, extra):
    from personadlg.serving import prompt

    rendered: list[int] = []  # the characters of every example the server renders to tokens
    real_render = prompt.render

    def render(example: Any, *args: Any, **kwargs: Any) -> Any:
        text = [m.content for m in example.context] + list(example.persona)
        rendered.append(sum(map(len, text)))
        return real_render(example, *args, **kwargs)

    monkeypatch.setattr(prompt, "render", render)
    r = post(keyed, {"model": "ft", **extra}, timeout=30)
    assert r.status_code == 413, r.text
    err = error_of(r)
    assert err["param"] == "messages" and err["code"] == "context_length_exceeded"
    assert "characters long" in err["message"] and "16 characters per token" in err["message"]
    assert rendered == []  # refused by its length, nothing tokenised
    monkeypatch.undo()
    # under the character bound, the tokens decide, as before
    r = post(keyed, {"model": "ft", "messages": [{"role": "user", "content": "bees " * 200}]})
    assert r.status_code == 413 and "prompt tokens" in error_of(r)["message"]


@pytest.mark.parametrize(
    "extra, param",
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 100_000}]},
            "messages[0].content",
        ),
        ({"messages": HI, "persona": ["i keep bees."] * 65}, "persona"),
        ({"messages": HI, "profile": {f"k{i}": "v" for i in range(1000)}}, "profile"),
        ({"messages": HI, **{f"x{i}": 0 for i in range(300)}}, None),
    ],
    ids=["100,000 content parts", "65 persona sentences", "1,000 profile fields", "300 fields"],
)
def test_a_list_or_object_of_more_than_64_items_is_400(keyed, extra, param):
    r = post(keyed, {"model": "ft", **extra})
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == param and err["code"] == "too_many_items"
    assert err["message"].startswith(f"{param or 'body'}: expected at most 64 items, got ")


def test_max_messages_is_the_servers_option(start_server, trained_tiny):
    server = start_server([trained_tiny], names=["ft"], max_messages=3)
    assert httpx.get(server.url + "/health").json()["settings"]["max_messages"] == 3
    ok = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "ft", "messages": history(2, "hello"), **FORCE},
        timeout=60,
    )
    assert ok.status_code == 200, ok.text
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "ft", "messages": history(3, "hello")},
        timeout=60,
    )
    assert r.status_code == 400 and error_of(r)["param"] == "messages"
    assert "at most 3 messages, got 4" in error_of(r)["message"]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "hi \ud800 there"}]}, "messages[0].content"),
        (
            {
                "messages": [
                    *HI,
                    {"role": "assistant", "content": "ok"},
                    HI[0] | {"content": "\udc00"},
                ]
            },
            "messages[2].content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\ud83d"}]}]},
            "messages[0].content[0].text",
        ),
        ({"messages": HI, "persona": ["i keep bees .", "i \ud800"]}, "persona[1]"),
        ({"messages": HI, "profile": {"age": "\ud800"}}, "profile.age"),
        ({"messages": HI, "stop": ["\udfff"]}, "stop[0]"),
        ({"messages": HI, "user": "u-\ud800"}, "user"),
    ],
)
def test_a_lone_surrogate_is_400_naming_the_field(keyed, body, param):
    r = post(keyed, {"model": "ft", **body})
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == param and err["code"] == "invalid_unicode"
    assert (
        err["message"].startswith(f"{param}: not valid Unicode")
        and "lone surrogate" in (err["message"])
    )


def test_the_key_is_checked_before_the_body_is_read(keyed):
    broken = b'{"model": "ft", '
    wrong = {"authorization": "Bearer guess", "content-type": "application/json"}
    r = httpx.post(keyed.url + "/v1/chat/completions", content=broken, headers=wrong)
    assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
    r = httpx.post(keyed.url + "/v1/chat/completions", content=b"hello", headers={})
    assert r.status_code == 401
    r = post(keyed, content=broken, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in error_of(r)["message"]


def test_a_body_must_be_json(keyed):
    body = json.dumps({"model": "ft", "messages": HI}).encode()
    r = post(keyed, content=body, headers={"content-type": "text/plain"})
    assert r.status_code == 415, r.text
    err = error_of(r)
    assert err["code"] == "unsupported_media_type" and "application/json" in err["message"]
    assert "text/plain" in err["message"]
    r = post(keyed, content=body, headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200, r.text
    r = post(keyed, content=b'{"model": "ft", "messages": [], "temperature": NaN}')
    assert r.status_code == 400 and "NaN is not a JSON value" in error_of(r)["message"]
    huge = (
        b'{"model": "ft", "messages": [{"role": "user", "content": "hi"}], "profile": {"a": 1e400}}'
    )
    r = post(keyed, content=huge)  # a float beyond 64 bits is no number either (it was inf)
    assert r.status_code == 400 and "1e400 is out of range" in error_of(r)["message"]
    r = post(keyed, content=b'["ft"]')
    assert r.status_code == 400 and "must be a JSON object" in error_of(r)["message"]
    r = post(keyed, content=b" " * (5 * 2**20))
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"


def test_an_unexpected_error_is_500_json_logged_once(keyed, monkeypatch, caplog):
    from personadlg.serving import conditioning

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the server")

    monkeypatch.setattr(conditioning, "echo", broken)
    caplog.set_level(logging.ERROR)
    r = post(keyed, {"model": "ft", "messages": HI, **FORCE})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    err = error_of(r)
    assert err["type"] == "server_error" and err["code"] == "internal_error"
    assert "RuntimeError" in err["message"] and "a bug in the server" not in err["message"]
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert len(tracebacks) == 1, [rec.getMessage() for rec in tracebacks]
    assert "a bug in the server" in caplog.text
    assert "POST /v1/chat/completions" in tracebacks[0].getMessage()
    monkeypatch.undo()
    assert post(keyed, {"model": "ft", "messages": HI, **FORCE}).status_code == 200
