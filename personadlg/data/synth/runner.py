"""`personadlg synth`: run every unit of a recipe through the engine (`personadlg.llm`), concurrently,
resumably, within budget.

Each unit ends exactly once in the output or in the failure file: its journal state is `ok` or
`failed`, units already `ok` are never requested again, and `--retry-failed` retries the failed
ones. A run killed at any moment resumes where it stopped; the output file is rewritten atomically
from the journal.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from personadlg import __version__
from personadlg.data.jsonl import atomic_outputs, dumps
from personadlg.data.lock import exclusive_lock, lock_path_for
from personadlg.data.paths import check_outputs
from personadlg.data.synth.config import SynthConfig
from personadlg.data.synth.parse import check_dialogue, parse_reply
from personadlg.data.synth.prompts import Unit, iter_units, load_template, load_topics
from personadlg.errors import UsageError
from personadlg.llm import paths
from personadlg.llm.client import Reply, api_key
from personadlg.llm.cost import estimate
from personadlg.llm.journal import Journal
from personadlg.llm.resume import Resumed, resume, still_to_send
from personadlg.llm.runner import Progress, Stats

logger = logging.getLogger(__name__)

WHAT = "synth"
JOURNAL_FILE = "journal.jsonl"
SUMMARY_FILE = "last_run.json"


def record_for(
    cfg: SynthConfig,
    unit: Unit,
    messages: list[dict[str, str]],
    template_tag: str,
    reply: Reply,
    attempts: int,
) -> dict[str, Any]:
    """The dialogue record of a synthesized unit."""
    rec: dict[str, Any] = {
        "id": f"synth-{unit.key[:16]}",
        "messages": messages,
        "attributes": dict(unit.target),
        "topic": unit.topic.text,
    }
    if unit.topic.persona:
        rec["persona"] = list(unit.topic.persona)
    rec["meta"] = {
        "source": "synth",
        "unit": unit.name,
        "model": cfg.client.model,
        "template": template_tag,
        "request_id": reply.request_id,
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
        },
        "attempts": attempts,
    }
    return rec


def plan(cfg: SynthConfig) -> tuple[list[Unit], str]:
    """Every unit of the recipe and the template's tag (outputs checked against the inputs and the
    journal first)."""
    check_outputs(
        {
            "output": cfg.output_path,
            "the failures file": failed_file(cfg),
            "the journal": cfg.cache_path / JOURNAL_FILE,
            "the run summary": cfg.cache_path / SUMMARY_FILE,
        },
        {"topics": cfg.topics, "template": cfg.template},
    )
    template, tag = load_template(cfg.template)
    units = list(iter_units(cfg, template, load_topics(cfg.topics)))
    check_distinct(units)
    return units, tag


def start(cfg: SynthConfig) -> tuple[list[Unit], str]:
    """`plan`, then what must hold before a run creates anything: the output is fresh or this
    journal's, and the key is set."""
    units, tag = plan(cfg)
    check_fresh_output(cfg)
    api_key(cfg.client)
    return units, tag


def output_lock(cfg: SynthConfig) -> AbstractContextManager[None]:
    """The output's lock: one run writes an output at a time, whatever its `cache_dir`."""
    out = cfg.output_path
    return exclusive_lock(lock_path_for(out), target=out, what=WHAT)


@contextmanager
def held(cfg: SynthConfig, units: list[Unit], *, retry_failed: bool) -> Iterator[Resumed[Unit]]:
    """The output locked and the journal resumed for UNITS, for the block."""
    with (
        output_lock(cfg),
        resume(
            units, cfg.cache_path, what=WHAT, lock=exclusive_lock, retry_failed=retry_failed
        ) as run,
    ):
        yield run


def check_distinct(units: list[Unit]) -> None:
    """Refuse (exit 2) two units that would send the same request: they would share one journal
    entry, so one reply would be paid for twice and written once."""
    seen: dict[str, Unit] = {}
    for u in units:
        other = seen.setdefault(u.key, u)
        if other is not u:
            raise UsageError(
                f"units {other.name} and {u.name} send the same request (topic {other.topic.text!r} "
                f"and topic {u.topic.text!r} give the same prompt): remove repeated topics, or use "
                "per_target for more dialogues of one topic; a template must use $topic"
            )


def check_fresh_output(cfg: SynthConfig) -> None:
    """Refuse (exit 2) an output file that exists while the journal it would be rewritten from does
    not: it was not written by this recipe's runs, and rewriting it would lose it."""
    journal = cfg.cache_path / JOURNAL_FILE
    for name, path in (("output", cfg.output_path), ("the failures file", failed_file(cfg))):
        if path.is_file() and path.stat().st_size > 0 and not journal.is_file():
            raise UsageError(
                f"{name} {path}: exists, and there is no journal {journal} it was written from; "
                "synth rewrites its output from its journal, so choose another output (or move "
                "this file away)"
            )


def dry_run(cfg: SynthConfig, *, retry_failed: bool = False) -> dict[str, Any]:
    """Units, estimated tokens and cost; sends nothing and needs no key."""
    units, tag = plan(cfg)
    todo = still_to_send(
        units, cfg.cache_path, retry_failed=retry_failed, what=WHAT, lock=exclusive_lock
    )
    return {
        "units": len(units),
        "pending": len(todo),
        "template": tag,
        "model": cfg.client.model,
        "mode": cfg.mode,
        **estimate(cfg, todo),
        "targets": len(cfg.target_list()),
    }


def synthesize(
    cfg: SynthConfig, *, retry_failed: bool = False, on_progress: Progress | None = None
) -> dict[str, Any]:
    """Run (or resume) the recipe in live mode; rewrite the output and failure files; return a summary.

    Raises:
        FatalAPIError: authentication or quota errors (completed units stay in the journal).
    """
    units, tag = start(cfg)

    def accept(unit: Unit, reply: Reply, attempts: int) -> dict[str, Any]:
        messages = parse_reply(reply.text)
        check_dialogue(messages, cfg.turns)
        return {"record": record_for(cfg, unit, messages, tag, reply, attempts)}

    started = time.perf_counter()
    with held(cfg, units, retry_failed=retry_failed) as run:
        try:
            run.send(
                cfg,
                accept=accept,
                failed_fields=lambda unit: {"topic": unit.topic.text, "target": unit.target},
                on_progress=on_progress,
            )
        finally:
            summary = finish(cfg, run.journal, run.stats, started, units=units)
    return summary


def write_outputs(
    journal: Journal, output: Path, failed: Path, *, units: list[Unit]
) -> tuple[int, int, int]:
    """Rewrite OUTPUT (the dialogue records of UNITS answered ok) and FAILED (those of UNITS whose
    last answer failed), atomically, in the units' order; return their sizes and how many other
    units the journal holds answers of (another configuration's: kept in the journal, not written)."""
    final = journal.final(u.key for u in units)
    n_ok = n_failed = 0
    with atomic_outputs(output, failed) as (f_ok, f_fail):
        assert f_ok is not None and f_fail is not None
        for unit in units:
            entry = final.get(unit.key)
            if entry is None:
                continue
            if entry["status"] == "ok":
                f_ok.write(dumps(entry["record"]) + "\n")
                n_ok += 1
            else:
                f_fail.write(dumps({k: v for k, v in entry.items() if k != "status"}) + "\n")
                n_failed += 1
    others = sum(
        1 for key, state in journal.state.items() if key not in final and state != "submitted"
    )
    return n_ok, n_failed, others


def finish(
    cfg: SynthConfig, journal: Journal, stats: Stats, started: float, *, units: list[Unit]
) -> dict[str, Any]:
    """Rewrite the outputs from the journal and write the run summary beside it."""
    failed_path = failed_file(cfg)
    n_ok, n_failed, others = write_outputs(journal, cfg.output_path, failed_path, units=units)
    if others:
        logger.warning(
            "%s: %d answered units are not in this recipe (an earlier configuration: other topics, "
            "template, model or parameters); they stay in the journal and are not written",
            cfg.cache_path / JOURNAL_FILE,
            others,
        )
    summary = {
        "version": __version__,
        "model": cfg.client.model,
        "mode": cfg.mode,
        "units": stats.total,
        "already_done": stats.already_done,
        "ok_now": stats.ok,
        "failed_now": dict(stats.failed),
        "retries": dict(stats.retries),
        "requests": stats.requests,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cost": round(stats.cost, 6),
        "seconds": round(time.perf_counter() - started, 3),
        "stopped": stats.stopped,
        "output": str(cfg.output_path),
        "output_dialogues": n_ok,
        "failed_file": str(failed_path),
        "failed_units": n_failed,
        "pending": stats.total - n_ok - n_failed,
        "other_configurations": others,
        "state": journal.counts(),
    }
    (cfg.cache_path / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def failed_file(cfg: SynthConfig) -> Path:
    """`OUTPUT.failed.jsonl`, beside the output."""
    return paths.failed_file(cfg.output_path)
