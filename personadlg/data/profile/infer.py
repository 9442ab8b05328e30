"""`personadlg profile infer`: one request per user through the engine (`personadlg.llm`), the profile written into every record of the user.

Exactly once: each request is journalled (`OUTPUT.cache/journal.jsonl`, the engine's journal) as `ok`
(with the validated profile) or `failed`; users already `ok` are never requested again, failed ones
only with `retry_failed`. OUTPUT holds every input record once, in input order: records of
inferred users with the profile added, all others (no `user_id`, complete profile skipped, failed,
still pending after a budget stop) as they were. OUTPUT and its report (`OUTPUT.report.json`) are
written atomically, together, at the end of the run; a run stopped by an API error or killed
writes neither, and the same command continues from the journal.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personadlg import __version__
from personadlg.data.formats import read_dialogues
from personadlg.data.jsonl import atomic_outputs, dumps
from personadlg.data.lock import exclusive_lock, lock_path_for
from personadlg.data.paths import check_outputs
from personadlg.data.profile.config import ProfileConfig
from personadlg.data.profile.prompt import UserRequest, build_request, load_template
from personadlg.data.profile.users import Scan, scan_users
from personadlg.data.profile.validate import parse_profile
from personadlg.errors import DataError
from personadlg.llm import paths
from personadlg.llm.client import Reply, api_key
from personadlg.llm.cost import estimate
from personadlg.llm.journal import JOURNAL
from personadlg.llm.resume import resume, still_to_send
from personadlg.llm.runner import Stats

logger = logging.getLogger(__name__)

WHAT = "profile infer"
Progress = Callable[[dict[str, Any]], None]


@dataclass
class Plan:
    """The users of the input and the request of each user to infer."""

    scan: Scan
    requests: list[UserRequest]
    skipped: list[str]
    template: str


def report_file(output: str | Path) -> Path:
    """`OUT.jsonl` → `OUT.report.json`, beside the output."""
    return paths.beside(output, ".report.json")


def check_paths(cfg: ProfileConfig, input_path: str | Path, output: str | Path) -> None:
    """Refuse (exit 2) an output or report that is a directory, the input or the template."""
    cache = paths.cache_dir(output, cfg.cache_dir)
    check_outputs(
        {
            "--out": output,
            "the report": report_file(output),
            "the journal": cache / JOURNAL,
        },
        {"input": input_path, "template": cfg.profile.template},
    )


def plan(
    cfg: ProfileConfig,
    input_path: str | Path,
    output: str | Path,
    *,
    fmt: str = "auto",
    keep_existing: bool = True,
) -> Plan:
    """Read the input once and build one request per user to infer (outputs checked against inputs first)."""
    check_paths(cfg, input_path, output)
    template, tag = load_template(cfg.profile.template)
    scan = scan_users(input_path, spec=cfg.profile, fmt=fmt)
    requests, skipped = [], []
    for user in scan.users.values():
        if keep_existing and user.complete:
            skipped.append(user.user_id)
        else:
            requests.append(build_request(cfg, template, user.user_id, user.sample()))
    logger.info(
        "%s: %d records, %d users (%d with a complete profile skipped), %d without user_id",
        input_path,
        scan.records,
        len(scan.users),
        len(skipped),
        scan.without_user,
    )
    return Plan(scan, requests, skipped, tag)


def dry_run(
    cfg: ProfileConfig,
    input_path: str | Path,
    output: str | Path,
    *,
    fmt: str = "auto",
    keep_existing: bool = True,
    retry_failed: bool = False,
) -> dict[str, Any]:
    """Users, requests still to send, estimated tokens and cost (the engine's estimator); sends nothing, needs no key."""
    p = plan(cfg, input_path, output, fmt=fmt, keep_existing=keep_existing)
    todo = still_to_send(
        p.requests,
        paths.cache_dir(output, cfg.cache_dir),
        retry_failed=retry_failed,
        what=WHAT,
        lock=exclusive_lock,
    )
    return {
        "records": p.scan.records,
        "records_without_user": p.scan.without_user,
        "users": len(p.scan.users),
        "skipped": len(p.skipped),
        "to_infer": len(p.requests),
        "requests": len(todo),
        "model": cfg.client.model,
        "template": p.template,
        **estimate(cfg, todo),
    }


def merge_profile(
    existing: dict[str, Any], inferred: dict[str, str], *, keep_existing: bool
) -> dict[str, Any]:
    """EXISTING with the INFERRED keys added; with KEEP_EXISTING a value already there (not null or empty) is kept."""
    out = dict(existing)
    for k, v in inferred.items():
        if not keep_existing or out.get(k) in (None, ""):
            out[k] = v
    return out


def infer(
    cfg: ProfileConfig,
    input_path: str | Path,
    output: str | Path,
    *,
    fmt: str = "auto",
    keep_existing: bool = True,
    retry_failed: bool = False,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Infer (or resume inferring) the profile of every user; write OUTPUT and its report; return the summary.

    Raises:
        FatalAPIError: authentication or quota errors (inferred users stay in the journal; no output written).
        DataError: a bad input record (`FILE:LINE: field ...`).
    """
    started = time.perf_counter()
    check_paths(cfg, input_path, output)
    api_key(cfg.client)  # a missing key stops the run before anything is read or created
    p = plan(cfg, input_path, output, fmt=fmt, keep_existing=keep_existing)
    keys = cfg.profile.keys

    def accept(req: UserRequest, reply: Reply, attempts: int) -> dict[str, Any]:
        return {
            "user_id": req.user_id,
            "profile": parse_profile(reply.text, keys),
            "model": cfg.client.model,
            "template": p.template,
            "request_id": reply.request_id,
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
            },
        }

    with (
        exclusive_lock(lock_path_for(output), target=output, what=WHAT),
        resume(
            p.requests,
            paths.cache_dir(output, cfg.cache_dir),
            what=WHAT,
            lock=exclusive_lock,
            retry_failed=retry_failed,
        ) as run,
    ):
        logger.info("%d users to infer, %d requests to send", len(p.requests), len(run.todo))
        run.send(
            cfg,
            accept=accept,
            failed_fields=lambda req: {"user_id": req.user_id},
            max_invalid=cfg.profile.max_invalid,
            on_progress=on_progress,
        )
        return _write(
            cfg,
            p,
            run.journal.final(r.key for r in p.requests),
            run.stats,
            input_path=input_path,
            output=output,
            fmt=fmt,
            keep_existing=keep_existing,
            started=started,
        )


def _write(
    cfg: ProfileConfig,
    p: Plan,
    results: dict[str, dict[str, Any]],
    stats: Stats,
    *,
    input_path: str | Path,
    output: str | Path,
    fmt: str,
    keep_existing: bool,
    started: float,
) -> dict[str, Any]:
    """Write OUTPUT (every input record once, in order) and the report, atomically; return the summary."""
    inferred: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, Any]] = []
    waiting: list[str] = []
    for req in p.requests:
        entry = results.get(req.key)
        if entry is None:
            waiting.append(req.user_id)
        elif entry["status"] == "ok":
            inferred[req.user_id] = entry
        else:
            failed.append(
                {
                    "user_id": req.user_id,
                    "class": entry.get("class"),
                    "error": entry.get("error"),
                    "attempts": entry.get("attempts"),
                    "records": p.scan.users[req.user_id].records,
                }
            )
    report = report_file(output)
    records = updated = 0
    with atomic_outputs(output, report) as (f_out, f_report):
        assert f_out is not None and f_report is not None
        for d in read_dialogues(input_path, fmt):
            records += 1
            entry = inferred.get(d.user_id) if d.user_id is not None else None
            if entry is not None:
                d.profile = merge_profile(d.profile, entry["profile"], keep_existing=keep_existing)
                d.meta = {
                    **d.meta,
                    "profile_inferred": {
                        "model": entry["model"],
                        "template": entry["template"],
                        "request_id": entry["request_id"],
                    },
                }
                updated += 1
            f_out.write(dumps(d.to_dict()) + "\n")
        if records != p.scan.records:
            raise DataError(
                f"the input changed while it was read ({p.scan.records} records, then {records})",
                path=str(input_path),
            )
        summary = {
            "version": __version__,
            "model": cfg.client.model,
            "template": p.template,
            "keys": list(cfg.profile.keys),
            "input": str(input_path),
            "output": str(output),
            "report": str(report),
            "records": records,
            "records_without_user": p.scan.without_user,
            "records_updated": updated,
            "users": len(p.scan.users),
            "inferred": len(inferred),
            "inferred_now": stats.ok,
            "failed": len(failed),
            "skipped": len(p.skipped),
            "pending": len(waiting),
            "keep_existing": keep_existing,
            "requests": stats.requests,
            "retries": dict(stats.retries),
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            "tokens": stats.prompt_tokens + stats.completion_tokens,
            "cost": round(stats.cost, 6),
            "seconds": round(time.perf_counter() - started, 3),
            "stopped": stats.stopped,
            "failed_users": failed,
            "pending_users": waiting,
        }
        f_report.write(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    logger.info(
        "%s: %d records, %d users inferred, %d failed, %d skipped, %d pending",
        output,
        records,
        len(inferred),
        len(failed),
        len(p.skipped),
        len(waiting),
    )
    return summary
