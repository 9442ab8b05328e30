"""`personadlg profile infer` against the real local OpenAI-compatible server with injected faults."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from personadlg.data.profile import infer, load_profile_recipe
from personadlg.data.profile.config import ProfileSpec, parse_keys_spec
from personadlg.data.profile.users import scan_users
from personadlg.data.profile.validate import InvalidProfile, parse_profile
from personadlg.errors import ConfigError
from personadlg.llm.parse import ParseError
from personadlg.llm.retries import FatalAPIError
from tests.conftest import dialogue, read_jsonl, write_jsonl

KEY = "sk-test-PROFILE-NEVER-WRITE-ME-7373"
KEYS = {
    "age": ["teens", "20s", "30s", "40s", "50s", "60s", "70s+"],
    "gender": ["female", "male", "nonbinary"],
    "occupation": "free",
}
USER = re.compile(r"\b(P\d\d) speaking\b")


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("PDLG_PROFILE_KEY", KEY)


def user_of(prompt: str) -> str:
    users = set(USER.findall(prompt))
    assert len(users) == 1, "a prompt holds the utterances of exactly one user"
    return users.pop()


def recipe(server, *extra: str):
    return load_profile_recipe(
        "profile/infer",
        [
            f"client.base_url={server.base_url}",
            "client.api_key_env=PDLG_PROFILE_KEY",
            "client.timeout=1",
            "client.backoff_base=0.05",
            "client.max_retries=6",
            "limits.concurrency=2",
            *extra,
        ],
    )


def rec(i: int, user: str | None, **fields):
    who = user or "someone"
    if user is not None:
        fields["user_id"] = user
    return dialogue(
        f"d{i:02d}",
        "how was your day?",
        f"{who} speaking: record {i}, first answer.",
        "and then?",
        f"{who} speaking: record {i}, second answer.",
        **fields,
    )


FULL = {"age": "40s", "gender": "male", "occupation": "chef"}


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, list[dict]]:
    users = ["P01", "P02", None, "P03", "P04", "P05", "P06", "P01", "P02", "P03", "P05", None]
    users += ["P06", "P01"]
    records = []
    for i, u in enumerate(users):
        extra = {}
        if u == "P05":
            extra["profile"] = dict(FULL)  # complete: skipped with --keep-existing
        if u == "P06":
            extra["profile"] = {"gender": "female"}  # partial: inferred, gender kept
        records.append(rec(i, u, **extra))
    return write_jsonl(tmp_path / "in.jsonl", records), records


def scripted_replies(server) -> Counter:
    """P01: missing keys, then valid; P02: an unknown key and odd case, then valid; P03: an age out of
    range every time; P04: prose every time; P05 (only if asked), P06: valid (fenced, odd key case)."""
    calls: Counter = Counter()
    good = {
        "P01": {"age": "20s", "gender": "female", "occupation": "teacher"},
        "P02": {"age": "30S", "gender": "MALE", "occupation": "nurse"},
        "P04": {"age": "20s", "gender": "male", "occupation": "x"},  # replaced by prose (fault)
        "P05": {"age": "20s", "gender": "female", "occupation": "pilot"},
    }

    def content(prompt: str) -> str:
        u = user_of(prompt)
        calls[u] += 1
        if u == "P01":
            return json.dumps({"age": "20s"} if calls[u] == 1 else good[u])
        if u == "P02":
            return json.dumps({**good[u], "mood": "calm"} if calls[u] == 1 else good[u])
        if u == "P03":
            return json.dumps({"age": "100s", "gender": "female", "occupation": "x"})
        if u == "P06":
            return 'Here:\n```json\n{"Age": "50s", "gender": "male", "occupation": "florist"}\n```'
        return json.dumps(good[u])

    server.content_for = content
    server.fault_for = lambda prompt: "unparseable" if user_of(prompt) == "P04" else None
    return calls


def assert_key_never_written(*dirs: Path) -> None:
    for d in dirs:
        for p in Path(d).rglob("*"):
            if p.is_file():
                assert KEY.encode() not in p.read_bytes(), f"the API key leaked into {p}"


# -- replies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"age": "20s", "gender": "female", "occupation": "teacher"}',
        'Sure!\n```json\n{"age": "20S", "Gender": "Female", "occupation": " teacher "}\n```',
        '{"profile": {"AGE": "20s", "gender": "FEMALE", "occupation": "teacher"}}',
        'The profile is {"age": "20s", "gender": "female", "occupation": "teacher"}.',
    ],
)
def test_accepted_replies_are_normalised_to_the_declared_spelling(text):
    assert parse_profile(text, KEYS) == {"age": "20s", "gender": "female", "occupation": "teacher"}


@pytest.mark.parametrize(
    "text,error,why",
    [
        ("", ParseError, "empty reply"),
        ("I think she is a teacher in her twenties.", ParseError, "not a JSON object"),
        ('["20s", "female"]', ParseError, "not a JSON object"),
        ('{"age": "20s", "gender": "female"}', InvalidProfile, "missing key"),
        (
            '{"age": "20s", "gender": "female", "occupation": "x", "mood": "calm"}',
            InvalidProfile,
            "unknown key 'mood'",
        ),
        (
            '{"age": "100s", "gender": "female", "occupation": "x"}',
            InvalidProfile,
            "age: expected one of teens, 20s",
        ),
        ('{"age": "20s", "gender": null, "occupation": "x"}', InvalidProfile, "gender: expected"),
        (
            '{"age": "20s", "gender": "male", "occupation": "' + "x" * 101 + '"}',
            InvalidProfile,
            "at most 100 characters",
        ),
    ],
)
def test_invalid_replies(text, error, why):
    with pytest.raises(error, match=why) as info:
        parse_profile(text, KEYS)
    assert info.value.kind == ("invalid_profile" if error is InvalidProfile else "unparseable")


def test_keys_spec_and_recipe_checks():
    assert parse_keys_spec("age=teens,20s;occupation=free") == {
        "age": ["teens", "20s"],
        "occupation": "free",
    }
    cfg = load_profile_recipe("{age: [teens, 20s], job: free}", ["profile.sample_utterances=5"])
    assert cfg.profile.keys == {"age": ["teens", "20s"], "job": "free"}
    assert cfg.profile.sample_utterances == 5 and cfg.client.model == "gpt-4o-mini"
    for bad, why in [
        ("age", "neither a file nor a bundled recipe"),
        ("age=;job=free", "profile.keys.age: expected a list of allowed values or 'free'"),
        ("age=a,A", "allowed values must be distinct"),
        ("age=a;age=b", "each key once"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(why)):
            load_profile_recipe(bad)


def test_the_sample_is_deterministic_order_free_and_clipped(tmp_path):
    records = [
        dialogue(f"d{i}", "q?", f"u speaking {i} " + "long " * 30, "q?", f"short {i}", user_id="u")
        for i in range(20)
    ]
    spec = ProfileSpec(keys={"age": ["20s"]}, sample_utterances=5, max_chars=40, seed=3)
    a = scan_users(write_jsonl(tmp_path / "a.jsonl", records), spec=spec).users["u"].sample()
    random.Random(0).shuffle(records)
    b = scan_users(write_jsonl(tmp_path / "b.jsonl", records), spec=spec).users["u"].sample()
    assert len(a) == 5 and sorted(a) == sorted(b)  # the same utterances whatever the file order
    assert all(len(u) <= 40 for u in a) and any(u.endswith("…") for u in a)
    other = ProfileSpec(keys={"age": ["20s"]}, sample_utterances=5, max_chars=40, seed=4)
    c = scan_users(tmp_path / "a.jsonl", spec=other).users["u"].sample()
    assert sorted(c) != sorted(a)  # another seed, another sample


# -- runs against the server ---------------------------------------------------------------------------


def test_run_retries_faults_and_invalid_replies_and_accounts_for_every_record(
    server, corpus, tmp_path
):
    path, records = corpus
    calls = scripted_replies(server)
    server.script.extend(["429:0.1", "500", "drop", "malformed"])  # P01's first four attempts
    cfg = recipe(server, "limits.concurrency=1")
    out = tmp_path / "out" / "profiled.jsonl"
    s = infer(cfg, path, out)

    assert (s["records"], s["records_without_user"], s["users"]) == (14, 2, 6)
    assert (s["inferred"], s["failed"], s["skipped"], s["pending"]) == (3, 2, 1, 0)
    assert s["records_updated"] == 7 and s["requests"] == 15 and s["cost"] > 0
    assert s["retries"] == {
        "rate_limit": 1,
        "server_error": 1,
        "connection": 1,
        "malformed_response": 1,
        "invalid_profile": 4,  # P01 once, P02 once, P03 twice (profile.max_invalid)
        "unparseable": 2,  # P04 twice
    }
    failed = {f["user_id"]: f for f in s["failed_users"]}
    assert failed["P03"]["class"] == "invalid_profile" and failed["P03"]["attempts"] == 3
    assert "age: expected one of" in failed["P03"]["error"] and failed["P03"]["records"] == 2
    assert failed["P04"]["class"] == "unparseable" and failed["P04"]["attempts"] == 3

    # the server: one valid reply per inferred user, P05 never asked
    reqs = server.chat_requests()
    assert len(reqs) == 15 and all(r["auth"] == f"Bearer {KEY}" for r in reqs)
    assert Counter(user_of(r["prompt"]) for r in reqs) == {
        "P01": 6,
        "P02": 2,
        "P03": 3,
        "P04": 3,
        "P06": 1,
    }
    assert calls["P01"] == 2 and calls["P02"] == 2 and "P05" not in calls
    assert reqs[0]["body"]["response_format"] == {"type": "json_object"}

    # every input record once, in input order; the profile in every record of an inferred user
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [r["id"] for r in records]
    want = {
        "P01": {"age": "20s", "gender": "female", "occupation": "teacher"},
        "P02": {"age": "30s", "gender": "male", "occupation": "nurse"},
        "P06": {"age": "50s", "gender": "female", "occupation": "florist"},  # gender kept
    }
    for before, after in zip(records, got):
        u = before.get("user_id")
        if u in want:
            assert after["profile"] == want[u]
            meta = after["meta"]["profile_inferred"]
            assert meta["model"] == "gpt-4o-mini" and meta["template"] == s["template"]
            assert {k: v for k, v in after.items() if k not in ("profile", "meta")} == {
                k: v for k, v in before.items() if k != "profile"
            }
        else:  # failed, skipped, or no user_id: exactly as it came in
            assert after == before
    report = json.loads((tmp_path / "out" / "profiled.report.json").read_text())
    assert report["failed"] == 2 and {f["user_id"] for f in report["failed_users"]} == {
        "P03",
        "P04",
    }
    assert s["template"].startswith("sha256:")

    # a rerun requests nothing and writes the same output
    before_bytes = out.read_bytes()
    again = infer(cfg, path, out)
    assert again["requests"] == 0 and len(server.chat_requests()) == 15
    assert out.read_bytes() == before_bytes and again["failed"] == 2

    # --retry-failed retries only the failed users
    server.fault_for = lambda prompt: None
    server.content_for = lambda prompt: json.dumps(
        {"age": "60s", "gender": "nonbinary", "occupation": "x"}
    )
    s3 = infer(cfg, path, out, retry_failed=True)
    assert s3["requests"] == 2 and s3["inferred"] == 5 and s3["failed"] == 0
    assert {user_of(r["prompt"]) for r in server.chat_requests()[15:]} == {"P03", "P04"}
    assert_key_never_written(tmp_path)


def test_no_keep_existing_infers_everyone_and_overwrites(server, corpus, tmp_path):
    path, _ = corpus
    server.content_for = lambda prompt: json.dumps(
        {"age": "teens", "gender": "male", "occupation": "student"}
    )
    s = infer(recipe(server), path, tmp_path / "o.jsonl", keep_existing=False)
    assert s["skipped"] == 0 and s["inferred"] == 6 and s["requests"] == 6
    got = {r["id"]: r for r in read_jsonl(tmp_path / "o.jsonl")}
    assert (
        got["d05"]["profile"]
        == got["d06"]["profile"]
        == {
            "age": "teens",
            "gender": "male",
            "occupation": "student",
        }
    )


def test_a_run_stopped_by_the_api_writes_nothing_and_the_rerun_asks_each_user_once(
    server, corpus, tmp_path
):
    path, records = corpus
    server.content_for = lambda prompt: json.dumps(
        {"age": "30s", "gender": "female", "occupation": f"job of {user_of(prompt)}"}
    )
    cfg = recipe(server, "limits.concurrency=1")
    out = tmp_path / "profiled.jsonl"
    server.script.extend([None, None, "401"])  # type: ignore[list-item]
    with pytest.raises(FatalAPIError, match=re.escape("profile infer stopped: the API refused")):
        infer(cfg, path, out)
    assert not out.exists() and not (tmp_path / "profiled.report.json").exists()
    done = [user_of(r["prompt"]) for r in server.chat_requests()[:2]]
    n = len(server.chat_requests())
    s = infer(cfg, path, out)
    after = [user_of(r["prompt"]) for r in server.chat_requests()[n:]]
    assert s["inferred"] == 5 and s["inferred_now"] == 3 and s["requests"] == 3
    assert not set(done) & set(after) and len(after) == len(set(after)) == 3
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [r["id"] for r in records]
    assert all(
        r["profile"]["occupation"] == f"job of {r['user_id']}"
        for r in got
        if r.get("user_id") not in (None, "P05")
    )
    assert_key_never_written(tmp_path)


def test_a_server_echoing_the_key_never_gets_it_written(corpus, tmp_path, fake_openai):
    server = fake_openai(
        echo_auth=True,
        content_for=lambda prompt: json.dumps(
            {"age": "20s", "gender": "male", "occupation": "baker"}
        ),
        fault_for=lambda prompt: "400" if user_of(prompt) == "P04" else None,
    )
    path, _ = corpus
    s = infer(recipe(server), path, tmp_path / "o.jsonl")
    (f,) = s["failed_users"]
    assert f["user_id"] == "P04" and f["class"] == "http_400" and "[REDACTED]" in f["error"]
    assert KEY not in json.dumps(s)
    assert_key_never_written(tmp_path)


# -- the command line ------------------------------------------------------------------------------------


def test_cli_dry_run_sends_nothing_and_needs_no_key(server, corpus, tmp_path, cli, monkeypatch):
    path, _ = corpus
    monkeypatch.delenv("PDLG_PROFILE_KEY")
    out = tmp_path / "o.jsonl"
    args = ("profile", "infer", path, "--out", out, "age=teens,20s,30s;occupation=free")
    args += (f"client.base_url={server.base_url}", "client.api_key_env=PDLG_PROFILE_KEY")
    r = cli(*args, "--dry-run", "--json")
    assert r.code == 0, r.stderr
    plan = r.json()
    # P05 has age and occupation (the only keys declared here): complete, so skipped
    assert plan["users"] == 6 and plan["skipped"] == 1 and plan["requests"] == 5
    assert plan["records"] == 14 and plan["records_without_user"] == 2
    assert plan["cost_estimate"] > 0 and plan["priced"]
    r = cli(*args, "--dry-run")
    assert r.code == 0 and "requests to send" in r.stdout and "cost (estimate, USD)" in r.stdout
    assert server.log == [] and not out.exists()  # nothing was sent, nothing written
    r = cli(*args)
    assert r.code == 2 and "PDLG_PROFILE_KEY is not set" in r.stderr
    assert not (tmp_path / "o.jsonl.cache").exists()  # stopped before anything was created


def test_cli_runs_and_prints_the_summary(server, corpus, tmp_path, cli):
    path, _ = corpus
    scripted_replies(server)
    out = tmp_path / "o.jsonl"
    base = ("profile", "infer", path, "--out", out, "profile/infer")
    base += (f"client.base_url={server.base_url}", "client.api_key_env=PDLG_PROFILE_KEY")
    base += ("client.backoff_base=0.01",)
    r = cli(*base)
    assert r.code == 0, r.stderr
    assert "users inferred" in r.stdout and "failed: P03 (invalid_profile" in r.stdout
    assert "report →" in r.stdout and (tmp_path / "o.report.json").exists()
    r = cli(*base, "--dry-run", "--json")
    assert r.code == 0 and r.json()["requests"] == 0  # all done (failures are not retried unasked)
    r = cli(*base, "--retry-failed", "--dry-run", "--json")
    assert r.json()["requests"] == 2
    assert_key_never_written(tmp_path)


def test_cli_bad_recipe_and_bad_input_exit_2(server, corpus, tmp_path, cli):
    path, _ = corpus
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile:\n  keys: {age: 5}\n  sample_utterance: 3\n")
    r = cli("profile", "infer", path, "--out", tmp_path / "o.jsonl", bad)
    assert r.code == 2 and "unknown key 'profile.sample_utterance'" in r.stderr
    assert "Traceback" not in r.stderr
    bad.write_text("profile:\n  keys: {age: 5}\n")
    r = cli("profile", "infer", path, "--out", tmp_path / "o.jsonl", bad)
    assert r.code == 2 and "profile.keys.age: expected a list of allowed values" in r.stderr
    r = cli("profile", "infer", path, "--out", tmp_path / "o.jsonl", "synth/miracle")
    assert r.code == 2 and "not a profile recipe" in r.stderr
    r = cli("profile", "infer", path, "--out", path, "profile/infer")
    assert r.code == 2 and "is also the input" in r.stderr
    broken = tmp_path / "broken.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"role": "assistant"', '"role": "narrator"', 1)
    broken.write_text("\n".join(lines) + "\n")
    r = cli("profile", "infer", broken, "--out", tmp_path / "o.jsonl", "profile/infer", "--dry-run")
    assert r.code == 2 and f"{broken}:3: field 'messages[1].role': expected" in r.stderr
    assert server.log == [] and not (tmp_path / "o.jsonl").exists()


def test_a_budget_stop_writes_pending_users_unchanged_and_a_rerun_continues(
    server, corpus, tmp_path
):
    path, records = corpus
    server.content_for = lambda prompt: json.dumps(
        {"age": "20s", "gender": "female", "occupation": "x"}
    )
    out = tmp_path / "o.jsonl"
    expensive = "prices={gpt-4o-mini: {input: 10000, output: 10000}}"
    s = infer(recipe(server, "limits.concurrency=1", "limits.max_cost=2", expensive), path, out)
    assert s["stopped"] and "budget" in s["stopped"]
    assert 0 < s["inferred"] < 5 and s["pending"] == 5 - s["inferred"]
    got = read_jsonl(out)
    assert [r["id"] for r in got] == [r["id"] for r in records]
    waiting = set(s["pending_users"])
    assert all(
        after == before for before, after in zip(records, got) if before.get("user_id") in waiting
    )
    s2 = infer(recipe(server, "limits.concurrency=1"), path, out)
    assert s2["inferred"] == 5 and s2["pending"] == 0 and s2["requests"] == len(waiting)
