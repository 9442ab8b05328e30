"""`personadlg serve` benchmark (issue 16): throughput (requests/s, completion tokens/s) and p50 /
p99 latency at concurrency 1, 8 and 32, with batching (`--max-batch 32`) and without
(`--max-batch 1`), and the ratio batched / one-at-a-time at 32 (target >= 3x).

The model is `finetune/tiny`'s GPT-2 (2 layers, 128 dims, 256 positions, built from its config,
tokenizer trained on the demo corpus; 20 training steps: the weights do not matter for speed).
The server runs in its own process (`python -m personadlg serve`); the clients are the async
`openai` client in this process. Every request is one user turn of the demo corpus, greedy, with
exactly 32 new tokens (`max_tokens` = vLLM's `min_tokens` = 32), so every configuration does the
same work.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "personadlg" / "assets" / "demo_dialogues.jsonl"
NEW_TOKENS = 32
MODES = (("batched", 32), ("one at a time", 1))


def _checkpoint(tmp: Path) -> Path:
    from personadlg.config import load_recipe
    from personadlg.training.trainer import train

    cfg = load_recipe(
        "finetune/tiny",
        [f"train.output_dir={tmp / 'bench-serve'}", "train.max_steps=20", "train.eval_every=1000"],
    )
    return train(cfg).final_dir


def _messages(n: int) -> list[list[dict[str, str]]]:
    out = []
    for line in DEMO.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out += [[m] for m in rec["messages"] if m["role"] == "user"]
        if len(out) >= n:
            break
    return out[:n]


def _start(checkpoint: Path, max_batch: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "personadlg",
            "serve",
            str(checkpoint),
            "--port",
            "0",
            "--name",
            "tiny",
            "--max-batch",
            str(max_batch),
            "--batch-window-ms",
            "10",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    m = re.search(r"on (http://\S+)/v1", proc.stdout.readline())
    if not m:
        proc.kill()
        raise RuntimeError("personadlg serve did not start")
    url = m.group(1)
    import httpx2 as httpx

    deadline = time.monotonic() + 120
    while httpx.get(url + "/health").status_code != 200:
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("personadlg serve did not load the model")
        time.sleep(0.1)
    return proc, url


async def _level(url: str, concurrency: int, total: int, messages: list[Any]) -> dict[str, Any]:
    """TOTAL requests from CONCURRENCY clients, each sending its next request when answered."""
    import openai

    latencies: list[float] = []
    tokens = 0
    counter = iter(range(total))

    async def worker() -> None:
        nonlocal tokens
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)
        try:
            for i in counter:
                t = time.perf_counter()
                r = await client.chat.completions.create(
                    model="tiny",
                    messages=messages[i % len(messages)],
                    temperature=0,
                    max_tokens=NEW_TOKENS,
                    extra_body={"min_tokens": NEW_TOKENS},
                )
                latencies.append(time.perf_counter() - t)
                tokens += r.usage.completion_tokens if r.usage else 0
        finally:
            await client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "tokens_per_s": tokens / wall,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def run(quick: bool = False, levels: tuple[int, ...] = (1, 8, 32)) -> list[dict[str, Any]]:
    """Each level sends max(32, PER × concurrency) requests (PER 16, quick 8) after a warm-up."""
    import httpx2 as httpx

    per = 8 if quick else 16
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-serve-") as tmp:
        checkpoint = _checkpoint(Path(tmp))
        messages = _messages(512)
        for mode, max_batch in MODES:
            proc, url = _start(checkpoint, max_batch)
            try:
                asyncio.run(_level(url, 4, 16, messages))  # warm-up
                for c in levels:
                    before = httpx.get(url + "/health").json()["batching"]["tiny"]
                    res = asyncio.run(_level(url, c, max(32, per * c), messages))
                    after = httpx.get(url + "/health").json()["batching"]["tiny"]
                    calls = after["calls"] - before["calls"]
                    rows.append(
                        {
                            "mode": mode,
                            "max_batch": max_batch,
                            "concurrency": c,
                            **res,
                            "requests_per_call": (after["requests"] - before["requests"])
                            / max(calls, 1),
                        }
                    )
            finally:
                proc.terminate()
                proc.wait(60)
    return rows


def ratio(rows: list[dict[str, Any]], concurrency: int = 32) -> float | None:
    """Requests/s batched over one-at-a-time at CONCURRENCY."""
    by = {(r["max_batch"], r["concurrency"]): r["requests_per_s"] for r in rows}
    a, b = by.get((32, concurrency)), by.get((1, concurrency))
    return a / b if a and b else None


def render(rows: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[object]]]]:
    body = [
        [
            f"{r['mode']} (--max-batch {r['max_batch']})",
            r["concurrency"],
            r["requests"],
            f"{r['requests_per_s']:.1f}",
            f"{r['tokens_per_s']:.0f}",
            f"{r['p50_ms']:.0f}",
            f"{r['p99_ms']:.0f}",
            f"{r['requests_per_call']:.1f}",
        ]
        for r in rows
    ]
    x = ratio(rows)
    return [
        (
            f"personadlg serve, finetune/tiny GPT-2, {NEW_TOKENS} new tokens per request (greedy), "
            "server and async openai clients on this machine",
            [
                "mode",
                "concurrency",
                "requests",
                "requests/s",
                "tokens/s",
                "p50 ms",
                "p99 ms",
                "requests per generate call",
            ],
            body,
        ),
        (
            "batched / one at a time at concurrency 32 (target >= 3x)",
            ["requests/s ratio"],
            [[f"{x:.1f}x" if x else "n/a"]],
        ),
    ]


if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    for title, cols, table in render(result):
        print(title)
        print(" | ".join(cols))
        for row in table:
            print(" | ".join(map(str, row)))
