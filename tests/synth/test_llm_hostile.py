"""The LLM engine (`personadlg.llm`) against hostile servers, replies, recipes and files: every
bad value is bounded, ignored, retried or refused with a clear message, never a hang or a crash."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from personadlg.config import build_config
from personadlg.data.lock import exclusive_lock
from personadlg.data.profile.config import FREE
from personadlg.data.profile.validate import parse_profile
from personadlg.data.synth.parse import parse_reply
from personadlg.errors import ConfigError, DataError, UsageError
from personadlg.llm.client import api_key
from personadlg.llm.config import ClientConfig, LimitsConfig
from personadlg.llm.cost import price
from personadlg.llm.journal import Journal
from personadlg.llm.parse import ParseError, json_candidates
from personadlg.llm.retries import _retry_after, backoff
from personadlg.llm.runner import Stats, run_jobs
from personadlg.llm.template import load_template, parse_template
from tests.synth.test_engine import Job, Recipe, jobs

KEY = "sk-hostile-NEVER-PRINT-ME-7777"


def recipe(base_url: str, *, concurrency: int = 1, max_cost: float = 0.0, **client: Any) -> Recipe:
    options: dict[str, Any] = {"max_retries": 1, "backoff_base": 0.0, "backoff_max": 0.0}
    options |= client
    return Recipe(
        client=ClientConfig(base_url=base_url, api_key_env=None, json_mode=False, **options),
        limits=LimitsConfig(concurrency=concurrency, max_cost=max_cost),
        prices={"gpt-4o-mini": {"input": 1.0, "output": 1.0}},
    )


def text_of(job: Job, reply: Any, attempts: int) -> dict[str, Any]:
    if reply.text is None:
        raise ParseError("empty reply")
    return {"text": reply.text}


def run(cfg: Recipe, todo: list[Job], sink: Any, **options: Any) -> Stats:
    stats = Stats(total=len(todo))
    options.setdefault("accept", text_of)
    asyncio.run(run_jobs(cfg, iter(todo), sink, stats, what="test", **options))
    return stats


class ListSink:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def append(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)


def serve_body(server: Any, content: Any, usage: Any = None) -> None:
    """Make SERVER answer every chat request with CONTENT as the message content (any JSON value)
    and USAGE as the usage (default: small and honest)."""

    def completion(body: dict[str, Any], fault: str | None, n: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage if usage is not None else {"prompt_tokens": 3, "completion_tokens": 2},
        }

    server.completion = completion


# -- 1, 2: Retry-After -------------------------------------------------------------------------------


def test_a_server_cannot_impose_an_unbounded_wait():
    cfg = ClientConfig(backoff_base=0.0, backoff_max=1.0)
    for headers in ({"retry-after": "99999999"}, {"retry-after-ms": "99999999999"}):
        assert backoff(1, cfg, _retry_after(headers)) == 60.0  # clamped, not obeyed
    assert backoff(1, ClientConfig(backoff_max=300.0), 1e9) == 300.0  # a longer own maximum wins
    assert backoff(1, cfg, _retry_after({"retry-after": "2"})) == 2.0  # a sane wait is kept
    for headers in (
        {"retry-after": "1e400"},
        {"retry-after-ms": "inf"},
        {"retry-after-ms": "nan"},
        {"retry-after": "-5"},
        {"retry-after": "Wed, 99 Foo 2015 07:28:00 GMT"},
        {"retry-after": "Fri, 31 Dec 99999 23:59:59 GMT"},
    ):
        assert _retry_after(headers) is None, headers  # ignored: the normal back-off applies
    assert backoff(1, cfg, float("inf")) <= 1.0 and backoff(1, cfg, -3.0) <= 1.0
    assert backoff(10_000, cfg) <= 1.5  # no overflow after many attempts


def test_a_malformed_retry_after_date_is_ignored_not_fatal(fake_openai):
    server = fake_openai(content_for=lambda prompt: "fine")
    server.script.append("429:Wed, 99 Foo 2015 07:28:00 GMT")
    sink = ListSink()
    stats = run(recipe(server.base_url), jobs(1), sink)
    assert stats.ok == 1 and stats.retries == {"rate_limit": 1}
    assert len(server.chat_requests()) == 2


# -- 3: a slowly dripping reply ----------------------------------------------------------------------


class DripServer:
    """Answers every request with headers at once, then its body one byte every INTERVAL seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        body = json.dumps({"choices": [{"message": {"content": "late"}, "finish_reason": "stop"}]})
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.requests += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                )
                for byte in body.encode():
                    time.sleep(self.interval)
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer()
    yield server
    server.close()


def test_a_slowly_dripping_reply_times_out_as_a_whole(drip):
    sink = ListSink()
    start = time.monotonic()
    stats = run(recipe(drip.base_url, timeout=1.0, max_retries=1), jobs(1), sink)
    took = time.monotonic() - start
    assert [(e["status"], e["class"], e["attempts"]) for e in sink.entries] == [
        ("failed", "timeout", 2)
    ]
    assert stats.retries == {"timeout": 1} and drip.requests == 2
    assert took < 5  # two attempts of ~1 s, not the ~6 s the whole drip takes


# -- 4, 6: replies that are not text -----------------------------------------------------------------


@pytest.mark.parametrize("content", [{"text": "hi"}, ["hi"], 42, True])
def test_a_content_that_is_not_text_is_a_malformed_reply(fake_openai, content):
    server = fake_openai()
    serve_body(server, content)
    sink = ListSink()
    stats = run(recipe(server.base_url), jobs(2), sink)
    assert sorted((e["unit"], e["status"], e["class"]) for e in sink.entries) == [
        ("k0", "failed", "malformed_response"),
        ("k1", "failed", "malformed_response"),
    ]
    assert stats.retries == {"malformed_response": 2} and len(server.chat_requests()) == 4


def test_lone_surrogates_never_reach_the_journal(fake_openai, tmp_path):
    server = fake_openai()
    serve_body(server, "half a pair: \ud800")  # sent as the JSON escape \ud800
    with Journal(tmp_path, what="t", lock=exclusive_lock) as journal:
        run(recipe(server.base_url), jobs(1), journal)
    # inside the JSON the reply holds: not a dialogue, not a profile
    escaped = json.dumps({"messages": [{"role": "user", "content": "x\ud800"}]})
    assert "\\ud800" in escaped and list(json_candidates(escaped)) == []
    with pytest.raises(ParseError):
        parse_profile(json.dumps({"age": "\udfff"}), {"age": FREE})
    # an error message holding one is still journalled (the surrogate replaced)
    server.error_response = lambda fault: (
        400,
        {"error": {"message": "bad \ud800 input", "type": "invalid_request_error"}},
        {},
    )
    server.script.append("400")
    with Journal(tmp_path, what="t", lock=exclusive_lock) as journal:
        run(recipe(server.base_url), [Job("e", "e", ({"role": "user", "content": "x"},))], journal)
    with Journal(tmp_path, what="t", lock=exclusive_lock) as journal:  # reopens cleanly
        final = journal.final(["k0", "e"])
    assert final["k0"]["class"] == "malformed_response"
    assert final["e"]["class"] == "http_400" and "bad ? input" in final["e"]["error"]


# -- 5, 7: JSON a reply may hold ---------------------------------------------------------------------


def test_json_nested_too_deep_is_unparseable_not_a_crash():
    deep = "[" * 100_000 + "]" * 100_000
    assert list(json_candidates(deep)) == []
    assert list(json_candidates('{"a": ' + deep + "}")) == []
    with pytest.raises(ParseError):
        parse_reply(deep)


@pytest.mark.parametrize(
    "text",
    [
        '{"age": "20s", "occupation": NaN}',
        '{"age": "20s", "occupation": Infinity}',
        '{"age": "20s", "occupation": -Infinity}',
        '{"age": "20s", "occupation": 1e400}',
    ],
)
def test_json_that_is_not_strict_json_is_refused(text):
    assert list(json_candidates(text)) == []
    assert list(json_candidates("```json\n" + text + "\n```")) == []
    with pytest.raises(ParseError):
        parse_profile(text, {"age": FREE, "occupation": FREE})


def test_strict_json_is_still_read():
    text = 'Here: {"age": "20s", "n": 1.5e3, "big": 12345678901234567890, "e": "\\ud83d\\ude00"}'
    assert next(json_candidates(text)) == {
        "age": "20s",
        "n": 1500.0,
        "big": 12345678901234567890,
        "e": "😀",
    }


# -- 8: usage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -(10**9), "completion_tokens": -5},
        {"prompt_tokens": 1e300, "completion_tokens": 2},
        {"prompt_tokens": 3, "completion_tokens": float("inf")},
        {"prompt_tokens": 2.5, "completion_tokens": "12"},
        {"prompt_tokens": 10**12, "completion_tokens": True},
    ],
)
def test_unbelievable_usage_is_charged_as_an_estimate(fake_openai, usage, caplog):
    server = fake_openai()
    serve_body(server, "fine", usage)
    sink = ListSink()
    with caplog.at_level(logging.WARNING, logger="personadlg.llm.runner"):
        stats = run(recipe(server.base_url, params={"max_tokens": 50}), jobs(1), sink)
    assert stats.ok == 1  # the reply itself is kept
    assert 0 < stats.prompt_tokens <= 100 and 0 < stats.completion_tokens <= 50
    assert 0 < stats.cost < 1e-3 and sink.entries[0]["cost"] == stats.cost
    assert "unbelievable usage" in caplog.text


def test_negative_usage_cannot_hold_the_budget_off(fake_openai):
    server = fake_openai()
    serve_body(server, "fine", {"prompt_tokens": -(10**9), "completion_tokens": 0})
    sink = ListSink()
    cfg = recipe(server.base_url, max_cost=1e-6, params={"max_tokens": 50})
    stats = run(cfg, jobs(5), sink)
    assert stats.stopped and stats.ok == 1 and len(server.chat_requests()) == 1
    assert price(cfg, -(10**9), 5) >= 0


# -- 9: concurrency ----------------------------------------------------------------------------------


def test_concurrency_is_bounded_and_no_idle_workers_are_made(fake_openai, monkeypatch):
    with pytest.raises(ConfigError, match=r"limits\.concurrency: expected 1 to 1024"):
        LimitsConfig(concurrency=100_000_000)
    with pytest.raises(ConfigError, match=r"limits\.concurrency"):
        build_config(LimitsConfig, {"concurrency": "1e8"}, path="limits")
    server = fake_openai(content_for=lambda prompt: "fine")
    made: list[str] = []
    create_task = asyncio.create_task

    def counting(coro: Any, **kw: Any) -> Any:
        made.append(getattr(coro, "__qualname__", ""))
        return create_task(coro, **kw)

    monkeypatch.setattr(asyncio, "create_task", counting)
    stats = run(recipe(server.base_url, concurrency=1024), jobs(3), ListSink())
    assert stats.ok == 3 and sum(name.endswith("worker") for name in made) == 3


# -- 10: client settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "message"),
    [
        (
            {"params": {"max_tokens": "abc"}},
            "client.params.max_tokens: expected a positive integer",
        ),
        ({"params": {"max_tokens": "1e400"}}, "client.params.max_tokens: expected a positive"),
        ({"params": {"max_tokens": float("nan")}}, "client.params.max_tokens: expected a positive"),
        ({"params": {"max_tokens": 0}}, "client.params.max_tokens: expected a positive integer"),
        ({"params": {"max_tokens": 1.5}}, "client.params.max_tokens: expected a positive integer"),
        ({"params": {"max_completion_tokens": -3}}, "client.params.max_completion_tokens"),
        ({"params": {"temperature": "hot"}}, "client.params.temperature: expected a finite number"),
        ({"params": {"temperature": float("inf")}}, "client.params.temperature: expected a finite"),
        (
            {"params": {"temperature": 2.5}},
            "client.params.temperature: expected a number from 0 to 2",
        ),
        ({"params": {"top_p": 1.5}}, "client.params.top_p: expected a number from 0 to 1"),
        ({"params": {"presence_penalty": float("nan")}}, "client.params.presence_penalty"),
        ({"params": {"logit_bias": {"50256": float("-inf")}}}, "client.params.logit_bias.50256"),
        ({"model": ""}, "client.model: expected a model name"),
        ({"model": "  "}, "client.model: expected a model name"),
        ({"base_url": ""}, "client.base_url: expected an http:// or https:// URL"),
        ({"base_url": "ftp://example.com/v1"}, "client.base_url: expected an http"),
        ({"base_url": "localhost:8000/v1"}, "client.base_url: expected an http"),
        ({"base_url": "http://127.0.0.1:99999/v1"}, "client.base_url: expected an http"),
        ({"base_url": "http://127.0.0.1:abc/v1"}, "client.base_url: expected an http"),
        ({"base_url": "http:///v1"}, "client.base_url: expected an http"),
    ],
)
def test_bad_client_settings_are_refused_at_load(client, message):
    with pytest.raises(ConfigError) as err:
        build_config(ClientConfig, client, path="client")
    assert message in str(err.value)


def test_good_client_settings_load_and_numeric_text_is_converted():
    cfg = build_config(
        ClientConfig,
        {
            "base_url": "https://api.example.com:8443/v1",
            "params": {"max_tokens": "1e3", "temperature": "2e-1", "seed": 3, "stop": ["\n"]},
        },
        path="client",
    )
    assert cfg.params == {"max_tokens": 1000, "temperature": 0.2, "seed": 3, "stop": ["\n"]}
    assert build_config(ClientConfig, {"params": {"max_tokens": None}}, path="client")


def test_a_bad_max_tokens_is_exit_2_before_any_request(cli, fake_openai, tmp_path):
    server = fake_openai()
    r = cli(
        "synth",
        "synth/miracle",
        f"client.base_url={server.base_url}",
        "client.api_key_env=null",
        f"output={tmp_path / 'out.jsonl'}",
        "max_topics=2",
        "client.params.max_tokens=1e400",
    )
    assert r.code == 2 and "client.params.max_tokens: expected a positive integer" in r.stderr
    assert "Traceback" not in r.stderr and server.log == []


@pytest.mark.parametrize("key", [KEY + "\n", " " + KEY, KEY[:5] + "\x1b" + KEY[5:], KEY + "é"])
def test_an_api_key_with_stray_characters_is_refused_without_showing_it(monkeypatch, key):
    monkeypatch.setenv("PDLG_HOSTILE_KEY", key)
    with pytest.raises(UsageError, match="PDLG_HOSTILE_KEY") as err:
        api_key(ClientConfig(api_key_env="PDLG_HOSTILE_KEY"))
    assert KEY[:12] not in str(err.value)
    monkeypatch.setenv("PDLG_HOSTILE_KEY", KEY)
    assert api_key(ClientConfig(api_key_env="PDLG_HOSTILE_KEY")) == KEY


# -- 11: templates -----------------------------------------------------------------------------------


def test_template_files_that_are_not_templates_are_refused_clearly(tmp_path):
    default = tmp_path / "default.txt"
    bad = tmp_path / "t.txt"
    bad.write_bytes(b"Hello $name,\n\xff\xfe caf\xe9\n")
    with pytest.raises(UsageError, match=rf"template {bad}: not valid UTF-8 .*line 2"):
        load_template(bad, default=default, placeholders=["name"])
    bad.write_text("Hello $name,\nit costs $5.\n", encoding="utf-8")
    with pytest.raises(UsageError) as err:
        load_template(bad, default=default, placeholders=["name"])
    assert f"template {bad}: invalid placeholder at line 2, col 10" in str(err.value)
    assert "write $$ for a literal $" in str(err.value)
    bad.write_text("Hello $name, pay in $", encoding="utf-8")
    with pytest.raises(UsageError, match="invalid placeholder at line 1, col 21"):
        load_template(bad, default=default, placeholders=["name"])
    for empty in ("", " \n\t\n"):
        bad.write_text(empty, encoding="utf-8")
        with pytest.raises(UsageError, match=rf"template {bad}: the template is empty"):
            load_template(bad, default=default, placeholders=["name"])
    with pytest.raises(ConfigError, match=r"prompt\.system: invalid placeholder at line 1, col 6"):
        parse_template("Cost $.", where="prompt.system", placeholders=[], error=ConfigError)
    template, _ = parse_template("$name costs $$5", where="x", placeholders=["name"])
    assert template.substitute(name="It") == "It costs $5"


# -- 12: a corrupted journal -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"status": "ok", "unit": "b", "na', "not valid JSON"),
        ('{"unit": "b", "name": "b"}', "no known 'status'"),
        ('{"status": "ok", "name": "b"}', "a 'ok' entry without its 'unit'"),
        ('{"status": "batch"}', "a 'batch' entry without its 'id'"),
        ("[1, 2]", "not a JSON object"),
        ('"ok"', "not a JSON object"),
    ],
)
def test_a_corrupted_journal_line_names_its_file_and_line(tmp_path, line, problem):
    path = tmp_path / "journal.jsonl"
    good = json.dumps({"status": "ok", "unit": "a", "name": "a"})
    path.write_text(f"{good}\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        Journal(tmp_path, what="t", lock=exclusive_lock)
    assert str(err.value).startswith(f"{path}:2: a corrupted journal entry: {problem}")
    assert "remove this line" in str(err.value) and err.value.exit_code == 2
    path.write_bytes(good.encode() + b"\n\xff\xfe\n" + good.encode() + b"\n")
    with pytest.raises(DataError, match=r"journal\.jsonl:2: .*not valid UTF-8"):
        Journal(tmp_path, what="t", lock=exclusive_lock)
    path.write_text(f"{good}\n{good}\n", encoding="utf-8")  # the lock was released: it reopens
    with Journal(tmp_path, what="t", lock=exclusive_lock) as journal:
        assert journal.state == {"a": "ok"}


def test_a_corrupted_journal_is_exit_2_from_the_cli(cli, fake_openai, tmp_path):
    server = fake_openai()
    args = (
        "synth",
        "synth/miracle",
        f"client.base_url={server.base_url}",
        "client.api_key_env=null",
        f"output={tmp_path / 'out.jsonl'}",
        "max_topics=2",
    )
    assert cli(*args).code == 0
    journal = tmp_path / "out.jsonl.cache" / "journal.jsonl"
    lines = journal.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 2
    lines[0] = lines[0][:-7]
    journal.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = cli(*args)
    assert r.code == 2 and f"{journal}:1: a corrupted journal entry: not valid JSON" in r.stderr
    assert "Traceback" not in r.stderr


# -- 13: retries counted -----------------------------------------------------------------------------


def test_only_real_retries_are_counted(fake_openai):
    server = fake_openai(content_for=lambda prompt: "fine")
    server.script.extend(["500", "500", "500"])
    sink = ListSink()
    stats = run(recipe(server.base_url, max_retries=2), jobs(1), sink)
    assert sink.entries[0]["attempts"] == 3 and stats.retries == {"server_error": 2}

    def refuse(job: Job, reply: Any, attempts: int) -> dict[str, Any]:
        raise ParseError("never good enough")

    stats = run(recipe(server.base_url, max_retries=2), jobs(1), sink, accept=refuse)
    assert sink.entries[1]["attempts"] == 3 and stats.retries == {"unparseable": 2}
    stats = run(recipe(server.base_url, max_retries=5), jobs(1), sink, accept=refuse, max_invalid=1)
    assert sink.entries[2]["attempts"] == 2 and stats.retries == {"unparseable": 1}
