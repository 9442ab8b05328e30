"""What the request benchmarks share (bench_synth, bench_api): the fake OpenAI-compatible server
(tests/fake_openai.py) in a child process with LATENCY per request, the timed run at each
concurrency, and its table. Efficiency = measured rate / (concurrency / latency)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LATENCY = 0.1

Prepare = Callable[[str, int, int], Callable[[], dict[str, Any]]]
"""(temporary directory, requests N, concurrency C) → the run to time, which returns its summary."""


@contextmanager
def fake_server(*, reply: str = "synth") -> Iterator[str]:
    """The server (`--reply synth` or `echo`) until the block ends; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_openai", "--latency", str(LATENCY), "--reply", reply],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait()


def timed_levels(
    levels: tuple[int, ...],
    per_worker: int,
    prepare: Prepare,
    *,
    prefix: str,
    done: str,
    count: str,
    rate: str,
) -> list[dict[str, Any]]:
    """At each concurrency C of LEVELS, max(40, PER_WORKER × C) requests: PREPARE's run, timed (wall
    and CPU) in a fresh temporary directory; a row each, its COUNT and RATE from the summary's DONE."""
    rows = []
    for c in levels:
        n = max(40, per_worker * c)
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            run = prepare(tmp, n, c)
            cpu, t = time.process_time(), time.perf_counter()
            s = run()
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        per_s = s[done] / wall
        rows.append(
            {
                "concurrency": c,
                count: s[done],
                "seconds": wall,
                rate: per_s,
                "efficiency": per_s / (c / LATENCY),
                "cpu_ms_per_request": 1000 * cpu / max(s["requests"], 1),
            }
        )
    return rows


def table(
    rows: list[dict[str, Any]],
    title: str,
    *,
    count: tuple[str, str],
    rate: tuple[str, str],
    cpu_digits: int,
) -> list[tuple[str, list[str], list[list[object]]]]:
    """`timed_levels`' rows as one table; COUNT and RATE: (row key, column header)."""
    body: list[list[object]] = [
        [
            r["concurrency"],
            r[count[0]],
            f"{r['seconds']:.2f}",
            f"{r[rate[0]]:.1f}",
            f"{r['efficiency']:.2f}",
            f"{r['cpu_ms_per_request']:.{cpu_digits}f}",
        ]
        for r in rows
    ]
    headers = ["concurrency", count[1], "seconds", rate[1], "efficiency", "client CPU ms/request"]
    return [(title, headers, body)]
