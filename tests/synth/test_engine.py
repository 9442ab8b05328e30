"""The LLM-request engine (`personadlg.llm`) on its own: the journal's lock and states, `resume`,
the paths beside an output, and one `run_jobs` through the fake API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from personadlg.data.lock import exclusive_lock
from personadlg.errors import UsageError
from personadlg.llm.config import ClientConfig, LimitsConfig, LiveRequests
from personadlg.llm.journal import Journal
from personadlg.llm.paths import beside, cache_dir, failed_file
from personadlg.llm.resume import resume, still_to_send
from personadlg.llm.runner import Stats, run_jobs


class Job(NamedTuple):
    key: str
    name: str
    messages: tuple[dict[str, str], ...]


@dataclass
class Recipe(LiveRequests):
    client: ClientConfig
    limits: LimitsConfig
    prices: dict[str, dict[str, float]]
    completion_tokens_estimate: int = 10


def jobs(n: int) -> list[Job]:
    return [Job(f"k{i}", f"job {i}", ({"role": "user", "content": f"say {i}"},)) for i in range(n)]


def test_paths_beside_an_output(tmp_path):
    out = tmp_path / "gen.jsonl"
    assert failed_file(out) == tmp_path / "gen.failed.jsonl"
    assert beside(out, ".report.json") == tmp_path / "gen.report.json"
    assert cache_dir(out) == tmp_path / "gen.jsonl.cache"
    assert cache_dir(out, str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


def test_a_journal_is_held_exclusively_and_ok_is_final(tmp_path):
    with Journal(tmp_path, what="synth", lock=exclusive_lock) as journal:
        with pytest.raises(UsageError, match=r"in use by another `synth` \(pid \d+\)"):
            Journal(tmp_path, what="synth", lock=exclusive_lock)
        journal.append({"status": "ok", "unit": "a", "name": "a"})
        journal.append({"status": "failed", "unit": "a", "name": "a"})
        journal.append({"status": "failed", "unit": "b", "name": "b"})
    with (tmp_path / "journal.jsonl").open("a") as f:
        f.write('{"status": "ok", "unit": "c"')  # a last line torn by a kill
    with Journal(tmp_path, what="synth", lock=exclusive_lock) as journal:
        assert journal.state == {"a": "ok", "b": "failed"}
        assert journal.final(["a", "b", "c"])["a"]["status"] == "ok"


def test_resume_finds_what_is_left_and_skips_what_is_done_elsewhere(tmp_path):
    todo = jobs(4)
    assert still_to_send(todo, tmp_path, retry_failed=False, what="t", lock=exclusive_lock) == todo
    assert not (tmp_path / "journal.jsonl").exists()  # a dry run creates nothing
    with Journal(tmp_path, what="t", lock=exclusive_lock) as journal:
        journal.append({"status": "ok", "unit": "k0", "name": "job 0"})
        journal.append({"status": "failed", "unit": "k1", "name": "job 1"})
    with resume(todo, tmp_path, what="t", lock=exclusive_lock, skip=lambda j: j.key == "k3") as run:
        assert [j.key for j in run.todo] == ["k2"]
        assert (run.stats.total, run.stats.already_done) == (4, 3)
    with resume(todo, tmp_path, what="t", lock=exclusive_lock, retry_failed=True) as run:
        assert [j.key for j in run.todo] == ["k1", "k2", "k3"]


def test_run_jobs_sends_each_job_once_and_records_it(tmp_path, fake_openai):
    server = fake_openai(content_for=lambda prompt: prompt.upper())
    cfg = Recipe(
        client=ClientConfig(base_url=server.base_url, api_key_env=None, json_mode=False),
        limits=LimitsConfig(concurrency=3),
        prices={"gpt-4o-mini": {"input": 1.0, "output": 1.0}},
    )
    server.script.extend(["500", "429:0"])  # retried
    with resume(jobs(5), tmp_path, what="t", lock=exclusive_lock) as run:
        run.send(cfg, accept=lambda job, reply, attempts: {"text": reply.text})
        final = run.journal.final(j.key for j in jobs(5))
    assert {k: e["text"] for k, e in final.items()} == {f"k{i}": f"SAY {i}" for i in range(5)}
    assert run.stats.ok == 5 and run.stats.requests == 7 and run.stats.cost > 0
    with resume(jobs(5), tmp_path, what="t", lock=exclusive_lock) as run:
        assert run.todo == []
        run.send(cfg, accept=lambda job, reply, attempts: {})  # nothing to send
    assert len(server.chat_requests()) == 7


def test_a_sink_other_than_a_journal(fake_openai):
    server = fake_openai(content_for=lambda prompt: "fine")
    cfg = Recipe(
        client=ClientConfig(base_url=server.base_url, api_key_env=None, json_mode=False),
        limits=LimitsConfig(),
        prices={},
    )
    got: list[dict] = []

    class Sink:
        def append(self, entry: dict) -> None:
            got.append(entry)

    asyncio.run(
        run_jobs(
            cfg,
            iter(jobs(2)),
            Sink(),
            Stats(total=2),
            accept=lambda job, reply, attempts: {"text": reply.text},
            what="chat",
        )
    )
    assert sorted((e["unit"], e["status"], e["text"]) for e in got) == [
        ("k0", "ok", "fine"),
        ("k1", "ok", "fine"),
    ]


def test_the_engine_is_below_its_users():
    """llm/ imports none of its users, nor anything of data/ (the journal's lock is handed in)."""
    import ast

    root = Path(__file__).resolve().parents[2] / "personadlg" / "llm"
    for f in root.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(
                    (
                        "personadlg.data",
                        "personadlg.models",
                        "personadlg.generation",
                        "personadlg.metrics",
                        "personadlg.training",
                        "personadlg.cli",
                    )
                ), f"{f.name} imports {node.module}"
