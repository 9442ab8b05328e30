"""synth against a real local HTTP server that speaks the OpenAI API and injects faults."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest

from personadlg.data.schema import Dialogue
from personadlg.data.synth import load_synth_recipe
from personadlg.data.synth.config import TurnsConfig
from personadlg.data.synth.parse import check_dialogue, parse_reply
from personadlg.data.synth.runner import synthesize
from personadlg.llm.limits import SlidingWindowLimiter
from personadlg.llm.parse import ParseError
from personadlg.llm.retries import FatalAPIError
from tests.conftest import read_jsonl

KEY = "sk-test-NEVER-WRITE-ME-4242"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("PDLG_SYNTH_KEY", KEY)


def recipe(server, out: Path, *extra: str):
    return load_synth_recipe(
        "synth/miracle",
        [
            f"client.base_url={server.base_url}",
            "client.api_key_env=PDLG_SYNTH_KEY",
            f"output={out}",
            "max_topics=3",
            "client.timeout=1",
            "client.backoff_base=0.05",
            "client.max_retries=3",
            "limits.concurrency=4",
            *extra,
        ],
    )


def assert_key_never_written(*dirs: Path) -> None:
    for d in dirs:
        for p in Path(d).rglob("*"):
            if p.is_file():
                assert KEY.encode() not in p.read_bytes(), f"the API key leaked into {p}"


# -- parsing -----------------------------------------------------------------------------------------

GOOD = [{"role": "user", "content": "hi?"}, {"role": "assistant", "content": "hello."}] * 4


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"messages": GOOD}),
        json.dumps(GOOD),
        "Sure!\n```json\n" + json.dumps({"messages": GOOD}) + "\n```\nEnjoy.",
        "\n".join(
            ("PersonA: " if m["role"] == "user" else "PersonB: ") + m["content"] for m in GOOD
        ),
        "\n".join(
            ("[PersonA]: " if m["role"] == "user" else "[PersonB]: ") + m["content"] for m in GOOD
        ),
        "\n".join(
            ("User: " if m["role"] == "user" else "Assistant: ") + m["content"] for m in GOOD
        ),
        "\n".join(("A: " if m["role"] == "user" else "B: ") + m["content"] for m in GOOD),
    ],
)
def test_every_accepted_reply_shape(text):
    msgs = parse_reply(text)
    assert msgs == GOOD
    check_dialogue(msgs, TurnsConfig(4, 6))


def test_transcript_continuation_lines_join_their_turn():
    msgs = parse_reply("User: hi\nthere?\nAssistant: hello,\nfriend.")
    assert msgs == [
        {"role": "user", "content": "hi there?"},
        {"role": "assistant", "content": "hello, friend."},
    ]


@pytest.mark.parametrize(
    "text,why",
    [
        ("", "empty reply"),
        ("just some prose", "neither JSON messages nor a speaker-tagged transcript"),
        (json.dumps({"messages": [{"role": "narrator", "content": "x"}]}), "unknown role"),
    ],
)
def test_unparseable(text, why):
    with pytest.raises(ParseError, match=why):
        parse_reply(text)


@pytest.mark.parametrize(
    "msgs,why",
    [
        (GOOD[1:], "must start with the user"),
        (GOOD[:-1], "must end with the assistant"),
        (GOOD[:4], "2 exchanges, expected 4-6"),
        ([GOOD[0], GOOD[0], *GOOD[1:]], "two user messages in a row"),
        ([{"role": "user", "content": ""}, *GOOD[1:]], "is empty"),
    ],
)
def test_dialogue_checks(msgs, why):
    with pytest.raises(ParseError, match=why):
        check_dialogue(msgs, TurnsConfig(4, 6))


def test_sliding_window_limiter_holds_over_any_window():
    async def run():
        lim = SlidingWindowLimiter(3, window=0.3)
        stamps = []
        for _ in range(7):
            await lim.acquire()
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(run())
    for t in stamps:
        assert sum(1 for u in stamps if t <= u < t + 0.3 - 1e-3) <= 3, (
            "more than 3 requests inside one window"
        )
    assert stamps[-1] - stamps[0] >= 0.6


# -- runs against the server --------------------------------------------------------------------------


def test_run_writes_valid_records_and_never_the_key(server, tmp_path):
    cfg = recipe(server, tmp_path / "out.jsonl")
    s = synthesize(cfg)
    assert (
        s["units"] == 18
        and s["ok_now"] == 18
        and s["output_dialogues"] == 18
        and s["failed_units"] == 0
    )
    recs = read_jsonl(tmp_path / "out.jsonl")
    for r in recs:
        d = Dialogue.from_dict(r)
        assert len(d.attributes) == 1 and d.topic and d.messages[0].role == "user"
        assert (
            r["meta"]["model"] == "gpt-4o-mini"
            and r["meta"]["template"].startswith("sha256:")
            and r["meta"]["attempts"] == 1
        )
        assert (
            r["meta"]["request_id"].startswith("req-")
            and r["meta"]["usage"]["completion_tokens"] > 0
        )
    assert len({r["id"] for r in recs}) == 18
    assert {json.dumps(r["attributes"]) for r in recs} == {
        json.dumps({a: x}) for a, xs in cfg.attributes.items() for x in xs
    }
    reqs = server.chat_requests()
    assert len(reqs) == 18 and all(r["auth"] == f"Bearer {KEY}" for r in reqs)
    assert (
        reqs[0]["body"]["response_format"] == {"type": "json_object"}
        and reqs[0]["body"]["max_tokens"] == 1200
    )
    assert_key_never_written(tmp_path)
    again = synthesize(cfg)  # everything done: nothing is requested again
    assert (
        again["requests"] == 0 and again["already_done"] == 18 and len(server.chat_requests()) == 18
    )


def test_faults_are_retried(server, tmp_path):
    server.script.extend(
        [
            "429:0.3",
            "500",
            "503",
            "drop",
            "malformed",
            "truncated",
            "unparseable",
            "slow:2",
            "transcript",
            "fenced",
        ]
    )
    s = synthesize(
        recipe(server, tmp_path / "out.jsonl", "client.max_retries=12")
    )  # even a unit that draws every fault succeeds
    assert s["ok_now"] == 18 and s["failed_units"] == 0
    assert s["retries"] == {
        "rate_limit": 1,
        "server_error": 2,
        "connection": 1,
        "malformed_response": 1,
        "unparseable": 2,
        "timeout": 1,
    }
    reqs = server.chat_requests()
    assert len(reqs) == 18 + 8
    first = reqs[0]  # the 429 said Retry-After 0.3: the same prompt came back no sooner
    retry = next(r for r in reqs[1:] if r["prompt"] == first["prompt"])
    assert retry["time"] - first["time"] >= 0.3


def test_persistent_failures_end_in_the_failure_file_exactly_once(server, tmp_path):
    cursed = "learning to knit"  # the first bundled topic
    server.fault_for = lambda prompt: "unparseable" if cursed in prompt else None
    cfg = recipe(server, tmp_path / "out.jsonl")
    s = synthesize(cfg)
    assert s["ok_now"] == 12 and s["failed_now"] == {"unparseable": 6} and s["failed_units"] == 6
    failed = read_jsonl(tmp_path / "out.failed.jsonl")
    assert len(failed) == 6 and all(
        f["class"] == "unparseable" and f["attempts"] == 4 for f in failed
    )
    out = read_jsonl(tmp_path / "out.jsonl")
    names = [r["meta"]["unit"] for r in out] + [f["name"] for f in failed]
    assert len(names) == len(set(names)) == 18  # every unit exactly once, in one file or the other
    n = len(server.chat_requests())
    assert (
        synthesize(cfg)["requests"] == 0 and len(server.chat_requests()) == n
    )  # failures are not retried unasked
    server.fault_for = lambda prompt: None
    s = synthesize(cfg, retry_failed=True)
    assert (
        s["ok_now"] == 6
        and s["failed_units"] == 0
        and len(read_jsonl(tmp_path / "out.jsonl")) == 18
    )
    assert read_jsonl(tmp_path / "out.failed.jsonl") == []


def test_client_errors_fail_the_unit_without_retry(server, tmp_path):
    server.fault_for = lambda prompt: "400" if "learning to knit" in prompt else None
    s = synthesize(recipe(server, tmp_path / "out.jsonl"))
    assert (
        s["failed_now"] == {"http_400": 6}
        and s["ok_now"] == 12
        and len(server.chat_requests()) == 18
    )


@pytest.mark.parametrize(
    "fault,message", [("401", "the API refused the key (401)"), ("quota", "out of quota")]
)
def test_auth_and_quota_errors_stop_the_run(server, tmp_path, fault, message, cli):
    cfg = recipe(server, tmp_path / "out.jsonl", "limits.concurrency=1")
    server.script.extend([None, None, fault])  # type: ignore[list-item]
    with pytest.raises(FatalAPIError, match=re.escape(message)):
        synthesize(cfg)
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 2  # what was done before the stop is kept
    server.script.append(fault)
    r = cli(
        "synth",
        "synth/miracle",
        f"client.base_url={server.base_url}",
        "client.api_key_env=PDLG_SYNTH_KEY",
        f"output={tmp_path / 'out.jsonl'}",
        "max_topics=3",
        "client.timeout=1",
    )
    assert r.code == 1 and message in r.stderr and "Traceback" not in r.stderr
    assert_key_never_written(tmp_path)


def test_missing_key_and_dry_run(server, tmp_path, cli, monkeypatch):
    monkeypatch.delenv("PDLG_SYNTH_KEY")
    args = (
        "synth",
        "synth/miracle",
        f"client.base_url={server.base_url}",
        "client.api_key_env=PDLG_SYNTH_KEY",
        f"output={tmp_path / 'o.jsonl'}",
        "max_topics=3",
    )
    r = cli(*args)
    assert r.code == 2 and "PDLG_SYNTH_KEY is not set" in r.stderr
    r = cli(*args, "--dry-run", "--json")
    assert r.code == 0 and r.json()["pending"] == 18 and r.json()["cost_estimate"] > 0
    assert server.log == []  # nothing was sent


def test_budget_stops_the_run_and_a_rerun_continues(server, tmp_path):
    cfg = recipe(
        server,
        tmp_path / "out.jsonl",
        "limits.concurrency=1",
        "limits.max_cost=0.03",
        "prices={gpt-4o-mini: {input: 10000, output: 10000}}",
    )
    s = synthesize(cfg)
    assert (
        s["stopped"]
        and "budget" in s["stopped"]
        and 0 < s["output_dialogues"] < 18
        and s["pending"] == 18 - s["output_dialogues"]
    )
    s2 = synthesize(recipe(server, tmp_path / "out.jsonl", "limits.concurrency=1"))
    assert s2["output_dialogues"] == 18 and s2["stopped"] is None


def test_batch_mode_submit_and_collect(server, tmp_path, cli):
    server.fault_for = lambda prompt: (
        "500" if "learning to knit" in prompt and "lyrical" in prompt else None
    )
    args = [
        "synth",
        "synth/miracle",
        f"client.base_url={server.base_url}",
        "client.api_key_env=PDLG_SYNTH_KEY",
        f"output={tmp_path / 'b.jsonl'}",
        "max_topics=3",
        "mode=batch",
        "batch.max_requests=7",
        "batch.poll_interval=0.05",
        "batch.collect_timeout=5",
        "--json",
    ]
    r = cli(*args)
    assert r.code == 0, r.stderr
    created = r.json()["batches_created"]
    assert [b["requests"] for b in created] == [7, 7, 4] and server.chat_requests() == []
    r = cli(*args)  # resubmitting does nothing: the units wait in their batches
    assert r.json()["batches_created"] == []
    r = cli(*args, "--collect")
    assert r.code == 0, r.stderr
    s = r.json()
    assert s["batches_open"] == 0 and s["output_dialogues"] == 17 and s["failed_units"] == 1
    assert read_jsonl(tmp_path / "b.failed.jsonl")[0]["class"] == "http_500"
    # the same units in live mode give the same dialogues
    server.fault_for = lambda prompt: None
    live = synthesize(recipe(server, tmp_path / "live.jsonl"))
    assert live["ok_now"] == 18
    key = lambda r: (r["meta"]["unit"], json.dumps(r["messages"]))  # noqa: E731
    assert {key(r) for r in read_jsonl(tmp_path / "b.jsonl")} < {
        key(r) for r in read_jsonl(tmp_path / "live.jsonl")
    }
    r = cli(
        *[a for a in args if a != "mode=batch"], "mode=live", "--retry-failed"
    )  # retry the failed one live
    assert r.code == 0 and r.json()["output_dialogues"] == 18
    assert_key_never_written(tmp_path)
