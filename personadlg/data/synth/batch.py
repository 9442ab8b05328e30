"""Batch mode: the OpenAI Batch API (half the price of live requests).

`submit` writes the pending units as request files (`custom_id` = unit key; at most
`batch.max_requests` lines and `batch.max_bytes` per file), uploads each, creates a batch and
records its id and units in the journal. `collect` (`personadlg synth RECIPE --collect`) checks the
recorded batches, downloads the results and error files of finished ones, and merges them into
the same journal and output: every unit of a finished batch becomes `ok` or `failed`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from personadlg.data.lock import exclusive_lock
from personadlg.data.synth.config import SynthConfig
from personadlg.data.synth.parse import check_dialogue, parse_reply
from personadlg.data.synth.prompts import Unit
from personadlg.data.synth.runner import (
    WHAT,
    finish,
    held,
    output_lock,
    plan,
    record_for,
    start,
)
from personadlg.llm.client import make_client, reply_from_body
from personadlg.llm.config import request_params
from personadlg.llm.cost import price
from personadlg.llm.journal import Journal
from personadlg.llm.parse import ParseError, printable
from personadlg.llm.redact import redact
from personadlg.llm.retries import FatalAPIError, classify
from personadlg.llm.runner import Stats, believable_usage, completion_reserve

logger = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "expired", "cancelled")


def request_lines(cfg: SynthConfig, units: list[Unit]) -> Iterator[tuple[Unit, bytes]]:
    params = request_params(cfg)
    for u in units:
        body = {"model": cfg.client.model, "messages": list(u.messages), **params}
        line = {"custom_id": u.key, "method": "POST", "url": "/v1/chat/completions", "body": body}
        yield u, (json.dumps(line, ensure_ascii=False) + "\n").encode()


def chunks(cfg: SynthConfig, units: list[Unit]) -> Iterator[tuple[list[Unit], bytes]]:
    """Request files within the API's limits."""
    batch: list[Unit] = []
    data = bytearray()
    for u, line in request_lines(cfg, units):
        if batch and (
            len(batch) >= cfg.batch.max_requests or len(data) + len(line) > cfg.batch.max_bytes
        ):
            yield batch, bytes(data)
            batch, data = [], bytearray()
        batch.append(u)
        data += line
    if batch:
        yield batch, bytes(data)


async def _call(coro: Any) -> Any:
    try:
        return await coro
    except Exception as err:
        kind = classify(err)
        if kind.action == "stop":
            raise FatalAPIError(f"{WHAT} stopped: {kind.message}") from None
        raise


def submit(cfg: SynthConfig, *, retry_failed: bool = False) -> dict[str, Any]:
    """Upload request files for the pending units and create batches; record them in the journal."""
    units, _ = start(cfg)
    started = time.perf_counter()
    created = []

    async def go(journal: Journal, todo: list[Unit]) -> None:
        client = make_client(cfg.client)
        try:
            for i, (group, data) in enumerate(chunks(cfg, todo)):
                f = await _call(
                    client.files.create(file=(f"personadlg-synth-{i}.jsonl", data), purpose="batch")
                )
                b = await _call(
                    client.batches.create(
                        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
                    )
                )
                journal.append(
                    {
                        "status": "batch",
                        "id": b.id,
                        "input_file_id": f.id,
                        "units": [u.key for u in group],
                        "created": time.time(),
                    }
                )
                for u in group:
                    journal.append({"status": "submitted", "unit": u.key, "batch": b.id})
                created.append({"id": b.id, "requests": len(group), "bytes": len(data)})
                logger.info(
                    "created batch %s with %d requests (%d bytes)", b.id, len(group), len(data)
                )
        finally:
            await client.close()

    with held(cfg, units, retry_failed=retry_failed) as run:
        try:
            if run.todo:
                asyncio.run(go(run.journal, run.todo))
        finally:
            summary = finish(cfg, run.journal, run.stats, started, units=units)
    summary["batches_created"] = created
    return summary


def collect(cfg: SynthConfig) -> dict[str, Any]:
    """Check the recorded batches (polling until they finish or `batch.collect_timeout`) and merge their results."""
    units, tag = plan(cfg)
    by_key = {u.key: u for u in units}
    stats = Stats(total=len(units))
    started = time.perf_counter()
    report: dict[str, str] = {}

    async def go(journal: Journal) -> None:
        client = make_client(cfg.client)
        try:
            deadline = time.monotonic() + cfg.batch.collect_timeout
            while True:
                open_batches = [bid for bid, b in journal.batches.items() if not b.get("done")]
                for bid in open_batches:
                    b = await _call(client.batches.retrieve(bid))
                    report[bid] = b.status
                    if b.status in TERMINAL:
                        await _merge(client, cfg, journal, stats, tag, by_key, bid, b)
                if (
                    all(b.get("done") for b in journal.batches.values())
                    or time.monotonic() >= deadline
                ):
                    return
                await asyncio.sleep(cfg.batch.poll_interval)
        finally:
            await client.close()

    with output_lock(cfg), Journal(cfg.cache_path, what=WHAT, lock=exclusive_lock) as journal:
        try:
            if journal.batches:
                asyncio.run(go(journal))
        finally:
            summary = finish(cfg, journal, stats, started, units=units)
        summary["batches"] = report
        summary["batches_open"] = sum(1 for b in journal.batches.values() if not b.get("done"))
    return summary


async def _merge(
    client: Any,
    cfg: SynthConfig,
    journal: Journal,
    stats: Stats,
    tag: str,
    by_key: dict[str, Unit],
    bid: str,
    b: Any,
) -> None:
    seen: set[str] = set()
    for file_id in (getattr(b, "output_file_id", None), getattr(b, "error_file_id", None)):
        if not file_id:
            continue
        content = await _call(client.files.content(file_id))
        for line in content.text.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                row = None
            if not isinstance(row, dict):
                logger.warning("batch %s: a result line that is not a JSON object, ignored", bid)
                continue  # its unit, if any, is failed below as having no result
            key = row.get("custom_id")
            unit = by_key.get(key) if isinstance(key, str) else None
            if unit is None or key in seen or journal.state.get(unit.key) == "ok":
                continue
            seen.add(unit.key)
            _merge_row(cfg, journal, stats, tag, unit, row)
    for key in journal.batches[bid].get("units", []):
        if key not in seen and journal.state.get(key) == "submitted" and key in by_key:
            u = by_key[key]
            journal.append(
                {
                    "status": "failed",
                    "unit": key,
                    "name": u.name,
                    "class": f"batch_{b.status}",
                    "error": f"no result in batch {bid} ({b.status})",
                    "attempts": 1,
                    "topic": u.topic.text,
                    "target": u.target,
                }
            )
            stats.failed[f"batch_{b.status}"] += 1
    journal.append({"status": "batch-done", "id": bid, "batch_status": b.status})


def _merge_row(
    cfg: SynthConfig, journal: Journal, stats: Stats, tag: str, unit: Unit, row: dict[str, Any]
) -> None:
    """Journal one result line of a batch for UNIT: its dialogue (ok), or why there is none (failed)."""
    response = row.get("response") or {}
    body = response.get("body") or {}
    error = row.get("error")
    status = response.get("status_code")
    if error or status != 200:
        detail = redact(json.dumps(error or body.get("error") or body))[:500]
        _fail(journal, stats, unit, "batch_error" if error else f"http_{status}", detail)
        return
    try:
        reply = reply_from_body(body, request_id=response.get("request_id"))
    except ValueError as err:
        _fail(journal, stats, unit, "malformed_response", str(err))
        return
    reply = believable_usage(reply, unit.messages, completion_reserve(cfg))
    cost = price(cfg, reply.prompt_tokens, reply.completion_tokens)
    stats.prompt_tokens += reply.prompt_tokens
    stats.completion_tokens += reply.completion_tokens
    stats.cost += cost
    try:
        messages = parse_reply(reply.text)
        check_dialogue(messages, cfg.turns)
    except ParseError as err:
        _fail(journal, stats, unit, "unparseable", str(err))
        return
    journal.append(
        {
            "status": "ok",
            "unit": unit.key,
            "name": unit.name,
            "record": record_for(cfg, unit, messages, tag, reply, 1),
            "attempts": 1,
            "cost": cost,
        }
    )
    stats.ok += 1


def _fail(journal: Journal, stats: Stats, unit: Unit, cls: str, error: str) -> None:
    journal.append(
        {
            "status": "failed",
            "unit": unit.key,
            "name": unit.name,
            "class": cls,
            "error": printable(error),
            "attempts": 1,
            "topic": unit.topic.text,
            "target": unit.target,
        }
    )
    stats.failed[cls] += 1
