"""A real HTTP server on 127.0.0.1 that speaks the OpenAI API (chat completions, files, batches)
and injects faults on demand: the one fake API of the tests of every user of `personadlg.llm`
(synth, profile infer, method api, the judge; the `fake_openai` fixture of tests/conftest.py
starts and stops it) and of the benchmarks (`python -m tests.fake_openai`).

    server = FakeOpenAI(latency=0.1).start()      # server.base_url == "http://127.0.0.1:PORT/v1"
    server.script.extend(["429:0.5", "500", "drop"])   # faults for the next chat requests, in order
    server.fault_for = lambda prompt: "unparseable" if "cursed" in prompt else None   # faults by content
    server.content_for = lambda prompt: '{"age": "20s"}'   # the reply text (default: a synth dialogue)
    server.reply_for = lambda body: body["messages"][-1]["content"].upper()   # ... from the whole request
    ...
    server.stop()

Faults: `429[:retry-after]`, `500`, `503`, `400`, `401` (auth), `quota` (429 insufficient_quota),
`slow[:seconds]`, `drop` (close without a response), `malformed` (invalid JSON body), `truncated`
(content cut, finish_reason length), `unparseable` (prose), `transcript` and `fenced` (valid
dialogues in the other accepted shapes).

`FakeOpenAI(echo_auth=True)` is a careless server: every error body repeats the request's
Authorization header (and so the API key), as some proxies do — the key scan tests use it.
`content_for`, `reply_for` and `fault_for` may also be given to the constructor.

`kill_9_after` kills a run (a process) once its journal holds some answers, for the tests that a
killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any


def dialogue_for(prompt: str) -> list[dict[str, str]]:
    """A deterministic valid dialogue for a synth prompt (topic and turn count read from it)."""
    topic = re.search(r'topic: "(.*?)"', prompt)
    turns = re.search(r"between (\d+) and (\d+) exchanges", prompt)
    t = topic.group(1) if topic else "something"
    n = int(turns.group(1)) if turns else 4
    h = hashlib.sha1(prompt.encode()).hexdigest()[:8]
    out = []
    for i in range(n):
        out.append({"role": "user", "content": f"Question {i + 1} about {t}?"})
        out.append(
            {
                "role": "assistant",
                "content": f"Answer {i + 1} ({h}) about {t}, in the requested voice.",
            }
        )
    return out


def echo_reply(body: dict[str, Any]) -> str:
    """A deterministic chat reply for a generation request: a hash of the whole request (messages,
    seed, parameters) and the start of the last message."""
    blob = json.dumps({k: body.get(k) for k in ("messages", "seed", "temperature")}, sort_keys=True)
    h = hashlib.sha1(blob.encode()).hexdigest()[:8]
    return f"({h}) about that: {body['messages'][-1]['content'][:40]}"


class _Drop(Exception):
    """Close the connection without a response."""


class FakeOpenAI:
    """The server runs an asyncio event loop in a background thread (keep-alive HTTP/1.1, one write per response)."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        slow_seconds: float = 3.0,
        batch_polls_before_done: int = 1,
        echo_auth: bool = False,
        content_for: Callable[[str], str] | None = None,
        reply_for: Callable[[dict[str, Any]], str] | None = None,
        fault_for: Callable[[str], str | None] | None = None,
    ) -> None:
        self.echo_auth = echo_auth
        self.latency, self.slow_seconds, self.batch_polls_before_done = (
            latency,
            slow_seconds,
            batch_polls_before_done,
        )
        self.script: deque[str] = deque()
        self.fault_for: Callable[[str], str | None] = fault_for or (lambda prompt: None)
        self.content_for = content_for  # the reply text from the prompt
        self.reply_for = reply_for  # the reply text from the whole body
        self.log: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.counter = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._port = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0, limit=1 << 26)
            )
            self._port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        threading.Thread(target=run, daemon=True).start()
        ready.wait()
        return self

    def stop(self) -> None:
        if self._loop and self._server:

            async def shutdown() -> None:
                assert self._server is not None
                self._server.close()
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for t in tasks:  # open keep-alive connections
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}/v1"

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.log if r["path"].endswith("/chat/completions")]

    # -- HTTP ---------------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                try:
                    status, payload, extra, ctype = await self._route(
                        method, target.split("?")[0], headers, body
                    )
                except _Drop:
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                head = [
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}",
                    f"Content-Type: {ctype}",
                    f"Content-Length: {len(data)}",
                ]
                head += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _route(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str], str]:
        with self.lock:
            self.counter += 1
            n = self.counter
        entry: dict[str, Any] = {
            "n": n,
            "time": time.monotonic(),
            "method": method,
            "path": path,
            "auth": headers.get("authorization"),
        }
        if path.endswith("/chat/completions"):
            body = json.loads(raw)
            entry["prompt"] = body["messages"][0]["content"]
            entry["body"] = body
            with self.lock:
                self.log.append(entry)
                fault = self.script.popleft() if self.script else self.fault_for(entry["prompt"])
            entry["fault"] = fault
            return await self._chat(body, fault, n, headers.get("authorization", ""))
        with self.lock:
            self.log.append(entry)
        if path.endswith("/files") and method == "POST":
            return 200, self._upload(headers, raw), {}, "application/json"
        if re.search(r"/files/[^/]+/content$", path):
            return 200, self.files[path.split("/")[-2]]["content"], {}, "application/octet-stream"
        if path.endswith("/batches") and method == "POST":
            return 200, self._create_batch(json.loads(raw)), {}, "application/json"
        if re.search(r"/batches/[^/]+$", path):
            return 200, self._retrieve_batch(path.split("/")[-1]), {}, "application/json"
        return (
            404,
            {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}},
            {},
            "application/json",
        )

    # -- chat ------------------------------------------------------------------------------------------
    def completion(self, body: dict[str, Any], fault: str | None, n: int) -> dict[str, Any]:
        prompt = body["messages"][0]["content"]
        messages = dialogue_for(prompt)
        if self.reply_for:
            content = self.reply_for(body)
        elif self.content_for:
            content = self.content_for(prompt)
        else:
            content = json.dumps({"messages": messages})
        finish = "stop"
        if fault == "truncated":
            content, finish = content[: len(content) // 2], "length"
        elif fault == "unparseable":
            content = "Sorry, I would rather write a short poem about the sea today."
        elif fault == "transcript":
            content = "\n".join(
                ("PersonA: " if m["role"] == "user" else "[PersonB]: ") + m["content"]
                for m in messages
            )
        elif fault == "fenced":
            content = "Here you go:\n```json\n" + content + "\n```"
        usage = {
            "prompt_tokens": len(prompt) // 4,
            "completion_tokens": len(content) // 4,
            "total_tokens": len(prompt) // 4 + len(content) // 4,
        }
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": usage,
        }

    def error_response(self, fault: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        kind, _, arg = fault.partition(":")
        errors = {
            "429": (429, "rate_limit_exceeded", "Rate limit reached", {"Retry-After": arg or "1"}),
            "500": (500, "server_error", "The server had an error", {}),
            "503": (503, "server_error", "The engine is overloaded", {}),
            "400": (400, "invalid_request_error", "Invalid parameter", {}),
            "401": (401, "invalid_api_key", "Incorrect API key provided", {}),
            "quota": (429, "insufficient_quota", "You exceeded your current quota", {}),
        }
        if kind not in errors:
            return None
        status, code, message, headers = errors[kind]
        return (
            status,
            {"error": {"message": message, "type": code, "code": code, "param": None}},
            headers,
        )

    async def _chat(
        self, body: dict[str, Any], fault: str | None, n: int, auth: str = ""
    ) -> tuple[int, Any, dict[str, str], str]:
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault and fault.startswith("slow"):
            await asyncio.sleep(float(fault.partition(":")[2] or self.slow_seconds))
        if fault == "drop":
            raise _Drop
        rid = {"x-request-id": f"req-{n}"}
        if fault == "malformed":
            return 200, b'{"id": "x", "choices": [', rid, "application/json"
        err = self.error_response(fault) if fault else None
        if err:
            if self.echo_auth:
                key = auth.removeprefix("Bearer ").strip()
                err[1]["error"]["message"] += f" (you sent: {key}; Authorization: {auth})"
                err[1]["debug"] = {"headers": {"authorization": auth}}
            return err[0], err[1], {**rid, **err[2]}, "application/json"
        return 200, self.completion(body, fault, n), rid, "application/json"

    # -- files and batches ------------------------------------------------------------------------------
    def _upload(self, headers: dict[str, str], raw: bytes) -> dict[str, Any]:
        boundary = re.search(r'boundary="?([^";]+)"?', headers["content-type"]).group(1).encode()  # type: ignore[union-attr]
        fields: dict[str, Any] = {}
        for part in raw.split(b"--" + boundary):
            if b"\r\n\r\n" not in part:
                continue
            head, _, value = part.partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]+)"', head)
            if name:
                fields[name.group(1).decode()] = value[:-2] if value.endswith(b"\r\n") else value
        return self.files[self._store(fields["file"], "batch")]["object"]

    def _store(self, content: bytes, purpose: str) -> str:
        with self.lock:
            fid = f"file-{len(self.files) + 1}"
            self.files[fid] = {
                "content": content,
                "object": {
                    "id": fid,
                    "object": "file",
                    "bytes": len(content),
                    "created_at": int(time.time()),
                    "filename": f"{fid}.jsonl",
                    "purpose": purpose,
                    "status": "processed",
                },
            }
        return fid

    def _create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            bid = f"batch_{len(self.batches) + 1}"
            self.batches[bid] = {
                "id": bid,
                "object": "batch",
                "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"],
                "status": "validating",
                "created_at": int(time.time()),
                "request_counts": {"total": 0, "completed": 0, "failed": 0},
                "_polls": 0,
            }
        return {k: v for k, v in self.batches[bid].items() if not k.startswith("_")}

    def _retrieve_batch(self, bid: str) -> dict[str, Any]:
        b = self.batches[bid]
        b["_polls"] += 1
        if b["status"] != "completed" and b["_polls"] > self.batch_polls_before_done:
            self._run_batch(b)
        elif b["status"] == "validating":
            b["status"] = "in_progress"
        return {k: v for k, v in b.items() if not k.startswith("_")}

    def _run_batch(self, b: dict[str, Any]) -> None:
        out, errs = [], []
        lines = [
            json.loads(x)
            for x in self.files[b["input_file_id"]]["content"].decode().splitlines()
            if x.strip()
        ]
        for i, line in enumerate(lines):
            body = line["body"]
            fault = self.fault_for(body["messages"][0]["content"])
            with self.lock:
                self.log.append(
                    {
                        "n": -1,
                        "time": time.monotonic(),
                        "method": "BATCH",
                        "path": "/batch-line",
                        "prompt": body["messages"][0]["content"],
                        "fault": fault,
                    }
                )
            err = self.error_response(fault) if fault else None
            if err:
                errs.append(
                    {
                        "id": f"batch_req_{i}",
                        "custom_id": line["custom_id"],
                        "response": {
                            "status_code": err[0],
                            "request_id": f"breq-{i}",
                            "body": err[1],
                        },
                        "error": None,
                    }
                )
                continue
            payload = self.completion(body, fault, i)
            out.append(
                {
                    "id": f"batch_req_{i}",
                    "custom_id": line["custom_id"],
                    "response": {"status_code": 200, "request_id": f"breq-{i}", "body": payload},
                    "error": None,
                }
            )
        b["output_file_id"] = self._store(
            "".join(json.dumps(x) + "\n" for x in out).encode(), "batch_output"
        )
        if errs:
            b["error_file_id"] = self._store(
                "".join(json.dumps(x) + "\n" for x in errs).encode(), "batch_output"
            )
        b["status"] = "completed"
        b["completed_at"] = int(time.time())
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errs)}


def kill_9_after(
    proc: subprocess.Popen, journal: Path, ok: int, *, timeout: float = 60.0
) -> tuple[float, list[dict[str, Any]]]:
    """SIGKILL PROC once JOURNAL holds OK `ok` entries (or after TIMEOUT seconds): (the monotonic
    time of the kill, the complete `ok` entries written by then)."""
    deadline = time.time() + timeout
    while time.time() < deadline and (
        not journal.exists() or journal.read_text().count('"status": "ok"') < ok
    ):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic()
    done = [
        json.loads(x)
        for x in journal.read_text().splitlines()
        if '"status": "ok"' in x and x.endswith("}")
    ]
    return killed_at, done


def main() -> None:
    parser = argparse.ArgumentParser(
        description="run the fake OpenAI server until killed; prints its base URL"
    )
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--reply",
        choices=("synth", "echo"),
        default="synth",
        help="synth: a dialogue for a synth prompt; echo: a chat reply (`echo_reply`)",
    )
    args = parser.parse_args()
    server = FakeOpenAI(latency=args.latency).start()
    if args.reply == "echo":
        server.reply_for = echo_reply
    print(server.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
