"""`personadlg synth`: run every unit of a recipe through the API, concurrently, resumably, within budget.

Each unit ends exactly once in the output or in the failure file: its journal state is `ok` or
`failed`, units already `ok` are never requested again, and `--retry-failed` retries the failed
ones. A run killed at any moment resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from personadlg import __version__
from personadlg.data.paths import check_outputs
from personadlg.data.synth.client import (
    FatalAPIError,
    Reply,
    backoff,
    chat,
    classify,
    make_client,
    redact,
)
from personadlg.data.synth.config import ApiRecipe, SynthConfig
from personadlg.data.synth.journal import Journal
from personadlg.data.synth.limits import SlidingWindowLimiter
from personadlg.data.synth.parse import ParseError, check_dialogue, parse_reply
from personadlg.data.synth.prompts import (
    Unit,
    iter_units,
    load_template,
    load_topics,
    request_params,
)

logger = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Stats:
    total: int = 0
    already_done: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    stopped: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "done": self.already_done + self.ok,
            "ok": self.ok,
            "failed": sum(self.failed.values()),
            "retrying": sum(self.retries.values()),
            "in_flight": self.in_flight,
            "tokens": self.prompt_tokens + self.completion_tokens,
            "cost": self.cost,
        }


class Job(Protocol):
    """One request of a run: its journal key, a readable name and the chat messages to send.

    A job may also carry `params` (a dict merged over the recipe's request parameters for its
    request alone, e.g. a per-example `seed`)."""

    @property
    def key(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def messages(self) -> tuple[dict[str, str], ...]: ...


J = TypeVar("J", bound=Job)


class Sink(Protocol):
    """Where `run_jobs` records each result: a `Journal`, or any object with `append` (chat keeps
    its replies in memory)."""

    def append(self, entry: dict[str, Any]) -> None: ...


def price(cfg: ApiRecipe, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for the tokens under `prices[model]` (half in batch mode)."""
    p = cfg.prices.get(cfg.client.model, {})
    usd = (prompt_tokens * p.get("input", 0.0) + completion_tokens * p.get("output", 0.0)) / 1e6
    return usd * (0.5 if cfg.mode == "batch" else 1.0)


def prompt_tokens_estimate(messages: tuple[dict[str, str], ...]) -> int:
    """Prompt tokens of a request, estimated at ~4 characters per token."""
    return sum(len(m["content"]) for m in messages) // 4 + 8


def estimate(cfg: ApiRecipe, todo: Sequence[Job]) -> dict[str, Any]:
    """Estimated prompt / completion tokens and cost of requesting TODO (what --dry-run prints)."""
    prompt = sum(prompt_tokens_estimate(u.messages) for u in todo)
    completion = len(todo) * cfg.completion_tokens_estimate
    return {
        "prompt_tokens_estimate": prompt,
        "completion_tokens_estimate": completion,
        "cost_estimate": price(cfg, prompt, completion),
        "priced": cfg.client.model in cfg.prices,
    }


def record_for(
    cfg: SynthConfig,
    unit: Unit,
    messages: list[dict[str, str]],
    template_tag: str,
    reply: Reply,
    attempts: int,
) -> dict[str, Any]:
    """The dialogue record (ARCHITECTURE §2.1) of a synthesized unit."""
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
    """Every unit of the recipe and the template's tag (outputs checked against the inputs first)."""
    check_outputs(
        {"output": cfg.output_path, "the failures file": failed_file(cfg)},
        {"topics": cfg.topics, "template": cfg.template},
    )
    template, tag = load_template(cfg.template)
    return list(iter_units(cfg, template, load_topics(cfg.topics))), tag


def pending(units: Sequence[J], journal: Journal, retry_failed: bool) -> list[J]:
    """The jobs still to request: never requested, or failed when RETRY_FAILED."""
    wanted = {"failed"} if retry_failed else set()
    return [
        u for u in units if journal.state.get(u.key) is None or journal.state.get(u.key) in wanted
    ]


def still_to_send(
    jobs: Sequence[J], cache_dir: Path, *, retry_failed: bool, what: str = "synth"
) -> list[J]:
    """The jobs of JOBS the journal in CACHE_DIR has not answered (`pending`), for dry runs:
    creates nothing when there is no journal yet."""
    if not (cache_dir / "journal.jsonl").exists():
        return list(jobs)
    journal = Journal(cache_dir, what=what)
    try:
        return pending(jobs, journal, retry_failed)
    finally:
        journal.close()


def dry_run(cfg: SynthConfig, *, retry_failed: bool = False) -> dict[str, Any]:
    """Units, estimated tokens and cost; sends nothing and needs no key."""
    units, tag = plan(cfg)
    todo = still_to_send(units, cfg.cache_path, retry_failed=retry_failed)
    return {
        "units": len(units),
        "pending": len(todo),
        "template": tag,
        "model": cfg.client.model,
        "mode": cfg.mode,
        **estimate(cfg, todo),
        "targets": len(cfg.target_list()),
    }


async def run_jobs(
    cfg: ApiRecipe,
    todo: Iterator[J],
    journal: Sink,
    stats: Stats,
    *,
    accept: Callable[[J, Reply, int], dict[str, Any]],
    failed_fields: Callable[[J], dict[str, Any]] | None = None,
    max_invalid: int | None = None,
    on_progress: Progress | None = None,
    what: str = "synth",
) -> None:
    """Request every job of TODO once, concurrently, within the rate limits and budget; journal each result.

    ACCEPT(job, reply, attempts) turns a reply into the fields of the job's `ok` journal entry, or
    raises ParseError (counted under its `kind`), and the job is retried. Transport faults are
    retried as `client.max_retries` allows; MAX_INVALID (None: no own limit) caps the retries of
    replies ACCEPT refuses. A job that runs out of retries is journalled `failed`, with
    FAILED_FIELDS(job) added.

    Raises:
        FatalAPIError: authentication or quota errors (what was journalled stays).
    """
    client = make_client(cfg.client)
    params = request_params(cfg)
    rpm = SlidingWindowLimiter(cfg.limits.rpm)
    tpm = SlidingWindowLimiter(cfg.limits.tpm)
    reserve = int(
        params.get("max_tokens")
        or params.get("max_completion_tokens")
        or cfg.completion_tokens_estimate
    )
    stop = asyncio.Event()

    def tick() -> None:
        if on_progress:
            on_progress(stats.view())

    async def work(job: J) -> None:
        attempts = invalid = 0
        last = ("unexpected", "no attempt")
        while attempts <= cfg.client.max_retries:
            await rpm.acquire()
            await tpm.acquire(sum(len(m["content"]) for m in job.messages) // 4 + reserve)
            attempts += 1
            stats.requests += 1
            stats.in_flight += 1
            tick()
            try:
                reply = await chat(
                    client, cfg.client.model, job.messages, {**params, **getattr(job, "params", {})}
                )
            except Exception as err:  # sorted by classify: stop, retry or fail
                kind = classify(err)
                if kind.action == "stop":
                    stop.set()
                    raise FatalAPIError(f"{what} stopped: {kind.message}") from None
                last = (kind.name, kind.message)
                if kind.action == "fail":
                    break
                stats.retries[kind.name] += 1
                await asyncio.sleep(backoff(attempts, cfg.client, kind.retry_after))
                continue
            finally:
                stats.in_flight -= 1
            cost = price(cfg, reply.prompt_tokens, reply.completion_tokens)
            stats.prompt_tokens += reply.prompt_tokens
            stats.completion_tokens += reply.completion_tokens
            stats.cost += cost
            try:
                fields = accept(job, reply, attempts)
            except ParseError as err:
                last = (
                    err.kind,
                    f"{err}"
                    + (
                        " (the reply was cut at max_tokens)"
                        if reply.finish_reason == "length"
                        else ""
                    ),
                )
                invalid += 1
                if max_invalid is not None and invalid > max_invalid:
                    break
                stats.retries[err.kind] += 1
                continue
            journal.append(
                {
                    "status": "ok",
                    "unit": job.key,
                    "name": job.name,
                    **fields,
                    "attempts": attempts,
                    "cost": cost,
                }
            )
            stats.ok += 1
            tick()
            return
        journal.append(
            {
                "status": "failed",
                "unit": job.key,
                "name": job.name,
                "class": last[0],
                "error": redact(last[1]),
                "attempts": attempts,
                **(failed_fields(job) if failed_fields else {}),
            }
        )
        stats.failed[last[0]] += 1
        tick()

    async def worker() -> None:
        for job in todo:  # a shared iterator: each job goes to one worker
            if stop.is_set():
                return
            if cfg.limits.max_cost and stats.cost >= cfg.limits.max_cost:
                stats.stopped = f"budget of ${cfg.limits.max_cost:g} reached"
                stop.set()
                return
            await work(job)

    try:
        tasks = [asyncio.create_task(worker()) for _ in range(cfg.limits.concurrency)]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
    finally:
        await client.close()


async def _run_live(
    cfg: SynthConfig,
    todo: Iterator[Unit],
    journal: Journal,
    stats: Stats,
    tag: str,
    on_progress: Progress | None,
) -> None:
    def accept(unit: Unit, reply: Reply, attempts: int) -> dict[str, Any]:
        messages = parse_reply(reply.text)
        check_dialogue(messages, cfg.turns)
        return {"record": record_for(cfg, unit, messages, tag, reply, attempts)}

    await run_jobs(
        cfg,
        todo,
        journal,
        stats,
        accept=accept,
        failed_fields=lambda unit: {"topic": unit.topic.text, "target": unit.target},
        on_progress=on_progress,
    )


def synthesize(
    cfg: SynthConfig, *, retry_failed: bool = False, on_progress: Progress | None = None
) -> dict[str, Any]:
    """Run (or resume) the recipe in live mode; rewrite the output and failure files; return a summary.

    Raises:
        FatalAPIError: authentication or quota errors (completed units stay in the journal).
    """
    units, tag = plan(cfg)
    journal = Journal(cfg.cache_path)
    todo = pending(units, journal, retry_failed)
    stats = Stats(total=len(units), already_done=len(units) - len(todo))
    started = time.perf_counter()
    try:
        if todo:
            asyncio.run(_run_live(cfg, iter(todo), journal, stats, tag, on_progress))
    finally:
        summary = finish(cfg, journal, stats, started)
    return summary


def finish(cfg: SynthConfig, journal: Journal, stats: Stats, started: float) -> dict[str, Any]:
    """Rewrite the outputs from the journal and write the run summary beside it."""
    failed_path = failed_file(cfg)
    n_ok, n_failed = journal.write_outputs(cfg.output_path, failed_path)
    journal.close()
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
        "state": journal.counts(),
    }
    (cfg.cache_path / "last_run.json").write_text(json.dumps(summary, indent=2))
    return summary


def failed_file(cfg: SynthConfig) -> Path:
    p = cfg.output_path
    return p.with_name(p.name.removesuffix(".jsonl") + ".failed.jsonl")
