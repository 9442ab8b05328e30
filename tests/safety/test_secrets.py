"""The API key stays secret even when the server echoes it in its error bodies."""

from __future__ import annotations

import pytest

from personadlg.llm.redact import redact
from tests.fake_openai import FakeOpenAI
from tests.synth.test_synth import KEY, assert_key_never_written


@pytest.fixture
def echo_server():
    s = FakeOpenAI(echo_auth=True).start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("PDLG_SYNTH_KEY", KEY)


def _synth(cli, server, tmp_path, *extra):
    return cli(
        "synth",
        "synth/miracle",
        f"client.base_url={server.base_url}",
        "client.api_key_env=PDLG_SYNTH_KEY",
        f"output={tmp_path / 'out.jsonl'}",
        "max_topics=2",
        "client.timeout=2",
        "client.backoff_base=0.01",
        "client.max_retries=1",
        "limits.concurrency=2",
        *extra,
    )


def test_an_echoed_key_is_redacted_from_failures_journal_and_messages(echo_server, tmp_path, cli):
    echo_server.fault_for = lambda prompt: "400" if "pessimistic" in prompt else None
    r = _synth(cli, echo_server, tmp_path)
    assert r.code == 0, r.stderr
    failed = (tmp_path / "out.failed.jsonl").read_text()
    assert "you sent: [REDACTED]" in failed  # the server's message is kept, the key is not
    assert KEY not in r.stdout + r.stderr
    assert_key_never_written(tmp_path)


def test_an_echoed_key_is_redacted_from_the_401_message(echo_server, tmp_path, cli):
    echo_server.fault_for = lambda prompt: "401"
    r = _synth(cli, echo_server, tmp_path)
    assert r.code == 1 and "the API refused the key (401)" in r.stderr
    assert KEY not in r.stdout + r.stderr and "[REDACTED]" in r.stderr
    assert_key_never_written(tmp_path)


def test_redact_removes_authorization_values_and_bearer_tokens():
    text = 'Authorization: Bearer abc.def-123456 {"api_key": "zz-999999"} token Bearer qwertyuiop'
    out = redact(text)
    assert "abc.def-123456" not in out and "zz-999999" not in out and "qwertyuiop" not in out
