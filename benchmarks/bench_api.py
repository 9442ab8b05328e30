"""`method: api` benchmark (issue 15): generation requests/s against a local OpenAI-compatible server
with 100 ms of latency per request, at concurrency 1, 8, 32 and 128; efficiency = measured /
(concurrency / latency), and the client's CPU per request (target at 32: efficiency >= 0.8)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._fake_server import LATENCY, fake_server, table, timed_levels


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
    from personadlg.generation.options import GenerateOptions

    levels = (1, 8, 32) if quick else levels
    os.environ["PDLG_BENCH_KEY"] = "sk-bench"

    def opts(url: str, c: int) -> GenerateOptions:
        return GenerateOptions(
            overrides=[
                f"client.base_url={url}",
                "client.api_key_env=PDLG_BENCH_KEY",
                f"limits.concurrency={c}",
                "limits.rpm=0",
                "limits.tpm=0",
                "limits.max_cost=0",
            ]
        )

    with fake_server(reply="echo") as url:
        with tempfile.TemporaryDirectory(prefix="pdlg-bench-api-") as tmp:
            warmup = _examples(Path(tmp) / "w.jsonl", 6)
            generate_api("api/persona", warmup, f"{tmp}/w.out.jsonl", opts(url, 2))

        def prepare(tmp: str, n: int, c: int) -> Callable[[], dict[str, Any]]:
            data = _examples(Path(tmp) / "test.jsonl", n)
            return lambda: generate_api("api/persona", data, f"{tmp}/gen.jsonl", opts(url, c))

        return timed_levels(
            levels,
            per_worker,
            prepare,
            prefix="pdlg-bench-api-",
            done="generated",
            count="responses",
            rate="requests_per_s",
        )


def render(rows: list[dict]) -> list[tuple[str, list[str], list[list[object]]]]:
    return table(
        rows,
        f"generate api/persona against a local server with {int(LATENCY * 1000)} ms latency per request "
        "(whole command: read, plan, requests, journal, output)",
        count=("responses", "responses"),
        rate=("requests_per_s", "requests/s"),
        cpu_digits=2,
    )
