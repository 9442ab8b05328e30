"""`personadlg generate RECIPE` for `method: api` (the recipe and its prompts: models/api/): one chat request per (example, target), through
the engine (`personadlg.llm`: client, limiter, retries, journal, cost, budget), exactly once.

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
from personadlg.data.jsonl import atomic_outputs, dumps
from personadlg.data.lock import exclusive_lock
from personadlg.data.paths import check_outputs
from personadlg.data.schema import Example
from personadlg.errors import PersonadlgError
from personadlg.generation.inputs import example_seed, load_examples, targets_to_generate
from personadlg.generation.options import GenerateOptions
from personadlg.generation.output import claimed, done_keys, file_sha256, iter_records, sidecar_path
from personadlg.llm.client import Reply, api_key
from personadlg.llm.config import request_params
from personadlg.llm.cost import estimate
from personadlg.llm.journal import Journal
from personadlg.llm.parse import ParseError
from personadlg.llm.paths import cache_dir, failed_file
from personadlg.llm.resume import Resumed, resume, still_to_send
from personadlg.llm.runner import Stats, run_jobs
from personadlg.metrics.collapse import collapse_report
from personadlg.models.api.config import ApiConfig, load_api_recipe, recipe_overrides
from personadlg.models.api.prompt import ApiJob, build_job, load_template
from personadlg.models.base import Generations

logger = logging.getLogger(__name__)

WHAT = "generate (api)"
Progress = Callable[[int, int], None]


class EmptyReply(ParseError):
    kind = "empty_reply"


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
    opts: GenerateOptions | None = None,
) -> dict[str, Any]:
    """Generate a response for every (example, target) of INPUT with the api RECIPE into OUT.

    OPTS as for `generate_file`; `opts.dry_run`: the requests still to send and their estimated
    tokens and cost; sends nothing, writes nothing, needs no key. Returns a summary
    (`generate_file`'s, plus requests, failures and cost).

    Raises:
        FatalAPIError: authentication or quota errors (OUT holds what was answered; rerun continues).
    """
    opts = opts or GenerateOptions()
    cfg = load_api_recipe(recipe, recipe_overrides(opts.overrides))
    if opts.method_check is not None:
        opts.method_check("api")
    out_path, in_path = Path(out), Path(input)
    check_outputs(
        {
            "--out": out_path,
            "its sidecar": sidecar_path(out_path),
            "the failures file": failed_file(out_path),
        },
        {"--input": in_path, "the recipe": cfg.source, "the template": cfg.prompt.template},
    )
    examples = load_examples(in_path, opts.turns, fmt=opts.input_format, opts=opts.format_options)
    if opts.limit:
        examples = examples[: opts.limit]
    target_list = targets_to_generate(
        cfg.space, targets=opts.targets, combinations=opts.combinations
    )
    jobs, tag = plan(cfg, examples, target_list)
    settings = output_settings(cfg, tag, in_path, file_sha256(in_path), opts.turns)
    cache = cache_dir(out_path, cfg.cache_dir)
    if opts.dry_run:
        return _dry_run(cfg, jobs, tag, cache, opts.retry_failed, len(examples), len(target_list))
    api_key(cfg.client)  # a missing key stops the run before anything is created
    # with --overwrite the journal stays: requests already answered are not paid for again
    with claimed(out_path, settings, overwrite=opts.overwrite, also=[failed_file(out_path)]):
        kept = _existing(out_path)
        started = time.perf_counter()
        with resume(
            jobs,
            cache,
            what=WHAT,
            lock=exclusive_lock,
            retry_failed=opts.retry_failed,
            skip=lambda j: (j.example.id, target_key(j.target)) in kept,
        ) as run:
            logger.info("%d requests, %d to send", len(jobs), len(run.todo))
            try:
                _send(cfg, run, tag, opts.on_progress)
            finally:
                written = _write(cfg, out_path, jobs, run.journal, kept)
    return _summary(
        cfg, out_path, jobs, run.stats, written, tag, started, len(examples), len(target_list)
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
    todo = still_to_send(jobs, cache, retry_failed=retry_failed, what=WHAT, lock=exclusive_lock)
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


def _send(cfg: ApiConfig, run: Resumed[ApiJob], tag: str, on_progress: Progress | None) -> None:
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
            on_progress(view["done"] + view["failed"], run.stats.total)

    run.send(
        cfg,
        accept=accept,
        failed_fields=lambda job: {"id": job.example.id, "target_attributes": job.target},
        max_invalid=cfg.prompt.max_invalid,
        on_progress=tick,
    )


def _existing(out: Path) -> dict[tuple[str, str], str]:
    """(example id, target key) → the JSON line of each record already in OUT (an earlier output of
    the same settings: `check_resumable` passed); a torn last line is cut off."""
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
    """Rewrite OUT and its failures file from the journal and the records already in OUT: first the
    records of OUT that this run does not ask for (an earlier run's other targets, or examples past
    another `--limit`: appending never drops a record), in their order; then this run's, in input order."""
    final = journal.final(j.key for j in jobs)
    asked = {(j.example.id, target_key(j.target)) for j in jobs}
    counts = {"ok": 0, "failed": 0, "pending": 0, "kept": 0}
    with atomic_outputs(out, failed_file(out)) as (f_out, f_failed):
        assert f_out is not None and f_failed is not None
        for key, earlier in kept.items():
            if key not in asked:
                f_out.write(earlier + "\n")
                counts["kept"] += 1
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
        "output_records": written["ok"] + written["kept"],
        "kept_from_earlier_runs": written["kept"],
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
    the engine (`run_jobs`: retries, limits) and returns the replies, with each request's id and usage."""

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
