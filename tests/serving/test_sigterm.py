"""`python -m personadlg serve` as a process: it prints its URL, answers while loading, and on
SIGTERM finishes the requests in flight before exiting 0 (those that outlast --shutdown-timeout are
answered 503, at once after a second SIGTERM); bad usage exits 2 before listening."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.serving.conftest import wait_ready

ROOT = Path(__file__).resolve().parents[2]


def serve_process(*args: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "personadlg", "serve", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigterm_finishes_the_request_in_flight_then_exits_0(trained_tiny):
    # --max-batch 1: a request of n=3 choices of 40 tokens each is 3 generate calls in a row
    proc = serve_process(trained_tiny, "--port", "0", "--max-batch", "1", "--name", "ft")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/v1", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = m.group(1)
        wait_ready(url)
        slow = {
            "model": "ft",
            "messages": [{"role": "user", "content": "tell me everything about your bees"}],
            "n": 3,
            "max_tokens": 40,
            "min_tokens": 40,
            "temperature": 1.0,
            "seed": 3,
        }
        replies: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: replies.append(
                httpx.post(url + "/v1/chat/completions", json=slow, timeout=120)
            )
        )
        thread.start()
        deadline = time.monotonic() + 30
        while httpx.get(url + "/health").json()["in_flight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        thread.join(120)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        (reply,) = replies
        assert reply.status_code == 200
        body = reply.json()
        assert len(body["choices"]) == 3
        assert all(c["finish_reason"] == "length" for c in body["choices"])
        assert body["usage"]["completion_tokens"] > 3 * 20
        assert body["personadlg"]["batch"] == {"requests": 1, "examples": 1}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_usage_exits_2_before_listening(cli, trained_tiny, tmp_path, monkeypatch):
    r = cli("serve", trained_tiny, trained_tiny, "--port", "0")
    assert r.code == 2 and "both be served as" in r.stderr and "--name" in r.stderr
    monkeypatch.delenv("PDLG_TEST_KEY", raising=False)
    r = cli("serve", trained_tiny, "--port", "0", "--api-key-env", "PDLG_TEST_KEY")
    assert r.code == 2 and "PDLG_TEST_KEY" in r.stderr and "not set" in r.stderr
    r = cli("serve", tmp_path / "nothing", "--port", "0")
    assert r.code == 2 and "no such checkpoint directory" in r.stderr
    r = cli("serve", trained_tiny, "--name", "a", "--name", "b")
    assert r.code == 2 and "one per checkpoint" in r.stderr
    r = cli("serve", trained_tiny, "--port", "0", "--max-messages", "0")
    assert r.code == 2 and "--max-messages: expected at least 1, got 0" in r.stderr
    r = cli("serve", trained_tiny, "--port", "0", "--shutdown-timeout", "-1")
    assert r.code == 2 and "--shutdown-timeout: expected seconds >= 0, got -1" in r.stderr


def test_sigterm_ends_the_server_after_heavy_requests(trained_tiny):
    """10,001 messages are refused at once, a 470 KB history is answered, and SIGTERM is heard
    meanwhile: the event loop never does a request's CPU work."""
    proc = serve_process(trained_tiny, "--port", "0", "--name", "ft")
    try:
        assert proc.stdout is not None
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/v1", proc.stdout.readline())
        assert m
        url = m.group(1)
        wait_ready(url)
        many = [{"role": "user", "content": "tell me about your bees"}] * 10_001
        r = httpx.post(
            url + "/v1/chat/completions", json={"model": "ft", "messages": many}, timeout=30
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        long = [{"role": "user", "content": "tell me about your bees " * 100}] * 199
        body = {"model": "ft", "messages": [*long, {"role": "user", "content": "and you?"}]}
        replies: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: replies.append(
                httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
            )
        )
        thread.start()
        deadline = time.monotonic() + 30
        while not replies and httpx.get(url + "/health", timeout=5).json()["in_flight"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        thread.join(60)
        (reply,) = replies
        assert reply.status_code == 200, reply.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_long_request(url: str, replies: list[Any]) -> threading.Thread:
    """A request of 16 choices of 40 tokens, one generate call each (the server's --max-batch 1),
    posted from a thread; returns once the server has it in flight."""
    slow = {
        "model": "ft",
        "messages": [{"role": "user", "content": "tell me everything about your bees"}],
        "n": 16,
        "max_tokens": 40,
        "min_tokens": 40,
    }

    def post() -> None:
        try:
            replies.append(httpx.post(url + "/v1/chat/completions", json=slow, timeout=120))
        except httpx.HTTPError as err:
            replies.append(err)

    thread = threading.Thread(target=post)
    thread.start()
    deadline = time.monotonic() + 30
    while httpx.get(url + "/health").json()["in_flight"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return thread


@pytest.mark.parametrize("signals", [1, 2], ids=["past --shutdown-timeout", "a second SIGTERM"])
def test_a_generation_under_way_does_not_hold_the_server(trained_tiny, signals):
    # one signal: the request outlasts --shutdown-timeout 0 and is answered 503; a second signal
    # answers it 503 at once, whatever the timeout
    timeout = 0 if signals == 1 else 600
    proc = serve_process(
        trained_tiny,
        "--port",
        "0",
        "--max-batch",
        "1",
        "--shutdown-timeout",
        timeout,
        "--name",
        "ft",
    )
    try:
        assert proc.stdout is not None
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/v1", proc.stdout.readline())
        assert m
        url = m.group(1)
        wait_ready(url)
        replies: list[Any] = []
        thread = _start_long_request(url, replies)
        started = time.monotonic()
        for _ in range(signals):
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        code = proc.wait(30)
        stopped_s = time.monotonic() - started
        stderr = proc.stderr.read() if proc.stderr else ""
        assert code == 0, stderr
        assert "terminate called" not in stderr and "Traceback" not in stderr
        thread.join(30)
        (reply,) = replies
        assert reply.status_code == 503, reply.text  # answered, not cut off
        err = reply.json()["error"]
        assert err["code"] == "shutting_down"
        when = "its shutdown timeout passed (0 s" if signals == 1 else "it was told twice to stop"
        assert f"this request was still waiting when {when}" in err["message"]
        assert f"1 waiting request(s) answered 503 when {when}" in stderr
        assert stopped_s < 10
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_socket_listens_before_the_server_starts():
    """The URL is printed before uvicorn starts: a client that connects at once is queued, not
    refused (it used to be `Connection refused` now and then)."""
    import socket

    from personadlg.serving.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        with socket.create_connection(sock.getsockname()[:2], timeout=5):
            pass
    finally:
        sock.close()
