"""`method: api`: generate through an OpenAI-compatible chat model, against the real local server
that speaks the OpenAI API and injects faults (tests/fake_openai.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from personadlg.errors import ConfigError, UsageError
from personadlg.generation.generate import generate_file
from personadlg.llm.retries import FatalAPIError
from tests.conftest import dialogue, read_jsonl, write_jsonl
from tests.fake_openai import echo_reply

KEY = "sk-test-API-GEN-NEVER-WRITE-ME-9191"
ENV = "PDLG_API_KEY"


@pytest.fixture
def server(fake_openai):
    return fake_openai(reply_for=echo_reply)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(ENV, KEY)


def client_args(server, *extra: str) -> list[str]:
    return [
        f"client.base_url={server.base_url}",
        f"client.api_key_env={ENV}",
        "client.timeout=1",
        "client.backoff_base=0.02",
        "client.max_retries=4",
        "limits.concurrency=3",
        *extra,
    ]


def data(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "test.jsonl",
        [
            dialogue(
                "d1",
                "hi there, how are you?",
                "great, just back from a hike.",
                "where did you go?",
                "up the hill by the lake.",
                persona=["i like hiking .", "i am a bank teller ."],
                profile={"age": "20s", "occupation": "bank teller"},
                user_id="u1",
            ),
            dialogue("d2", "what do you do?", "i paint houses.", persona=["i paint houses ."]),
            dialogue("d3", "any plans today?", "not really, maybe some reading."),
        ],
    )


def gen(
    server, tmp_path: Path, recipe: str = "api/persona", out: str = "gen.jsonl", *extra: str, **kw
):
    return generate_file(
        recipe, data(tmp_path), tmp_path / out, overrides=client_args(server, *extra), **kw
    )


def assert_key_never_written(*dirs: Path) -> None:
    for d in dirs:
        for p in Path(d).rglob("*"):
            if p.is_file():
                assert KEY.encode() not in p.read_bytes(), f"the API key leaked into {p}"


def systems(server) -> dict[str, str]:
    """The system prompt the server saw for each request, by the last context message."""
    return {
        r["body"]["messages"][-1]["content"]: r["body"]["messages"][0]["content"]
        for r in server.chat_requests()
    }


# -- templates ---------------------------------------------------------------------------------------


def test_persona_template_and_request_snapshot(server, tmp_path):
    s = gen(server, tmp_path)
    assert s["generated"] == 4 and s["output_records"] == 4 and s["failed"] == 0
    reqs = server.chat_requests()
    assert len(reqs) == 4 and all(r["auth"] == f"Bearer {KEY}" for r in reqs)
    by_last = {r["body"]["messages"][-1]["content"]: r["body"] for r in reqs}
    body = by_last["where did you go?"]
    assert body["messages"] == [
        {
            "role": "system",
            "content": "You are a real person chatting with someone you have just met, never an AI or an assistant.\n"
            "Your persona:\n- i like hiking .\n- i am a bank teller .\n"
            "Let who you are show naturally when it fits the conversation; do not list your persona.\n"
            "Reply with your next message only, in one or two short sentences, casually, as in a text chat.",
        },
        {"role": "user", "content": "hi there, how are you?"},
        {"role": "assistant", "content": "great, just back from a hike."},
        {"role": "user", "content": "where did you go?"},
    ]
    assert (
        body["model"] == "gpt-4o-mini" and body["temperature"] == 0.7 and body["max_tokens"] == 80
    )
    assert "response_format" not in body and isinstance(body["seed"], int)
    # no persona: the persona line is left out, nothing else changes
    assert "persona" not in by_last["any plans today?"]["messages"][0]["content"].lower().replace(
        "do not list your persona", ""
    )


def test_profile_and_attributes_templates(server, tmp_path):
    gen(server, tmp_path, "api/profile", "p.jsonl")
    sys_p = systems(server)["where did you go?"]
    assert (
        "About you:\n- age: 20s\n- occupation: bank teller\nYour persona:\n- i like hiking ."
        in sys_p
    )
    assert "About you" not in systems(server)["what do you do?"]  # no profile: no block
    server.log.clear()
    gen(
        server,
        tmp_path,
        "api/attributes",
        "a.jsonl",
        targets={"attitude": "optimistic", "language_style": "lyrical"},
    )
    sys_a = systems(server)["what do you do?"]
    assert (
        "How you speak:\n"
        "- attitude: optimistic: answers with an optimistic outlook. They are hopeful, expect things to "
        "turn out well, and see the bright side and the chance in every setback.\n"
        "- language style: lyrical: answers in vivid, poetic images. They speak like a poet"
    ) in sys_a
    assert (
        "Every reply must clearly show all of these traits: optimistic (attitude), lyrical (language style)."
        in sys_a
    )
    recs = read_jsonl(tmp_path / "a.jsonl")
    assert all(
        r["target_attributes"] == {"attitude": "optimistic", "language_style": "lyrical"}
        for r in recs
    )


def test_inline_template_with_every_placeholder_and_context_turns(server, tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(
        "method: api\n"
        "client: {model: m1, api_key_env: X, params: {temperature: 0, max_tokens: 20}}\n"
        "prompt:\n"
        "  system: |\n"
        "    [$user_id|$topic|$aspects]\n"
        "    P:$persona\n"
        "    F:$profile\n"
        "    A:$attributes\n"
        "    $profile_block\n"
        "  context_turns: 1\n"
        "  send_seed: false\n"
        "attributes: {tone: {warm: {style: speaks warmly, description: Kind words.}, cold: {}}}\n"
    )
    generate_file(
        recipe,
        data(tmp_path),
        tmp_path / "o.jsonl",
        overrides=client_args(server),
        targets={"tone": "warm"},
        limit=1,
    )
    body = server.chat_requests()[0]["body"]
    assert body["messages"] == [
        {
            "role": "system",
            "content": "[u1||warm (tone)]\nP:- i like hiking .\n- i am a bank teller .\n"
            "F:- age: 20s\n- occupation: bank teller\nA:- tone: warm: speaks warmly. Kind words.\n"
            "About you:\n- age: 20s\n- occupation: bank teller",
        },
        {"role": "user", "content": "hi there, how are you?"},
    ]
    assert "seed" not in body and body["model"] == "m1"


# -- records, sidecar, resume ------------------------------------------------------------------------


def test_records_carry_request_id_template_and_usage(server, tmp_path):
    s = gen(server, tmp_path)
    recs = read_jsonl(tmp_path / "gen.jsonl")
    assert [r["id"] for r in recs] == ["d1#1", "d1#3", "d2#1", "d3#1"]  # input order
    for r in recs:
        assert r["method"] == "api" and r["checkpoint"].endswith("recipes/api/persona.yaml")
        assert r["generation"] == echo_reply(
            next(q["body"] for q in server.chat_requests() if q["body"]["seed"] == r["seed"])
        )
        api = r["api"]
        assert api["request_id"].startswith("req-") and api["template"] == s["template"]
        assert api["usage"]["prompt_tokens"] > 0 and api["usage"]["completion_tokens"] > 0
        assert api["model"] == "gpt-4o-mini" and api["attempts"] == 1
        assert r["decoding"]["seed"] == r["seed"] and r["decoding"]["temperature"] == 0.7
    meta = json.loads((tmp_path / "gen.jsonl.meta.json").read_text())
    assert meta["method"] == "api" and meta["checkpoint_sha256"] == ""
    assert meta["api_model"] == "gpt-4o-mini" and meta["template"] == s["template"]
    assert (
        meta["model"]["template"] == s["template"] and meta["model"]["base_url"] == server.base_url
    )
    assert (tmp_path / "gen.failed.jsonl").read_text() == ""
    # a rerun sends nothing and leaves the output as it was
    before = (tmp_path / "gen.jsonl").read_bytes()
    again = gen(server, tmp_path)
    assert (
        again["requests"] == 0 and again["skipped_done"] == 4 and len(server.chat_requests()) == 4
    )
    assert (tmp_path / "gen.jsonl").read_bytes() == before
    assert_key_never_written(tmp_path)


def test_other_settings_are_refused_and_overwrite_reuses_answers(server, tmp_path):
    gen(server, tmp_path)
    with pytest.raises(UsageError, match="temperature: 0.7 -> 0.2"):
        gen(server, tmp_path, "api/persona", "gen.jsonl", "temperature=0.2")
    with pytest.raises(UsageError, match="model.template"):
        gen(server, tmp_path, "api/persona", "gen.jsonl", "prompt.system=Hi. $persona")
    with pytest.raises(UsageError, match="model.name: 'gpt-4o-mini' -> 'gpt-4o'"):
        gen(server, tmp_path, "api/persona", "gen.jsonl", "client.model=gpt-4o")
    # --overwrite starts the file afresh, but requests already answered come from the journal
    s = gen(server, tmp_path, overwrite=True)
    assert s["requests"] == 0 and s["output_records"] == 4 and len(server.chat_requests()) == 4
    # a new seed makes new requests (and new texts)
    s = gen(server, tmp_path, "api/persona", "gen.jsonl", "seed=7", overwrite=True)
    assert s["requests"] == 4 and s["generated"] == 4


def test_all_combinations_and_unknown_aspects(server, tmp_path, cli):
    s = gen(server, tmp_path, "api/attributes", "all.jsonl", combinations=True)
    assert s["targets"] == 8 and s["output_records"] == 32 and len(server.chat_requests()) == 32
    recs = read_jsonl(tmp_path / "all.jsonl")
    assert len({(r["id"], json.dumps(r["target_attributes"], sort_keys=True)) for r in recs}) == 32
    seeds = {r["seed"] for r in recs}
    assert len(seeds) == 32  # every (example, target) has its own seed
    r = cli(
        "generate",
        "api/attributes",
        "-i",
        tmp_path / "test.jsonl",
        "-o",
        tmp_path / "bad.jsonl",
        "--attributes",
        "attitude=optimstic",
        *client_args(server),
    )
    assert r.code == 2 and "did you mean 'optimistic'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "bad.jsonl").exists()


# -- faults, failures, budget (kill -9: tests/safety/test_exactly_once.py) ---------------------


def test_transport_faults_are_retried_and_change_nothing(server, tmp_path):
    clean = gen(server, tmp_path, "api/persona", "clean.jsonl")
    assert clean["requests"] == 4
    server.log.clear()
    server.script.extend(["429:0.05", "500", "drop", "malformed", "503", "slow:1.5"])
    s = gen(server, tmp_path, "api/persona", "faulty.jsonl")
    assert s["output_records"] == 4 and s["failed"] == 0 and s["requests"] == 10
    assert sum(s["retries"].values()) == 6
    texts = lambda p: [(r["id"], r["generation"]) for r in read_jsonl(tmp_path / p)]  # noqa: E731
    assert texts("faulty.jsonl") == texts("clean.jsonl")
    # every (example) got exactly one answered request
    answered = Counter(r["body"]["seed"] for r in server.chat_requests() if r["fault"] is None)
    assert sorted(answered.values()) == [1, 1, 1, 1]


def test_failures_are_recorded_once_and_retried_on_request(server, tmp_path, cli):
    server.fault_for = lambda prompt: "400" if "paint houses" in prompt else None
    s = gen(server, tmp_path)
    assert s["output_records"] == 3 and s["failed"] == 1 and sum(s["failed_now"].values()) == 1
    failed = read_jsonl(tmp_path / "gen.failed.jsonl")
    assert [f["id"] for f in failed] == ["d2#1"] and failed[0]["attempts"] == 1
    assert "d2#1" not in {r["id"] for r in read_jsonl(tmp_path / "gen.jsonl")}
    n = len(server.chat_requests())
    assert gen(server, tmp_path)["requests"] == 0 and len(server.chat_requests()) == n  # not again
    server.fault_for = lambda prompt: None
    s = gen(server, tmp_path, retry_failed=True)
    assert s["requests"] == 1 and s["output_records"] == 4 and s["failed"] == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "gen.jsonl")] == ["d1#1", "d1#3", "d2#1", "d3#1"]
    assert read_jsonl(tmp_path / "gen.failed.jsonl") == []


def test_empty_replies_are_retried_then_failed(server, tmp_path):
    calls = Counter()

    def reply(body):
        last = body["messages"][-1]["content"]
        calls[last] += 1
        if last == "any plans today?":
            return "   "
        if last == "what do you do?" and calls[last] == 1:
            return ""
        return echo_reply(body)

    server.reply_for = reply
    s = gen(server, tmp_path, "api/persona", "gen.jsonl", "prompt.max_invalid=2")
    assert s["output_records"] == 3 and s["failed"] == 1
    assert calls["any plans today?"] == 3 and calls["what do you do?"] == 2
    (f,) = read_jsonl(tmp_path / "gen.failed.jsonl")
    assert f["id"] == "d3#1" and f["class"] == "empty_reply" and f["attempts"] == 3


def test_budget_stops_and_a_rerun_continues(server, tmp_path):
    s = gen(
        server,
        tmp_path,
        "api/persona",
        "gen.jsonl",
        "limits.concurrency=1",
        "limits.max_cost=0.5",
        "prices={gpt-4o-mini: {input: 10000, output: 10000}}",
    )
    assert "budget" in s["stopped"] and 0 < s["output_records"] < 4
    assert s["pending"] == 4 - s["output_records"]
    s2 = gen(server, tmp_path, "api/persona", "gen.jsonl", "limits.concurrency=1")
    assert s2["output_records"] == 4 and s2["stopped"] is None
    assert len(server.chat_requests()) == 4


def test_auth_error_stops_and_keeps_what_was_answered(server, tmp_path, cli):
    server.script.extend([None, None, "401"])  # type: ignore[list-item]
    with pytest.raises(FatalAPIError, match="401"):
        gen(server, tmp_path, "api/persona", "gen.jsonl", "limits.concurrency=1")
    assert len(read_jsonl(tmp_path / "gen.jsonl")) == 2
    server.script.append("401")
    r = cli(
        "generate",
        "api/persona",
        "-i",
        tmp_path / "test.jsonl",
        "-o",
        tmp_path / "gen.jsonl",
        *client_args(server, "limits.concurrency=1"),
    )
    assert r.code == 1 and "401" in r.stderr and "Traceback" not in r.stderr
    assert KEY not in r.stdout + r.stderr
    assert_key_never_written(tmp_path)


# -- usage errors, dry run, key ----------------------------------------------------------------------


def cli_generate(server, tmp_path: Path) -> tuple:
    """`generate api/persona` of `data(tmp_path)` into `tmp_path/g.jsonl`, against SERVER."""
    out = tmp_path / "g.jsonl"
    return ("generate", "api/persona", "-i", data(tmp_path), "-o", out, *client_args(server))


def test_missing_key_dry_run_and_checkpoint_flags(server, tmp_path, cli, monkeypatch):
    monkeypatch.delenv(ENV)
    args = cli_generate(server, tmp_path)
    r = cli(*args)
    assert r.code == 2 and f"{ENV} is not set" in r.stderr
    assert not (tmp_path / "g.jsonl").exists() and not (tmp_path / "g.jsonl.cache").exists()
    r = cli(*args, "--dry-run", "--json")
    assert r.code == 0, r.stderr
    d = r.json()
    assert d["requests"] == 4 and d["total"] == 4 and d["cost_estimate"] > 0 and d["priced"]
    assert server.log == [] and not (tmp_path / "g.jsonl").exists()
    r = cli(*args, "--dry-run")
    assert r.code == 0 and "nothing sent" in r.stdout
    with pytest.raises(UsageError, match="--retry-failed and --dry-run are for `method: api`"):
        generate_file(tmp_path, tmp_path / "test.jsonl", tmp_path / "x.jsonl", dry_run=True)


def test_recipe_errors(server, tmp_path, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "method: api\nclient: {json_mode: true, params: {response_format: x}}\nprompt: {system: 'hi $nope'}\n"
    )
    r = cli("validate", bad)
    assert (
        r.code == 2
        and "client.json_mode: must be false" in r.stderr
        and "client.params.response_format" in r.stderr
    )
    r = cli("generate", bad, "-i", data(tmp_path), "-o", tmp_path / "g.jsonl")
    assert r.code == 2 and "Traceback" not in r.stderr
    bad.write_text("method: api\nprompt: {system: 'hi $nope'}\n")
    r = cli("generate", bad, "-i", data(tmp_path), "-o", tmp_path / "g.jsonl", *client_args(server))
    assert r.code == 2 and "unknown placeholder(s) ['nope']" in r.stderr
    assert server.log == []
    r = cli("train", "api/persona")
    assert r.code == 2 and "not trained" in r.stderr
    r = cli("generate", "finetune/tiny", "-i", data(tmp_path), "-o", tmp_path / "g.jsonl")
    assert r.code == 2 and "generate takes a trained checkpoint" in r.stderr
    for name in ("api/persona", "api/profile", "api/attributes"):
        r = cli("validate", name)
        assert r.code == 0 and "method api" in r.stdout
    with pytest.raises(ConfigError):
        gen(server, tmp_path, "api/persona", "g.jsonl", "limits.concurrency=0")


def test_cli_summary_and_eval_of_an_api_output(server, tmp_path, cli):
    args = cli_generate(server, tmp_path)
    r = cli(*args)
    assert r.code == 0, r.stderr
    assert "requests sent" in r.stdout and "cost" in r.stdout and KEY not in r.stdout + r.stderr
    r = cli(
        "eval",
        tmp_path / "g.jsonl",
        "--metrics",
        "dist-1,bleu-1",
        "--compare",
        tmp_path / "g.jsonl",
        "--json",
    )
    assert r.code == 0, r.stderr
    assert r.json()["comparisons"]["n"] == 4


def test_chat_with_an_api_recipe(server, monkeypatch, capsys):
    import io

    from personadlg.cli import main

    server.fault_for = lambda prompt: None
    sent = []

    def reply(body):
        sent.append(body)
        if body["messages"][-1]["content"] == "cursed question":
            return ""  # an empty reply, every time: the message fails after its retries
        return echo_reply(body)

    server.reply_for = reply
    script = "/persona i keep bees .\nhello there\ncursed question\n/attributes attitude=optimistic\nhow are you?\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    with pytest.raises(SystemExit) as e:
        main(["chat", "api/attributes", *client_args(server), "prompt.max_invalid=1"])
    lines = capsys.readouterr().out.splitlines()
    assert e.value.code == 0, lines
    assert lines[0] == "(persona: i keep bees .)"
    assert lines[1] == "bot> " + echo_reply(sent[0])
    assert lines[2].startswith("error: gpt-4o-mini gave no reply (empty_reply")
    assert lines[3] == "(attributes: attitude=optimistic)"
    assert lines[4] == "bot> " + echo_reply(sent[-1])
    last = sent[-1]["messages"]
    assert "Your persona:\n- i keep bees ." in last[0]["content"]
    assert "- attitude: optimistic: answers with an optimistic outlook." in last[0]["content"]
    # the unanswered message is not part of the conversation
    assert [m["content"] for m in last[1:]] == ["hello there", echo_reply(sent[0]), "how are you?"]
    assert len(sent) == 1 + 2 + 1  # the failed message was tried twice (max_invalid 1)
