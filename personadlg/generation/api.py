"""`personadlg generate RECIPE` for `method: api` (the recipe and its prompts: models/api/): one chat request per (example, target), through
synth's runner (client, limiter, retries, journal, cost, budget), exactly once.

Each request is journalled (`OUT.cache/journal.jsonl`) as `ok` (the reply text, request id, usage)
or `failed`; requests already `ok` are never sent again, failed ones only with `retry_failed`, so
a run killed at any moment (`kill -9`) continues where it stopped and pays each answered request
once. OUT (example records with `generation`, as for a checkpoint, plus `api`: model, request id,
template hash, usage) and `OUT.failed.jsonl` are rewritten atomically from the journal, in input
order, when the run ends or stops (budget, an API error, Ctrl-C). The sidecar (`OUT.meta.json`)
records the recipe, the model, the template hash and the request parameters, so appending with
other settings is refused as for checkpoints.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from personadlg.config import to_dict
from personadlg.data.attributes import target_key
from personadlg.data.formats import FormatOptions
from personadlg.data.jsonl import atomic_outputs, dumps
from personadlg.data.lock import exclusive_lock, lock_path_for
from personadlg.data.paths import check_outputs
from personadlg.data.schema import Example
from personadlg.data.synth.client import Reply, api_key
from personadlg.data.synth.journal import Journal
from personadlg.data.synth.parse import ParseError
from personadlg.data.synth.prompts import request_params
from personadlg.data.synth.runner import Stats, estimate, pending, run_jobs, still_to_send
from personadlg.errors import PersonadlgError
from personadlg.generation.output import check_resumable, sidecar_path, write_sidecar
from personadlg.metrics.collapse import collapse_report
from personadlg.models.api.config import ApiConfig, load_api_recipe, recipe_overrides
from personadlg.models.api.prompt import ApiJob, build_job, load_template
from personadlg.models.base import Generations

logger = logging.getLogger(__name__)

WHAT = "generate (api)"
Progress = Callable[[int, int], None]


class EmptyReply(ParseError):
    kind = "empty_reply"


def failed_file(out: str | Path) -> Path:
    """`OUT.jsonl` → `OUT.failed.jsonl`, beside the output."""
    p = Path(out)
    return p.with_name(p.name.removesuffix(".jsonl") + ".failed.jsonl")


def cache_dir(cfg: ApiConfig, out: str | Path) -> Path:
    p = Path(out)
    return Path(cfg.cache_dir) if cfg.cache_dir else p.with_name(p.name + ".cache")


def output_settings(
    cfg: ApiConfig, tag: str, input: Path, input_sha256: str, turns: str
) -> dict[str, Any]:
    """The sidecar of an api output: no weights, so the model id, template hash and request settings
    stand where a checkpoint's fingerprint stands."""
    model = {
        "name": cfg.client.model,
        "base_url": cfg.client.base_url or "https://api.openai.com/v1",
        "template": tag,
        "context_turns": cfg.prompt.context_turns,
        "opening": cfg.prompt.opening,
        "attributes_sha256": "sha256:"
        + hashlib.sha256(json.dumps(to_dict(cfg.attributes), sort_keys=True).encode()).hexdigest()[
            :16
        ],
    }
    return {
        "checkpoint": str(cfg.source),
        "checkpoint_sha256": "",
        "method": "api",
        "api_model": cfg.client.model,
        "template": tag,
        "decoding": {
            **request_params(cfg),
            "seed": cfg.prompt.seed,
            "send_seed": cfg.prompt.send_seed,
        },
        "model": model,
        "input": str(input),
        "input_sha256": input_sha256,
        "turns": turns,
    }


def plan(
    cfg: ApiConfig,
    examples: list[Example],
    target_list: list[dict[str, str] | None],
) -> tuple[list[ApiJob], str]:
    """Every (example, target) request in output order, and the template's tag."""
    from personadlg.generation.generate import example_seed

    template, tag = load_template(cfg)
    jobs: list[ApiJob] = []
    for ex in examples:
        for t in target_list:
            seed = example_seed(cfg.prompt.seed, ex.id, t)
            jobs.append(build_job(cfg, template, len(jobs), ex, t, seed))
    return jobs, tag


def generate_api(
    recipe: str | Path,
    input: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    turns: str = "all",
    targets: dict[str, str] | None = None,
    combinations: bool = False,
    limit: int = 0,
    overwrite: bool = False,
    retry_failed: bool = False,
    dry_run: bool = False,
    input_format: str = "auto",
    format_options: FormatOptions | None = None,
    on_progress: Progress | None = None,
    method_check: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Generate a response for every (example, target) of INPUT with the api RECIPE into OUT.

    DRY_RUN: the requests still to send and their estimated tokens and cost; sends nothing, writes
    nothing, needs no key. Returns a summary (`generate_file`'s, plus requests, failures and cost).

    Raises:
        FatalAPIError: authentication or quota errors (OUT holds what was answered; rerun continues).
    """
    from personadlg.generation.generate import file_sha256, load_examples, targets_to_generate

    cfg = load_api_recipe(recipe, recipe_overrides(overrides))
    if method_check is not None:
        method_check("api")
    out_path, in_path = Path(out), Path(input)
    check_outputs(
        {
            "--out": out_path,
            "its sidecar": sidecar_path(out_path),
            "the failures file": failed_file(out_path),
        },
        {"--input": in_path, "the recipe": cfg.source, "the template": cfg.prompt.template},
    )
    examples = load_examples(in_path, turns, fmt=input_format, opts=format_options)
    if limit:
        examples = examples[:limit]
    target_list = targets_to_generate(cfg.space, targets=targets, combinations=combinations)
    jobs, tag = plan(cfg, examples, target_list)
    settings = output_settings(cfg, tag, in_path, file_sha256(in_path), turns)
    cache = cache_dir(cfg, out_path)
    if dry_run:
        return _dry_run(cfg, jobs, tag, cache, retry_failed, len(examples), len(target_list))
    api_key(cfg.client)  # a missing key stops the run before anything is created
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(lock_path_for(out_path), target=out_path, what="generate"):
        if overwrite:  # the journal stays: requests already answered are not paid for again
            for p in (out_path, sidecar_path(out_path), failed_file(out_path)):
                p.unlink(missing_ok=True)
        check_resumable(out_path, settings)
        write_sidecar(out_path, settings)
        kept = _existing(out_path)
        journal = Journal(cache, what=WHAT)
        started = time.perf_counter()
        todo = [
            j
            for j in pending(jobs, journal, retry_failed)
            if (j.example.id, target_key(j.target)) not in kept
        ]
        stats = Stats(total=len(jobs), already_done=len(jobs) - len(todo))
        logger.info("%d requests, %d to send", len(jobs), len(todo))
        try:
            if todo:
                asyncio.run(_send(cfg, todo, journal, stats, tag, on_progress))
        finally:
            written = _write(cfg, out_path, jobs, journal, kept)
            journal.close()
    return _summary(
        cfg, out_path, jobs, stats, written, tag, started, len(examples), len(target_list)
    )


def _dry_run(
    cfg: ApiConfig,
    jobs: list[ApiJob],
    tag: str,
    cache: Path,
    retry_failed: bool,
    n_examples: int,
    n_targets: int,
) -> dict[str, Any]:
    todo = still_to_send(jobs, cache, retry_failed=retry_failed, what=WHAT)
    return {
        "dry_run": True,
        "examples": n_examples,
        "targets": n_targets,
        "total": len(jobs),
        "requests": len(todo),
        "model": cfg.client.model,
        "template": tag,
        **estimate(cfg, todo),
    }


async def _send(
    cfg: ApiConfig,
    todo: list[ApiJob],
    journal: Journal,
    stats: Stats,
    tag: str,
    on_progress: Progress | None,
) -> None:
    def accept(job: ApiJob, reply: Reply, attempts: int) -> dict[str, Any]:
        text = (reply.text or "").strip()
        if not text:
            raise EmptyReply("the reply is empty")
        return {
            "text": text,
            "request_id": reply.request_id,
            "finish_reason": reply.finish_reason,
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
            },
            "template": tag,
        }

    def tick(view: dict[str, Any]) -> None:
        if on_progress:
            on_progress(view["done"] + view["failed"], stats.total)

    await run_jobs(
        cfg,
        iter(todo),
        journal,
        stats,
        accept=accept,
        failed_fields=lambda job: {"id": job.example.id, "target_attributes": job.target},
        max_invalid=cfg.prompt.max_invalid,
        on_progress=tick,
        what=WHAT,
    )


def _existing(out: Path) -> dict[tuple[str, str], str]:
    """(example id, target key) → the JSON line of each record already in OUT (an earlier output of
    the same settings: `check_resumable` passed); a torn last line is cut off."""
    from personadlg.generation.output import done_keys

    if not out.is_file():
        return {}
    done_keys(out)  # validates the records and cuts a torn last line

    kept = {}
    for line in out.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            kept[(rec["id"], target_key(rec.get("target_attributes")))] = line
    return kept


def record_for(cfg: ApiConfig, job: ApiJob, entry: dict[str, Any]) -> dict[str, Any]:
    """The output record of an answered request: the example with its generation and how it was made."""
    params = request_params(cfg)
    rec = replace(
        job.example,
        generation=entry["text"],
        target_attributes=job.target,
        method="api",
        checkpoint=str(cfg.source),
        decoding={"model": cfg.client.model, **params, **job.params},
        seed=job.seed,
        extra={
            **job.example.extra,
            "api": {
                "model": cfg.client.model,
                "base_url": cfg.client.base_url,
                "request_id": entry.get("request_id"),
                "template": entry.get("template"),
                "usage": entry.get("usage"),
                "finish_reason": entry.get("finish_reason"),
                "attempts": entry.get("attempts"),
            },
        },
    )
    return rec.to_dict()


def _write(
    cfg: ApiConfig,
    out: Path,
    jobs: list[ApiJob],
    journal: Journal,
    kept: dict[tuple[str, str], str],
) -> dict[str, int]:
    """Rewrite OUT and its failures file from the journal (and records kept from OUT), in input order."""
    final = journal.final(j.key for j in jobs)
    counts = {"ok": 0, "failed": 0, "pending": 0}
    with atomic_outputs(out, failed_file(out)) as (f_out, f_failed):
        assert f_out is not None and f_failed is not None
        for job in jobs:
            done = final.get(job.key)
            line = kept.get((job.example.id, target_key(job.target)))
            if done is not None and done["status"] == "ok":
                f_out.write(dumps(record_for(cfg, job, done)) + "\n")
                counts["ok"] += 1
            elif line is not None:
                f_out.write(line + "\n")
                counts["ok"] += 1
            elif done is not None:
                f_failed.write(
                    dumps(
                        {
                            "id": job.example.id,
                            "target_attributes": job.target,
                            "class": done.get("class"),
                            "error": done.get("error"),
                            "attempts": done.get("attempts"),
                        }
                    )
                    + "\n"
                )
                counts["failed"] += 1
            else:
                counts["pending"] += 1
    return counts


def _summary(
    cfg: ApiConfig,
    out: Path,
    jobs: list[ApiJob],
    stats: Stats,
    written: dict[str, int],
    tag: str,
    started: float,
    n_examples: int,
    n_targets: int,
) -> dict[str, Any]:
    from personadlg.generation.generate import iter_records

    seconds = time.perf_counter() - started
    return {
        "out": str(out),
        "examples": n_examples,
        "targets": n_targets,
        "generated": stats.ok,
        "skipped_done": stats.already_done,
        "total": len(jobs),
        "seconds": seconds,
        "responses_per_s": stats.ok / seconds if seconds > 0 else 0.0,
        "decoding": {"model": cfg.client.model, **request_params(cfg)},
        "method": "api",
        "template": tag,
        "output_records": written["ok"],
        "failed": written["failed"],
        "failed_now": dict(stats.failed),
        "failed_file": str(failed_file(out)),
        "pending": written["pending"],
        "requests": stats.requests,
        "retries": dict(stats.retries),
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "cost": round(stats.cost, 6),
        "stopped": stats.stopped,
        "collapse": collapse_report([r["generation"] for r in iter_records(out)]),
    }


class NoReply(PersonadlgError):
    """The API gave no usable reply to a chat message (after its retries)."""

    exit_code = 1


class _Replies:
    """`run_jobs`'s sink for chat: the results in memory (a chat turn is not resumed)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def append(self, entry: dict[str, Any]) -> None:
        self.entries[entry["unit"]] = entry


class ApiChatModel:
    """A `method: api` recipe as `chat`'s model: `generate` sends one request per example through
    synth's runner (retries, limits) and returns the replies, with each request's id and usage."""

    name = "api"

    def __init__(self, cfg: ApiConfig) -> None:
        self.cfg = cfg
        self.template, self.tag = load_template(cfg)
        self.cost = 0.0

    def generate(
        self,
        examples: Sequence[Example],
        *,
        decoding: Any,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
    ) -> Generations:
        """One reply per example (DECODING is unused: the recipe's `client.params` apply).

        Raises:
            NoReply: a request failed after its retries (the message says why).
            FatalAPIError: authentication or quota errors.
        """
        jobs = [
            build_job(self.cfg, self.template, i, ex, t, seed)
            for i, (ex, t, seed) in enumerate(zip(examples, targets, seeds))
        ]
        sink = _Replies()
        stats = Stats(total=len(jobs))

        def accept(job: ApiJob, reply: Reply, attempts: int) -> dict[str, Any]:
            text = (reply.text or "").strip()
            if not text:
                raise EmptyReply("the reply is empty")
            return {"text": text, "request_id": reply.request_id}

        asyncio.run(
            run_jobs(
                self.cfg,
                iter(jobs),
                sink,
                stats,
                accept=accept,
                max_invalid=self.cfg.prompt.max_invalid,
                what="chat (api)",
            )
        )
        self.cost += stats.cost
        texts, records = [], []
        for job in jobs:
            entry = sink.entries.get(job.key)
            if entry is None or entry["status"] != "ok":
                why = f"{entry.get('class')}: {entry.get('error')}" if entry else "not sent"
                raise NoReply(f"{self.cfg.client.model} gave no reply ({why})")
            texts.append(entry["text"])
            records.append(
                {"request_id": entry.get("request_id"), "attempts": entry.get("attempts")}
            )
        return Generations(
            texts,
            shared={
                "model": self.cfg.client.model,
                "template": self.tag,
                "cost": round(self.cost, 6),
            },
            records=records,
        )
