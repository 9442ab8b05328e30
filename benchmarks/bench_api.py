"""`method: api` benchmark (issue 15): generation requests/s against a local OpenAI-compatible server
with 100 ms of latency per request, at concurrency 1, 8, 32 and 128; efficiency = measured /
(concurrency / latency), and the client's CPU per request (target at 32: efficiency >= 0.8)."""

from __future__ import annotations

import json
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
        [
            sys.executable,
            "-m",
            "tests.synth.fake_openai",
            "--latency",
            str(LATENCY),
            "--reply",
            "echo",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _examples(path: Path, n: int) -> Path:
    """N one-turn dialogues with a persona: N examples."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            rec = {
                "id": f"b{i:05d}",
                "messages": [
                    {"role": "user", "content": f"hello, what did you do on day {i}?"},
                    {"role": "assistant", "content": "i went for a long walk by the river."},
                ],
                "persona": [f"i have {i % 7 + 1} cats .", "i work as a nurse .", "i love jazz ."],
            }
            f.write(json.dumps(rec) + "\n")
    return path


def run(
    quick: bool = False, levels: tuple[int, ...] = (1, 8, 32, 128), per_worker: int = 40
) -> list[dict]:
    """Each level generates max(40, PER_WORKER × concurrency) responses after a warm-up run."""
    from personadlg.generation.api import generate_api

    levels = (1, 8, 32) if quick else levels
    os.environ["PDLG_BENCH_KEY"] = "sk-bench"
    proc, url = _server()

    def args(c: int) -> list[str]:
        return [
            f"client.base_url={url}",
            "client.api_key_env=PDLG_BENCH_KEY",
            f"limits.concurrency={c}",
            "limits.rpm=0",
            "limits.tpm=0",
            "limits.max_cost=0",
        ]

    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="pdlg-bench-api-") as tmp:
            generate_api(
                "api/persona",
                _examples(Path(tmp) / "w.jsonl", 6),
                f"{tmp}/w.out.jsonl",
                overrides=args(2),
            )
        for c in levels:
            n = max(40, per_worker * c)
            with tempfile.TemporaryDirectory(prefix="pdlg-bench-api-") as tmp:
                data = _examples(Path(tmp) / "test.jsonl", n)
                cpu, t = time.process_time(), time.perf_counter()
                s = generate_api("api/persona", data, f"{tmp}/gen.jsonl", overrides=args(c))
                wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            rate = s["generated"] / wall
            rows.append(
                {
                    "concurrency": c,
                    "responses": s["generated"],
                    "seconds": wall,
                    "requests_per_s": rate,
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
            r["responses"],
            f"{r['seconds']:.2f}",
            f"{r['requests_per_s']:.1f}",
            f"{r['efficiency']:.2f}",
            f"{r['cpu_ms_per_request']:.2f}",
        ]
        for r in rows
    ]
    return [
        (
            f"generate api/persona against a local server with {int(LATENCY * 1000)} ms latency per request "
            "(whole command: read, plan, requests, journal, output)",
            [
                "concurrency",
                "responses",
                "seconds",
                "requests/s",
                "efficiency",
                "client CPU ms/request",
            ],
            body,
        )
    ]
