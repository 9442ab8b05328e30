"""`run_jobs`: every job requested once, concurrently, within the rate limits and the budget, each
result (`ok` or `failed`) recorded in a sink; and the run's counters (`Stats`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from personadlg.llm.client import Reply, chat, make_client
from personadlg.llm.config import ApiRecipe, request_params
from personadlg.llm.cost import price, prompt_tokens_estimate
from personadlg.llm.job import J, Sink
from personadlg.llm.limits import SlidingWindowLimiter
from personadlg.llm.parse import ParseError, printable
from personadlg.llm.redact import redact
from personadlg.llm.retries import FatalAPIError, backoff, classify

logger = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Stats:
    total: int = 0
    already_done: int = 0
    ok: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)  # requests sent again, by cause
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


def believable_usage(reply: Reply, messages: tuple[dict[str, str], ...], reserve: int) -> Reply:
    """REPLY with each usage count the server got wrong (`Reply.bad_usage`: negative, fractional,
    not finite, absurdly large) replaced by an estimate, with a warning: the prompt's ~4 characters
    per token, and RESERVE (max_tokens, the most a reply may be billed) for the completion. The
    reply is kept (refusing it would send the request again, uncharged), and the run's cost only
    grows, so `limits.max_cost` still stops it."""
    if not reply.bad_usage:
        return reply
    logger.warning(
        "the server reported unbelievable usage (%s) for request %s; charging an estimate instead",
        ", ".join(reply.bad_usage),
        reply.request_id or "?",
    )
    bad = reply.bad_usage
    return dataclasses.replace(
        reply,
        prompt_tokens=prompt_tokens_estimate(messages)
        if "prompt_tokens" in bad
        else reply.prompt_tokens,
        completion_tokens=reserve if "completion_tokens" in bad else reply.completion_tokens,
        bad_usage=(),
    )


def completion_reserve(cfg: ApiRecipe) -> int:
    """The most completion tokens one request may be billed: max_tokens (or max_completion_tokens),
    else the recipe's estimate."""
    params = request_params(cfg)
    return int(
        params.get("max_tokens")
        or params.get("max_completion_tokens")
        or cfg.completion_tokens_estimate
    )


async def run_jobs(
    cfg: ApiRecipe,
    todo: Iterable[J],
    journal: Sink,
    stats: Stats,
    *,
    accept: Callable[[J, Reply, int], dict[str, Any]],
    what: str,
    failed_fields: Callable[[J], dict[str, Any]] | None = None,
    max_invalid: int | None = None,
    on_progress: Progress | None = None,
) -> None:
    """Request every job of TODO once, concurrently, within the rate limits and budget; journal each result.

    ACCEPT(job, reply, attempts) turns a reply into the fields of the job's `ok` journal entry, or
    raises ParseError (counted under its `kind`), and the job is retried. Transport faults are
    retried as `client.max_retries` allows (each attempt bounded by `client.timeout` as a whole);
    MAX_INVALID (None: no own limit) caps the retries of replies ACCEPT refuses. Unbelievable
    usage counts are charged as estimates (`believable_usage`). At most `limits.concurrency`
    workers run, and no more than there are jobs. A job that runs out of retries is journalled
    `failed`, with FAILED_FIELDS(job) added. WHAT names the run in the error that stops it.

    Raises:
        FatalAPIError: authentication or quota errors (what was journalled stays).
    """
    client = make_client(cfg.client)
    params = request_params(cfg)
    rpm = SlidingWindowLimiter(cfg.limits.rpm)
    tpm = SlidingWindowLimiter(cfg.limits.tpm)
    reserve = completion_reserve(cfg)
    stop = asyncio.Event()
    jobs: Iterator[J] = iter(todo)
    workers = min(cfg.limits.concurrency, operator.length_hint(todo, cfg.limits.concurrency))

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
                    client,
                    cfg.client.model,
                    job.messages,
                    {**params, **getattr(job, "params", {})},
                    timeout=cfg.client.timeout,
                )
            except Exception as err:  # sorted by classify: stop, retry or fail
                kind = classify(err)
                if kind.action == "stop":
                    stop.set()
                    raise FatalAPIError(f"{what} stopped: {kind.message}") from None
                last = (kind.name, kind.message)
                if kind.action == "fail" or attempts > cfg.client.max_retries:
                    break  # no retry follows: none counted, no back-off
                stats.retries[kind.name] += 1
                await asyncio.sleep(backoff(attempts, cfg.client, kind.retry_after))
                continue
            finally:
                stats.in_flight -= 1
            reply = believable_usage(reply, job.messages, reserve)
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
                if (max_invalid is not None and invalid > max_invalid) or (
                    attempts > cfg.client.max_retries
                ):
                    break  # no retry follows: none counted
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
                "error": printable(redact(last[1])),
                "attempts": attempts,
                **(failed_fields(job) if failed_fields else {}),
            }
        )
        stats.failed[last[0]] += 1
        tick()

    async def worker() -> None:
        for job in jobs:  # a shared iterator: each job goes to one worker
            if stop.is_set():
                return
            if cfg.limits.max_cost and stats.cost >= cfg.limits.max_cost:
                stats.stopped = f"budget of ${cfg.limits.max_cost:g} reached"
                stop.set()
                return
            await work(job)

    try:
        tasks = [asyncio.create_task(worker()) for _ in range(max(workers, 1))]
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
