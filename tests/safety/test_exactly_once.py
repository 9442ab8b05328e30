"""kill -9 in the middle of an LLM-calling command, then the same command again: the output equals
an uninterrupted run's, and no request answered before the kill is sent again. One test, run for
every command that sends requests through the engine (`personadlg/llm/`): `synth`, `profile
infer` and `generate` with an `api` recipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import dialogue, read_jsonl, write_jsonl
from tests.fake_openai import echo_reply, kill_9_after

KEY = "sk-test-EXACTLY-ONCE-NEVER-WRITE-ME-5151"
ENV = "PDLG_EXACTLY_ONCE_KEY"
SPEAKER = re.compile(r"\b(P\d\d) speaking\b")


@dataclass
class Case:
    """One command: how to run it into OUT, and how to tell its units apart."""

    units: int
    kill_after: int
    argv: Callable[[Path, str, Path], list[str]]
    """(tmp dir, the server's base url, OUT) → the arguments after `personadlg -q`."""
    unit_of_entry: Callable[[dict[str, Any]], str]
    """The unit a finished journal entry is for."""
    unit_of_request: Callable[[dict[str, Any], list[str]], str]
    """The unit a request the server saw is for (with the command's arguments)."""
    rows: Callable[[Path], list[Any]]
    """An output, as the comparable rows two runs must agree on."""
    server: dict[str, Any] = field(default_factory=dict)


def _client(url: str) -> list[str]:
    return [
        f"client.base_url={url}",
        f"client.api_key_env={ENV}",
        "limits.concurrency=2",
        "client.timeout=5",
    ]


# -- synth: 24 units (4 topics x the aspect targets) -------------------------------------------------


@cache
def _synth_prompts(args: tuple[str, ...]) -> dict[str, str]:
    from personadlg.data.synth import load_synth_recipe
    from personadlg.data.synth.runner import plan

    units, _ = plan(load_synth_recipe("synth/miracle", list(args)))
    return {u.messages[0]["content"]: u.name for u in units}


SYNTH = Case(
    units=24,
    kill_after=6,
    argv=lambda tmp, url, out: [
        "synth",
        "synth/miracle",
        *_client(url),
        "max_topics=4",
        f"output={out}",
    ],
    unit_of_entry=lambda e: e["record"]["meta"]["unit"],
    unit_of_request=lambda r, argv: _synth_prompts(tuple(argv[2:]))[r["prompt"]],
    rows=lambda out: sorted(
        (r["meta"]["unit"], json.dumps(r["messages"])) for r in read_jsonl(out)
    ),
)


# -- profile infer: 12 users, two records each ----------------------------------------------------


def _profile_input(tmp: Path) -> Path:
    records = [
        dialogue(
            f"d{i:02d}",
            "how was your day?",
            f"P{i % 12:02d} speaking: record {i}, first answer.",
            user_id=f"P{i % 12:02d}",
        )
        for i in range(24)
    ]
    return write_jsonl(tmp / "users.jsonl", records)


def _speaker(prompt: str) -> str:
    (user,) = set(SPEAKER.findall(prompt))
    return user


PROFILE = Case(
    units=12,
    kill_after=4,
    argv=lambda tmp, url, out: [
        "profile",
        "infer",
        str(_profile_input(tmp)),
        "--out",
        str(out),
        "profile/infer",
        *_client(url),
    ],
    unit_of_entry=lambda e: e["user_id"],
    unit_of_request=lambda r, argv: _speaker(r["prompt"]),
    rows=lambda out: [(r["id"], r.get("profile")) for r in read_jsonl(out)],
    server={
        "content_for": lambda prompt: json.dumps(
            {"age": "20s", "gender": "female", "occupation": f"job of {_speaker(prompt)}"}
        )
    },
)


# -- generate with an api recipe: 24 examples -------------------------------------------------------


def _test_input(tmp: Path) -> Path:
    records = [
        dialogue(f"d{i:02d}", f"question {i}?", f"answer {i}.", persona=[f"i like thing {i} ."])
        for i in range(24)
    ]
    return write_jsonl(tmp / "test.jsonl", records)


API = Case(
    units=24,
    kill_after=6,
    argv=lambda tmp, url, out: [
        "generate",
        "api/persona",
        "-i",
        str(_test_input(tmp)),
        "-o",
        str(out),
        *_client(url),
    ],
    unit_of_entry=lambda e: f"question {int(e['name'][1:3])}?",
    unit_of_request=lambda r, argv: r["body"]["messages"][-1]["content"],
    rows=lambda out: [(r["id"], r["generation"], r["seed"]) for r in read_jsonl(out)],
    server={"reply_for": echo_reply},
)


@pytest.mark.parametrize(
    "case", [SYNTH, PROFILE, API], ids=["synth", "profile-infer", "api-generate"]
)
def test_kill_9_then_rerun_equals_an_uninterrupted_run(case, tmp_path, fake_openai):
    server = fake_openai(latency=0.15, **case.server)
    env = {**os.environ, ENV: KEY}

    def command(out: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "personadlg",
            "-q",
            *case.argv(tmp_path, server.base_url, out),
        ]

    full, part = tmp_path / "full" / "out.jsonl", tmp_path / "part" / "out.jsonl"
    full.parent.mkdir()
    part.parent.mkdir()
    subprocess.run(command(full), env=env, check=True, capture_output=True, timeout=120)
    server.log.clear()
    proc = subprocess.Popen(
        command(part), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    killed_at, entries = kill_9_after(
        proc, Path(f"{part}.cache") / "journal.jsonl", case.kill_after
    )
    done = {case.unit_of_entry(e) for e in entries}
    assert case.kill_after <= len(done) < case.units
    subprocess.run(command(part), env=env, check=True, capture_output=True, timeout=120)

    assert case.rows(part) == case.rows(full) and len(case.rows(part)) >= case.units
    argv = case.argv(tmp_path, server.base_url, part)
    after = [case.unit_of_request(r, argv) for r in server.chat_requests() if r["time"] > killed_at]
    assert not done & set(after)  # answered before the kill: never sent again
    assert len(after) <= case.units - len(done) + 2  # at most the two in flight at the kill twice
    for f in tmp_path.rglob("*"):
        assert not f.is_file() or KEY.encode() not in f.read_bytes(), f"the key leaked into {f}"
