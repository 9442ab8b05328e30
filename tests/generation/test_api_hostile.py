"""Hostile runs of `generate` with an api recipe and of `eval --judge`: reruns with other targets or
limits keep what the output holds, a key echoed into a reply never reaches a file, repeated input
ids, outputs that are the judge's cache, and client values that used to pass."""

from __future__ import annotations

import json

import pytest

from personadlg.errors import ConfigError
from personadlg.llm.client import reply_from_body
from personadlg.llm.redact import remember_secret
from personadlg.models.api.config import load_api_recipe
from tests.conftest import dialogue, read_jsonl, write_jsonl
from tests.generation.test_api import client_args, data, gen


@pytest.fixture
def server(fake_openai):
    from tests.fake_openai import echo_reply

    return fake_openai(reply_for=echo_reply)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("PDLG_API_KEY", "sk-test-API-HOSTILE-3131")


def _keys(path):
    return [
        (r["id"], json.dumps(r.get("target_attributes"), sort_keys=True)) for r in read_jsonl(path)
    ]


def test_a_rerun_with_other_targets_or_a_smaller_limit_keeps_the_records(server, tmp_path):
    first = gen(server, tmp_path, "api/attributes", "g.jsonl", targets={"attitude": "optimistic"})
    assert first["output_records"] == 4
    before = read_jsonl(tmp_path / "g.jsonl")
    second = gen(server, tmp_path, "api/attributes", "g.jsonl", targets={"attitude": "pessimistic"})
    assert second["generated"] == 4 and second["output_records"] == 8
    assert second["kept_from_earlier_runs"] == 4
    after = read_jsonl(tmp_path / "g.jsonl")
    assert after[:4] == before and len(set(_keys(tmp_path / "g.jsonl"))) == 8
    third = gen(
        server, tmp_path, "api/attributes", "g.jsonl", targets={"attitude": "pessimistic"}, limit=1
    )
    assert third["requests"] == 0 and third["output_records"] == 8
    key = lambda r: r["id"] + json.dumps(r["target_attributes"])  # noqa: E731
    assert sorted(read_jsonl(tmp_path / "g.jsonl"), key=key) == sorted(after, key=key)


def test_a_key_echoed_into_a_reply_is_redacted():
    remember_secret("sk-test-ECHOED-KEY-4646")
    body = {"choices": [{"message": {"content": "auth was Bearer sk-test-ECHOED-KEY-4646 ok"}}]}
    assert reply_from_body(body).text == "auth was Bearer [REDACTED] ok"
    # ordinary text that merely talks about keys is left alone
    body = {"choices": [{"message": {"content": "set api_key = your own"}}]}
    assert reply_from_body(body).text == "set api_key = your own"


def test_repeated_input_ids_are_refused(server, tmp_path, cli):
    src = write_jsonl(
        tmp_path / "in.jsonl", [dialogue("d1", "hi", "yo"), dialogue("d1", "hey", "ho")]
    )
    r = cli("generate", "api/persona", "-i", src, "-o", tmp_path / "o.jsonl", *client_args(server))
    assert r.code == 2 and f"{src}:2: field 'id': " in r.stderr and "already used" in r.stderr
    assert server.chat_requests() == [] and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("client.max_retries=1000000000", "client.max_retries: expected 0 to 100"),
        ("client.backoff_max=1e300", "client.backoff_max"),
        ("client.timeout=1e300", "client.timeout: expected seconds"),
        ("client.params.frequency_penalty=9", "frequency_penalty"),
        ("client.api_key_env=", "client.api_key_env: expected the name"),
    ],
)
def test_client_values_refused_at_load(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_api_recipe("api/persona", [override])


def test_validate_reads_generate_short_keys_for_an_api_recipe(cli):
    r = cli("validate", "api/persona", "temperature=0.2", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["client"]["params"]["temperature"] == 0.2


# -- eval --judge: outputs against the judge's cache --------------------------------------------


def _eval(cli, server, tmp_path, *extra):
    gens = tmp_path / "gen.jsonl"
    gen(server, tmp_path, "api/persona", "gen.jsonl")
    args = [f"client.base_url={server.base_url}", "client.api_key_env=PDLG_API_KEY"]
    judge_set = [a for x in args for a in ("--judge-set", x)]
    n = len(server.chat_requests())
    r = cli("eval", gens, "--judge", "judge/default", *judge_set, *extra)
    return r, len(server.chat_requests()) - n


def test_eval_out_that_is_the_judge_journal_or_cache_is_refused_first(server, tmp_path, cli):
    cache = tmp_path / "jc"
    cache.mkdir()
    (cache / "journal.jsonl").write_text("")
    r, sent = _eval(cli, server, tmp_path, "--judge-cache", cache, "--out", cache / "journal.jsonl")
    assert r.code == 2 and "the judge's journal" in r.stderr and sent == 0, r.stderr
    r, sent = _eval(
        cli, server, tmp_path, "--judge-cache", tmp_path / "new", "--out", tmp_path / "new"
    )
    assert r.code == 2 and "the judge cache" in r.stderr and sent == 0, r.stderr
    r, sent = _eval(cli, server, tmp_path, "--judge-cache", data(tmp_path))
    assert r.code == 2 and "is a file; expected a folder" in r.stderr and sent == 0, r.stderr
