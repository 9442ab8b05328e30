"""`personadlg serve` under hostile requests (issue 24): one request must never freeze the server.

For each kind of hostile request, three clients send it in a loop for a few seconds while a fourth
client sends ordinary requests and a probe polls `GET /health` every 50 ms. Reported: what the
hostile request is answered (status, median seconds), the slowest `/health` answer and the
ordinary client's median and slowest reply. Then SIGTERM while a long request generates (16
choices, one generate call each): seconds until the process exits and what the request was
answered, with the default `--shutdown-timeout` replaced by 2 s.

The model is `finetune/tiny`'s GPT-2 (20 training steps; the weights do not matter), the server
its own process (`python -m personadlg serve`), the clients threads of this one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HI = [{"role": "user", "content": "hi! what did you do today?"}]
ORDINARY = {"model": "m", "messages": HI, "max_tokens": 16, "min_tokens": 16}


def _history(count: int, content: str) -> list[dict[str, str]]:
    turns = [{"role": ("user", "assistant")[i % 2], "content": content} for i in range(count)]
    return [*turns, *HI]


HOSTILE: dict[str, Callable[[], dict[str, Any]]] = {
    "10,001 short messages": lambda: {"messages": _history(10_000, "m")},
    "256 messages of 15,000 characters": lambda: {"messages": _history(255, "a" * 15_000)},
    "one message of 4 million characters": lambda: {
        "messages": [{"role": "user", "content": "bees " * 800_000}]
    },
    "120,000 content parts": lambda: {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 120_000}]
    },
    "256 messages of 64 content parts": lambda: {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 64}] * 256
    },
    "250,000 profile fields": lambda: {
        "messages": HI,
        "profile": {f"k{i}": "v" for i in range(250_000)},
    },
    "a body of 5 MB": lambda: {"messages": [{"role": "user", "content": "bees " * 1_000_000}]},
    "a lone surrogate in 2 MB": lambda: {
        "messages": [{"role": "user", "content": "bees " * 400_000 + "\ud800"}]
    },
}


def _checkpoint(tmp: Path) -> Path:
    from personadlg.config import load_recipe
    from personadlg.training.trainer import train

    cfg = load_recipe(
        "finetune/tiny",
        [
            f"train.output_dir={tmp / 'bench-hostile'}",
            "train.max_steps=20",
            "train.eval_every=1000",
        ],
    )
    return train(cfg).final_dir


def _start(checkpoint: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    import httpx2 as httpx

    command = [sys.executable, "-m", "personadlg", "serve", str(checkpoint), "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--name", "m", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    m = re.search(r"on (http://\S+)/v1", proc.stdout.readline())
    if not m:
        proc.kill()
        raise RuntimeError("personadlg serve did not start")
    url = m.group(1)
    deadline = time.monotonic() + 120
    while httpx.get(url + "/health").status_code != 200:
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("personadlg serve did not load the model")
        time.sleep(0.1)
    return proc, url


def _post(url: str, body: bytes, timeout: float = 60) -> tuple[int, float]:
    import httpx2 as httpx

    t = time.monotonic()
    r = httpx.post(
        url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=timeout,
    )
    return r.status_code, time.monotonic() - t


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] if xs else float("nan")


BASELINE = "(none: the ordinary client alone)"


def _under_load(url: str, name: str, seconds: float) -> dict[str, Any]:
    import httpx2 as httpx

    attackers = 0 if name == BASELINE else 3
    hostile = json.dumps({"model": "m", **(HOSTILE[name]() if attackers else {})}).encode()
    ordinary = json.dumps(ORDINARY).encode()
    stop = threading.Event()
    answers: list[tuple[int, float]] = []
    replies: list[tuple[int, float]] = []
    health: list[float] = []

    def attack() -> None:
        while not stop.is_set():
            answers.append(_post(url, hostile))

    def serve_ordinary() -> None:
        while not stop.is_set():
            replies.append(_post(url, ordinary))

    def probe() -> None:
        while not stop.is_set():
            t = time.monotonic()
            ok = httpx.get(url + "/health", timeout=10).status_code == 200
            health.append(time.monotonic() - t if ok else float("inf"))
            stop.wait(0.05)

    jobs = [*[attack] * attackers, serve_ordinary, probe]
    threads = [threading.Thread(target=f) for f in jobs]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return {
        "request": name,
        "body_bytes": len(hostile) if attackers else 0,
        "status": sorted({s for s, _ in answers}),
        "hostile_sent": len(answers),
        "hostile_median_s": _median([s for _, s in answers]),
        "attackers": attackers,
        "health_polls": len(health),
        "health_max_s": max(health),
        "ordinary_ok": sum(s == 200 for s, _ in replies),
        "ordinary_sent": len(replies),
        "ordinary_median_s": _median([s for _, s in replies]),
        "ordinary_max_s": max((s for _, s in replies), default=float("nan")),
    }


def _sigterm(checkpoint: Path, signals: int) -> dict[str, Any]:
    """SIGTERM (SIGNALS times) while a 16-choice request generates one choice per call."""
    import httpx2 as httpx

    proc, url = _start(checkpoint, "--max-batch", "1", "--shutdown-timeout", "2")
    slow = {**ORDINARY, "n": 16, "max_tokens": 200, "min_tokens": 200}
    got: list[Any] = []
    thread = threading.Thread(
        target=lambda: got.append(_post(url, json.dumps(slow).encode(), timeout=120))
    )
    thread.start()
    while httpx.get(url + "/health").json()["in_flight"] < 1:
        time.sleep(0.01)
    t = time.monotonic()
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
    code = proc.wait(120)
    took = time.monotonic() - t
    thread.join()
    return {
        "signals": signals,
        "exit_code": code,
        "exit_s": took,
        "reply_status": got[0][0] if got else None,
    }


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 3.0 if quick else 8.0
    with tempfile.TemporaryDirectory(prefix="pdlg-bench-hostile-") as tmp:
        checkpoint = _checkpoint(Path(tmp))
        proc, url = _start(checkpoint)
        try:
            rows = [_under_load(url, name, seconds) for name in [BASELINE, *HOSTILE]]
        finally:
            proc.terminate()
            proc.wait(60)
        stops = [_sigterm(checkpoint, 1), _sigterm(checkpoint, 2)]
    return {"load": rows, "sigterm": stops}


def render(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[object]]]]:
    load = [
        [
            r["request"],
            f"{r['body_bytes'] / 1e6:.2f}",
            ",".join(map(str, r["status"])),
            f"{r['hostile_sent']}",
            f"{r['hostile_median_s']:.2f}",
            f"{r['health_max_s']:.2f} ({r['health_polls']})",
            f"{r['ordinary_ok']}/{r['ordinary_sent']}",
            f"{r['ordinary_median_s']:.2f} / {r['ordinary_max_s']:.2f}",
        ]
        for r in res["load"]
    ]
    stops = [
        [
            "SIGTERM" if s["signals"] == 1 else "SIGTERM twice",
            s["exit_code"],
            f"{s['exit_s']:.1f}",
            s["reply_status"],
        ]
        for s in res["sigterm"]
    ]
    return [
        (
            "serve under hostile requests: 3 clients send each in a loop while an ordinary client "
            "chats and /health is polled (finetune/tiny)",
            [
                "hostile request",
                "MB",
                "answered",
                "sent",
                "median s",
                "/health slowest s (polls)",
                "ordinary answered",
                "ordinary median / max s",
            ],
            load,
        ),
        (
            "serve stopping while a 16-choice request generates (--max-batch 1, --shutdown-timeout 2)",
            ["signal", "exit code", "seconds to exit", "the request's answer"],
            stops,
        ),
    ]
