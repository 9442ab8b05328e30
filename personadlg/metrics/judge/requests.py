"""Sending the judge's requests through the engine (`personadlg.llm`), with a cache that makes every judgement a one-time cost.

The cache is the engine's journal (`CACHE_DIR/journal.jsonl`, append-only, held exclusively while a
metric runs): each request is journalled `ok` (the validated judgement) or `failed`. A request
already `ok` is never sent again, whichever file or metric asks for it; a `failed` one is retried
by the next eval. All pending requests of a metric go out concurrently in one `run_jobs` call,
rate-limited, retried and within `limits.max_cost`; an authentication or quota error stops the
run (FatalAPIError, exit 1) with what was judged kept in the cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personadlg.data.lock import exclusive_lock
from personadlg.llm.client import Reply, api_key
from personadlg.llm.cost import estimate
from personadlg.llm.resume import resume, still_to_send
from personadlg.llm.runner import Stats
from personadlg.metrics.judge.config import JudgeConfig
from personadlg.metrics.judge.prompts import JudgeRequest

logger = logging.getLogger(__name__)

WHAT = "eval --judge"
Parse = Callable[[str | None], dict[str, Any]]


@dataclass
class Judged:
    """What a metric's requests gave: the final cache entry of each request key, and the run's figures."""

    entries: dict[str, dict[str, Any]]
    unique: int
    cached: int
    stats: Stats

    def judgement(self, key: str) -> dict[str, Any] | None:
        entry = self.entries.get(key)
        return entry["judgement"] if entry is not None and entry["status"] == "ok" else None


def unique(requests: Sequence[JudgeRequest]) -> list[JudgeRequest]:
    """REQUESTS without repeats (the same key once, first name kept), in order."""
    seen: dict[str, JudgeRequest] = {}
    for r in requests:
        seen.setdefault(r.key, r)
    return list(seen.values())


def count_pending(cache_dir: Path, requests: Sequence[JudgeRequest]) -> list[JudgeRequest]:
    """The requests of REQUESTS (deduplicated) the cache has no `ok` judgement for; sends nothing."""
    return still_to_send(
        unique(requests), cache_dir, retry_failed=True, what=WHAT, lock=exclusive_lock
    )


def plan(cfg: JudgeConfig, cache_dir: Path, requests: Sequence[JudgeRequest]) -> dict[str, Any]:
    """Requests, those already cached and those to send, with the engine's token and cost estimate."""
    todo = count_pending(cache_dir, requests)
    n = len(unique(requests))
    return {"requests": n, "cached": n - len(todo), "to_send": len(todo), **estimate(cfg, todo)}


def _progress(label: str) -> Callable[[dict[str, Any]], None]:
    last = [time.monotonic()]

    def log(view: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last[0] >= 10:
            last[0] = now
            logger.info(
                "%s: %d of %d judged, %d failed, %d retrying, $%.4f",
                label,
                view["done"],
                view["total"],
                view["failed"],
                view["retrying"],
                view["cost"],
            )

    return log


def judge(
    cfg: JudgeConfig,
    requests: Sequence[JudgeRequest],
    parse: Parse,
    *,
    cache_dir: Path,
    label: str,
) -> Judged:
    """Every request of REQUESTS judged once: from the cache, else sent now (failed ones retried).

    Raises:
        UsageError: the API key's environment variable is not set (and something is to be sent).
        FatalAPIError: authentication or quota errors (what was judged stays in the cache).
    """
    todo_all = unique(requests)
    wanted = {r.key for r in todo_all}
    if count_pending(cache_dir, todo_all):
        api_key(cfg.client)  # a missing key stops before the cache is touched or anything is sent

    def accept(req: JudgeRequest, reply: Reply, attempts: int) -> dict[str, Any]:
        return {
            "judgement": parse(reply.text),
            "model": cfg.client.model,
            "request_id": reply.request_id,
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
            },
        }

    with resume(todo_all, cache_dir, what=WHAT, lock=exclusive_lock, retry_failed=True) as run:
        logger.info(
            "%s: %d judge requests, %d cached, %d to send (%s)",
            label,
            len(todo_all),
            run.stats.already_done,
            len(run.todo),
            cfg.client.model,
        )
        run.send(
            cfg, accept=accept, max_invalid=cfg.judge.max_invalid, on_progress=_progress(label)
        )
        entries = run.journal.final(wanted)
    return Judged(entries, len(todo_all), run.stats.already_done, run.stats)
