"""The clean pipeline: read any format → normalize → filters → dedup → CLEAN | REJECTS, nothing lost.

Two passes, constant memory in the file size: pass 1 streams the inputs, normalizes and filters
each record, spools the results to a temporary file and keeps only compact per-record arrays
(8-byte keys, band hashes and MinHash signatures in memory-mapped files); dedup decisions are then
made with vectorised sorting; pass 2 streams the spool into the outputs, which are written
atomically (all three appear together, or none).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personadlg import __version__
from personadlg.config import to_dict
from personadlg.data.clean import dedup
from personadlg.data.clean.config import CleanConfig
from personadlg.data.clean.filters import dialogue_words
from personadlg.data.clean.normalize import normalize_dialogue
from personadlg.data.formats import FormatOptions, check_table_options, detect_format, iter_items
from personadlg.data.jsonl import Bad, atomic_outputs, dumps, pid_alive
from personadlg.data.paths import check_outputs
from personadlg.data.schema import Dialogue
from personadlg.data.unique import id_key
from personadlg.registry import FILTERS

logger = logging.getLogger(__name__)

INVALID = "invalid"
_RECORD_FILTER_ORDER = (
    "attributes",
    "min_turns",
    "length",
    "script",
    "language",
    "refusal",
    "repetition",
    "persona_copy",
)


@dataclass
class CleanReport:
    """Counts of a clean run. Invariant: `units == clean + rejected`."""

    inputs: list[dict[str, Any]] = field(default_factory=list)
    units: int = 0
    """Dialogues read plus unreadable units (lines, blocks, episodes)."""
    raw_records: int = 0
    """Input records (lines / list elements) behind those units, before merging turns."""
    clean: int = 0
    rejected: int = 0
    rejected_by_filter: dict[str, int] = field(default_factory=dict)
    normalized: dict[str, int] = field(default_factory=dict)
    filters: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str | None] = field(default_factory=dict)
    seconds: float = 0.0
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _reject(
    source: str,
    filter_name: str,
    reason: str,
    *,
    record: dict[str, Any] | None = None,
    raw: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"source": source, "filter": filter_name, "reason": reason}
    if record is not None:
        out["record"] = record
    if raw is not None:
        out["raw"] = raw
    return out


def clean(
    inputs: Sequence[str | Path],
    *,
    out: str | Path,
    rejects: str | Path | None = None,
    report: str | Path | None = None,
    config: CleanConfig | None = None,
    fmt: str = "auto",
    format_options: FormatOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> CleanReport:
    """Clean INPUTS (any supported format) into OUT (dialogue JSONL); rejected units go to REJECTS.

    Args:
        inputs: files to read, in order (ids must be unique across them).
        out: clean dialogues, personadlg JSONL.
        rejects: one JSON object per rejected unit: `source`, `filter`, `reason`, and `record`
            (the normalized dialogue) or `raw` (the unreadable text).
        report: the CleanReport as JSON.
        config: filters and options; defaults to `CleanConfig()`.
        fmt: input format name, or 'auto' to detect per file.
        on_progress: called with the number of units processed so far, every 1,000 units.

    Returns:
        The CleanReport (also written to REPORT when given).
    """
    check_outputs(
        {"--out": out, "--rejects": rejects, "--report": report},
        {f"input {p}": p for p in inputs},
    )
    check_table_options([Path(p) for p in inputs], fmt, format_options)
    cfg = config or CleanConfig()
    enabled = cfg.enabled()
    record_filters = [(name, FILTERS.get(name)) for name in _RECORD_FILTER_ORDER if name in enabled]
    opts = dataclasses.replace(format_options or FormatOptions(), strict_roles=False)
    rep = CleanReport(filters=enabled, options=to_dict(cfg))
    norm: Counter[str] = Counter()
    by_filter: Counter[str] = Counter()
    started = time.perf_counter()
    minhash = dedup.MinHasher(num_perm=cfg.num_perm, shingle_size=cfg.shingle_size, seed=cfg.seed)
    bands_n, rows_n = dedup.lsh_params(cfg.near_dup_threshold, cfg.num_perm)
    use_near = "near_dup" in enabled

    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_workdirs(out_path.parent)
    with tempfile.TemporaryDirectory(prefix=f".clean-{os.getpid()}-", dir=out_path.parent) as tmp:
        spool_path = Path(tmp) / "spool.txt"
        keys = array("q")  # 8-byte exact keys, one per eligible record
        id_keys = array("q")
        spill = dedup.SpillFiles(Path(tmp), num_perm=cfg.num_perm, bands=bands_n)
        pending_tokens: list[Sequence[str]] = []

        def flush_tokens() -> None:
            if pending_tokens:
                sigs = minhash.signatures(pending_tokens)
                spill.append(sigs, dedup.band_hashes(sigs, bands_n, rows_n))
                pending_tokens.clear()

        # ---- pass 1: read, normalize, record filters → spool ------------------------------------
        with open(spool_path, "w", encoding="utf-8") as spool:
            for path in inputs:
                name = detect_format(path) if fmt == "auto" else fmt
                info: dict[str, Any] = {
                    "path": str(path),
                    "format": name,
                    "units": 0,
                    "raw_records": 0,
                }
                rep.inputs.append(info)
                for item in iter_items(path, name, opts):
                    info["units"] += 1
                    rep.units += 1
                    if rep.units % 1000 == 0 and on_progress:
                        on_progress(rep.units)
                    if isinstance(item, Bad):
                        info["raw_records"] += 1
                        by_filter[INVALID] += 1
                        spool.write(
                            "R\t"
                            + dumps(_reject(item.source, INVALID, item.error.detail, raw=item.raw))
                            + "\n"
                        )
                        continue
                    info["raw_records"] += item.n_raw
                    d = normalize_dialogue(
                        item.dialogue,
                        strip_prefixes=cfg.strip_speaker_prefixes,
                        merge_same_role=cfg.merge_same_role,
                        counts=norm,
                    )
                    reason, which = _check(d, cfg, record_filters)
                    if reason is not None:
                        by_filter[which] += 1
                        spool.write(
                            "R\t"
                            + dumps(_reject(item.source, which, reason, record=d.to_dict()))
                            + "\n"
                        )
                        continue
                    keys.append(dedup.exact_key(d))
                    id_keys.append(id_key(d.id))
                    if use_near:
                        pending_tokens.append(dialogue_words(d))
                        if len(pending_tokens) >= 2048:
                            flush_tokens()
                    spool.write("K\t" + json.dumps(item.source) + "\t" + dumps(d.to_dict()) + "\n")
            flush_tokens()
        spill.close()
        rep.raw_records = sum(i["raw_records"] for i in rep.inputs)

        # ---- dedup decisions on compact arrays ------------------------------------------------------
        n = len(keys)
        verdict = np.zeros(n, dtype=np.int8)  # 0 keep, 1 exact dup, 2 repeated id, 3 near dup
        partner = np.full(n, -1, dtype=np.int64)
        if n:
            key_arr = np.frombuffer(keys, dtype=np.int64)
            if "exact_dup" in enabled:
                dup = dedup.exact_dup(key_arr)
                verdict[dup >= 0], partner[dup >= 0] = 1, dup[dup >= 0]
            id_dup = dedup.exact_dup(np.frombuffer(id_keys, dtype=np.int64), exclude=verdict != 0)
            hit = id_dup >= 0
            verdict[hit], partner[hit] = 2, id_dup[hit]
            if use_near and n > 1:
                near = dedup.near_dup(
                    spill.band_columns(), spill.rows(), cfg.near_dup_threshold, exclude=verdict != 0
                )
                hit = near >= 0
                verdict[hit], partner[hit] = 3, near[hit]
        del keys, id_keys
        wanted = set(partner[partner >= 0].tolist())

        # ---- pass 2: spool → outputs ---------------------------------------------------------------
        ids: dict[int, str] = {}
        with (
            atomic_outputs(out_path, rejects) as (f_clean, f_rej),
            open(spool_path, encoding="utf-8") as spool,
        ):
            k = -1
            for line in spool:
                kind, rest = line[0], line[2:]
                if kind == "R":
                    rep.rejected += 1
                    if f_rej is not None:
                        f_rej.write(rest)
                    continue
                k += 1
                source_json, payload = rest.split("\t", 1)
                source = json.loads(source_json)
                if k in wanted:
                    ids[k] = json.loads(payload)["id"]
                v = int(verdict[k])
                if v == 0:
                    rep.clean += 1
                    f_clean.write(payload)  # type: ignore[union-attr]
                    continue
                rep.rejected += 1
                other = ids.get(int(partner[k]), f"#{int(partner[k])}")
                name, reason = {
                    1: ("exact_dup", f"same messages as {other!r}"),
                    2: (
                        INVALID,
                        f"id repeats the id of an earlier record ({other!r}); ids must be unique",
                    ),
                    3: (
                        "near_dup",
                        f"near-duplicate of {other!r} (estimated Jaccard >= {cfg.near_dup_threshold})",
                    ),
                }[v]
                by_filter[name] += 1
                if f_rej is not None:
                    f_rej.write(
                        dumps(_reject(source, name, reason, record=json.loads(payload))) + "\n"
                    )
            rep.rejected_by_filter = dict(sorted(by_filter.items()))
            rep.normalized = dict(sorted(norm.items()))
            rep.outputs = {
                "clean": str(out_path),
                "rejects": str(rejects) if rejects else None,
                "report": str(report) if report else None,
            }
            rep.seconds = round(time.perf_counter() - started, 3)
            if report is not None:
                with atomic_outputs(report) as (f_rep,):
                    assert f_rep is not None
                    f_rep.write(json.dumps(rep.to_dict(), indent=2, ensure_ascii=False) + "\n")
    if on_progress:
        on_progress(rep.units)
    assert rep.units == rep.clean + rep.rejected, (rep.units, rep.clean, rep.rejected)
    logger.debug("clean: %d units -> %d clean, %d rejected", rep.units, rep.clean, rep.rejected)
    return rep


def _check(
    d: Dialogue, cfg: CleanConfig, record_filters: list[tuple[str, Any]]
) -> tuple[str | None, str]:
    if not d.messages:
        return "no message left after normalization", INVALID
    if not any(m.role == "assistant" for m in d.messages):
        return "no assistant message left after normalization", INVALID
    for name, fn in record_filters:
        reason = fn(d, cfg)
        if reason is not None:
            return reason, name
    return None, ""


def remove_stale_workdirs(directory: Path) -> list[Path]:
    """Remove the spool folders (`.clean-PID-*`) that cleans killed in DIRECTORY left behind: those
    whose process no longer runs. Returns what was removed."""
    removed = []
    for work in directory.glob(".clean-*-*"):
        pid = work.name.split("-")[1]
        if work.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(work, ignore_errors=True)
            removed.append(work)
    if removed:
        logger.info("removed %d spool folder(s) of killed cleans in %s", len(removed), directory)
    return removed
