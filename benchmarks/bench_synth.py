"""Synth benchmark (issue 5): dialogues/s against a local OpenAI-compatible server with 100 ms of latency
per request, at concurrency 1, 8, 32 and 128; efficiency = measured / (concurrency / latency)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LATENCY = 0.1


def _server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.synth.fake_openai", "--latency", str(LATENCY)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _config(url: str, out: str, n: int, concurrency: int):  # -> SynthConfig
    from personadlg.data.synth import load_synth_recipe

    topics = min(150, math.ceil(n / 6))
    per_target = math.ceil(n / (6 * topics))
    return load_synth_recipe(
        "synth/miracle",
        [
            f"client.base_url={url}",
            "client.api_key_env=PDLG_BENCH_KEY",
            f"output={out}",
            f"max_topics={topics}",
            f"per_target={per_target}",
            f"limits.concurrency={concurrency}",
            "limits.rpm=0",
            "limits.tpm=0",
            "limits.max_cost=0",
        ],
    )


def run(levels: tuple[int, ...] = (1, 8, 32, 128), per_worker: int = 20) -> list[dict]:
    """Each level runs max(40, PER_WORKER × concurrency) units after a warm-up run (imports, first connection)."""
    from personadlg.data.synth.runner import synthesize

    os.environ["PDLG_BENCH_KEY"] = "sk-bench"
    proc, url = _server()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="pdlg-bench-synth-") as tmp:
            synthesize(_config(url, f"{tmp}/warmup.jsonl", 6, 2))
        for c in levels:
            n = max(40, per_worker * c)
            with tempfile.TemporaryDirectory(prefix="pdlg-bench-synth-") as tmp:
                cfg = _config(url, f"{tmp}/out.jsonl", n, c)
                cpu, t = time.process_time(), time.perf_counter()
                s = synthesize(cfg)
                wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            rate = s["ok_now"] / wall
            rows.append(
                {
                    "concurrency": c,
                    "dialogues": s["ok_now"],
                    "seconds": wall,
                    "dialogues_per_s": rate,
                    "efficiency": rate / (c / LATENCY),
                    "cpu_ms_per_request": 1000 * cpu / max(s["requests"], 1),
                }
            )
    finally:
        proc.terminate()
        proc.wait()
    return rows


def render(rows: list[dict]) -> list[tuple[str, list[str], list[list[object]]]]:
    body = [
        [
            r["concurrency"],
            r["dialogues"],
            f"{r['seconds']:.2f}",
            f"{r['dialogues_per_s']:.1f}",
            f"{r['efficiency']:.2f}",
            f"{r['cpu_ms_per_request']:.1f}",
        ]
        for r in rows
    ]
    return [
        (
            f"synth against a local server with {int(LATENCY * 1000)} ms latency per request",
            [
                "concurrency",
                "dialogues",
                "seconds",
                "dialogues/s",
                "efficiency",
                "client CPU ms/request",
            ],
            body,
        )
    ]
