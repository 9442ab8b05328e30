"""Hostile runs of `synth` and `profile infer`: outputs that are the journal, a device or another
user's file, two configurations in one journal, units that would share a request, two runs on one
output, and recipe values that used to pass `--dry-run` and fail (or silently misbehave) later."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from personadlg.data.lock import lock_path_for
from personadlg.data.profile import infer, load_profile_recipe
from personadlg.data.synth import load_synth_recipe
from personadlg.data.synth.runner import synthesize
from personadlg.errors import ConfigError, UsageError
from tests.conftest import dialogue, read_jsonl, write_jsonl

KEY = "sk-test-HOSTILE-SYNTH-5151"


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("PDLG_HOSTILE_KEY", KEY)


def topics(tmp_path: Path, *lines: str) -> Path:
    p = tmp_path / "topics.txt"
    p.write_text("".join(f"{t}\n" for t in lines))
    return p


def recipe(server, out: Path, *extra: str):
    return load_synth_recipe(
        "synth/miracle",
        [
            f"client.base_url={server.base_url}",
            "client.api_key_env=PDLG_HOSTILE_KEY",
            f"output={out}",
            "client.timeout=2",
            "client.backoff_base=0.05",
            "limits.concurrency=4",
            *extra,
        ],
    )


def synth_args(server, out: Path, *extra: str) -> list[str]:
    return [
        "synth",
        "synth/miracle",
        f"client.base_url={server.base_url}",
        "client.api_key_env=PDLG_HOSTILE_KEY",
        f"output={out}",
        *extra,
    ]


# -- the output holds this recipe's units only ------------------------------------------------------


def test_a_changed_configuration_is_not_mixed_into_the_output(server, tmp_path):
    src = topics(tmp_path, "hiking in the alps", "baking bread", "learning chess")
    out = tmp_path / "s.jsonl"
    first = synthesize(recipe(server, out, f"topics={src}"))
    n = first["units"]
    assert first["output_dialogues"] == n and first["pending"] == 0
    second = synthesize(recipe(server, out, f"topics={src}", "client.model=other-model"))
    assert second["ok_now"] == n and second["output_dialogues"] == n, second
    assert second["pending"] == 0 and second["other_configurations"] == n
    assert {d["meta"]["model"] for d in read_jsonl(out)} == {"other-model"}
    # fewer topics: the dropped topic's dialogues leave the output, nothing is requested
    fewer = topics(tmp_path, "hiking in the alps", "baking bread")
    third = synthesize(recipe(server, out, f"topics={fewer}", "client.model=other-model"))
    assert third["requests"] == 0 and third["output_dialogues"] == third["units"] == n * 2 // 3
    assert {d["topic"] for d in read_jsonl(out)} == {"hiking in the alps", "baking bread"}


def test_units_that_would_send_the_same_request_are_refused_before_any_request(
    server, tmp_path, cli
):
    src = topics(tmp_path, "same topic", "other topic", "  same topic  ")
    r = cli(*synth_args(server, tmp_path / "s.jsonl", f"topics={src}"))
    assert r.code == 2 and "send the same request" in r.stderr and "per_target" in r.stderr
    assert "Traceback" not in r.stderr
    assert server.chat_requests() == [] and not (tmp_path / "s.jsonl").exists()
    template = tmp_path / "t.txt"
    template.write_text("Write a dialogue in which the assistant $style.\n")
    r = cli(*synth_args(server, tmp_path / "s.jsonl", f"template={template}", "max_topics=2"))
    assert r.code == 2 and "must use $topic" in r.stderr, r.stderr


def test_topics_with_one_text_and_different_personas_are_two_units(server, tmp_path):
    src = tmp_path / "topics.jsonl"
    write_jsonl(src, [{"topic": "cats", "persona": ["I have a cat."]}, {"topic": "cats"}])
    s = synthesize(recipe(server, tmp_path / "s.jsonl", f"topics={src}"))
    assert (
        s["units"]
        == s["output_dialogues"]
        == s["requests"]
        == 2 * len(recipe(server, tmp_path / "x.jsonl").target_list())
    )


def test_a_topic_with_a_lone_surrogate_is_file_line(server, tmp_path, cli):
    src = tmp_path / "topics.jsonl"
    src.write_text('{"topic": "fine"}\n{"topic": "x\\ud800y"}\n')
    r = cli(*synth_args(server, tmp_path / "s.jsonl", f"topics={src}"))
    assert r.code == 2 and f"{src}:2: " in r.stderr and "surrogate" in r.stderr, r.stderr


# -- outputs: the journal, a device, a file of someone else's, a second writer -----------------------


def test_an_output_that_is_the_journal_is_refused(server, tmp_path, cli):
    (tmp_path / "op").mkdir()
    args = [f"output={tmp_path / 'op' / 'journal.jsonl'}", f"cache_dir={tmp_path / 'op'}"]
    r = cli(*synth_args(server, tmp_path / "unused.jsonl", "max_topics=1", *args))
    assert r.code == 2 and "the journal" in r.stderr and "same file" in r.stderr, r.stderr
    assert server.chat_requests() == []


def test_a_fifo_output_is_refused_before_any_request(server, tmp_path, cli):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = cli(*synth_args(server, fifo, "max_topics=1"))
    assert r.code == 2 and "not a regular file" in r.stderr, r.stderr
    assert server.chat_requests() == [] and not (tmp_path / "fifo.cache").exists()


def test_a_refused_run_writes_nothing(server, tmp_path, cli, monkeypatch):
    out = tmp_path / "s.jsonl"
    assert cli(*synth_args(server, out, "max_topics=1")).code == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.delenv("PDLG_HOSTILE_KEY")
    r = cli(*synth_args(server, out, "max_topics=2"))
    assert r.code == 2 and "PDLG_HOSTILE_KEY" in r.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    fresh = tmp_path / "new"
    r = cli(*synth_args(server, fresh / "s.jsonl", "max_topics=1"))
    assert r.code == 2 and not fresh.exists()


def test_an_output_without_its_journal_is_not_overwritten(server, tmp_path, cli):
    out = tmp_path / "s.jsonl"
    out.write_text('{"id": "precious"}\n')
    r = cli(*synth_args(server, out, "max_topics=1"))
    assert r.code == 2 and "no journal" in r.stderr and "choose another output" in r.stderr
    assert out.read_text() == '{"id": "precious"}\n' and server.chat_requests() == []
    # the output of an earlier run (its journal beside it) is rewritten as before
    out2 = tmp_path / "t.jsonl"
    assert cli(*synth_args(server, out2, "max_topics=1")).code == 0
    assert cli(*synth_args(server, out2, "max_topics=2")).code == 0


def test_a_second_run_on_the_same_output_with_another_cache_is_refused(server, tmp_path):
    out = tmp_path / "s.jsonl"
    lock = lock_path_for(out)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"4242 synth\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="in use by another `synth` \\(pid 4242\\)"):
            synthesize(recipe(server, out, "max_topics=1", f"cache_dir={tmp_path / 'c2'}"))
        cfg = load_profile_recipe(
            "profile/infer",
            [f"client.base_url={server.base_url}", "client.api_key_env=PDLG_HOSTILE_KEY"],
        )
        src = write_jsonl(tmp_path / "in.jsonl", [dialogue("a", "hi", "yo", user_id="u1")])
        with pytest.raises(UsageError, match="in use by another `profile infer`"):
            infer(cfg, src, out)
    finally:
        os.close(fd)
    assert server.chat_requests() == []


def test_profile_output_that_is_the_journal_is_refused(server, tmp_path):
    cfg = load_profile_recipe(
        "profile/infer",
        [
            f"client.base_url={server.base_url}",
            "client.api_key_env=PDLG_HOSTILE_KEY",
            f"cache_dir={tmp_path}",
        ],
    )
    src = write_jsonl(tmp_path / "in.jsonl", [dialogue("a", "hi", "yo", user_id="u1")])
    with pytest.raises(UsageError, match="the journal"):
        infer(cfg, src, tmp_path / "journal.jsonl")


# -- recipe values refused at load ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("max_topics=-1", "max_topics: expected 0 (all)"),
        ("completion_tokens_estimate=0", "completion_tokens_estimate: expected"),
        ("prices={gpt-4o-mini: {inputt: 1}}", "prices.gpt-4o-mini.inputt: unknown price"),
        ("prices={gpt-4o-mini: {input: -1}}", "prices.gpt-4o-mini.input: expected USD >= 0"),
        ("batch.max_requests=0", "batch.max_requests: expected 1 to 50,000"),
        ("batch.max_bytes=0", "batch.max_bytes"),
        ("batch.poll_interval=-1", "batch.poll_interval"),
        ("output=", "output: expected a file path"),
    ],
)
def test_synth_recipe_values_refused_at_load(override, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", "\\(").replace(")", "\\)")):
        load_synth_recipe("synth/miracle", [override])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("completion_tokens_estimate=-5", "completion_tokens_estimate: expected"),
        ("profile.sample_utterances=1000000000", "profile.sample_utterances: expected 1 to 1,000"),
        ("profile.max_chars=1000000000000", "profile.max_chars: expected 10 to 100,000"),
        ("profile.max_invalid=1000000000", "profile.max_invalid: expected 0 to 100"),
        ("profile.keys={age: [.nan]}", "profile.keys.age: expected a list of allowed values"),
        ("profile.keys={age: [.inf, 20s]}", "profile.keys.age: expected a list of allowed values"),
        ("prices={m: {output: -2}}", "prices.m.output: expected USD >= 0"),
    ],
)
def test_profile_recipe_values_refused_at_load(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_profile_recipe("profile/infer", [override])


def test_a_blank_user_id_names_no_one(server, tmp_path):
    cfg = load_profile_recipe(
        "profile/infer",
        [f"client.base_url={server.base_url}", "client.api_key_env=PDLG_HOSTILE_KEY"],
    )
    server.content_for = lambda prompt: json.dumps(
        {"age": "20s", "gender": "female", "occupation": "baker"}
    )
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [dialogue("a", "hi", "yo", user_id="u1"), dialogue("b", "hey", "ho", user_id="  ")],
    )
    summary = infer(cfg, src, tmp_path / "out.jsonl")
    assert len(server.chat_requests()) == 1
    recs = {d["id"]: d for d in read_jsonl(tmp_path / "out.jsonl")}
    assert recs["a"]["profile"]["occupation"] == "baker" and not recs["b"].get("profile")
    assert summary["records_without_user"] == 1, summary


# -- batch results are read like live replies ------------------------------------------------------


def test_batch_result_lines_are_checked_like_live_replies(server, tmp_path):
    from personadlg.data.lock import exclusive_lock
    from personadlg.data.synth.batch import _merge_row
    from personadlg.data.synth.runner import plan
    from personadlg.llm.journal import Journal
    from personadlg.llm.runner import Stats

    cfg = recipe(server, tmp_path / "b.jsonl", "max_topics=1", "client.params.max_tokens=500")
    units, tag = plan(cfg)
    good = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "hi?"},
                {"role": "assistant", "content": "yo."},
            ]
            * 4
        }
    )

    def row(content, usage):
        body = {"choices": [{"message": {"content": content}}], "usage": usage}
        return {"custom_id": "x", "response": {"status_code": 200, "body": body}}

    stats = Stats(total=3)
    with Journal(tmp_path / "c", what="synth", lock=exclusive_lock) as journal:
        _merge_row(cfg, journal, stats, tag, units[0], row({"messages": []}, {}))
        _merge_row(cfg, journal, stats, tag, units[1], row("x\ud800", {}))
        bad_usage = {"prompt_tokens": -(10**10), "completion_tokens": 1.5}
        _merge_row(cfg, journal, stats, tag, units[2], row(good, bad_usage))
        entries = list(journal.entries())
    assert [e["status"] for e in entries] == ["failed", "failed", "ok"]
    assert [e.get("class") for e in entries[:2]] == ["malformed_response"] * 2
    assert stats.cost > 0 and stats.completion_tokens == 500 and stats.prompt_tokens > 0
