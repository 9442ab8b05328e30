"""Synth benchmark (issue 5): dialogues/s against a local OpenAI-compatible server with 100 ms of latency
per request, at concurrency 1, 8, 32 and 128; efficiency = measured / (concurrency / latency)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

from benchmarks._fake_server import LATENCY, fake_server, table, timed_levels


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
    with fake_server() as url:
        with tempfile.TemporaryDirectory(prefix="pdlg-bench-synth-") as tmp:
            synthesize(_config(url, f"{tmp}/warmup.jsonl", 6, 2))

        def prepare(tmp: str, n: int, c: int) -> Callable[[], dict[str, Any]]:
            cfg = _config(url, f"{tmp}/out.jsonl", n, c)
            return lambda: synthesize(cfg)

        return timed_levels(
            levels,
            per_worker,
            prepare,
            prefix="pdlg-bench-synth-",
            done="ok_now",
            count="dialogues",
            rate="dialogues_per_s",
        )


def render(rows: list[dict]) -> list[tuple[str, list[str], list[list[object]]]]:
    return table(
        rows,
        f"synth against a local server with {int(LATENCY * 1000)} ms latency per request",
        count=("dialogues", "dialogues"),
        rate=("dialogues_per_s", "dialogues/s"),
        cpu_digits=1,
    )
