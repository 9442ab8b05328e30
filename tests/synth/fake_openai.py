"""A real HTTP server on 127.0.0.1 that speaks the OpenAI API (chat completions, files, batches)
and injects faults on demand. Used by the synth tests and benchmarks.

    server = FakeOpenAI(latency=0.1).start()      # server.base_url == "http://127.0.0.1:PORT/v1"
    server.script.extend(["429:0.5", "500", "drop"])   # faults for the next chat requests, in order
    server.fault_for = lambda prompt: "unparseable" if "cursed" in prompt else None   # faults by content
    ...
    server.stop()

Faults: `429[:retry-after]`, `500`, `503`, `400`, `401` (auth), `quota` (429 insufficient_quota),
`slow[:seconds]`, `drop` (close without a response), `malformed` (invalid JSON body), `truncated`
(content cut, finish_reason length), `unparseable` (prose), `transcript` and `fenced` (valid
dialogues in the other accepted shapes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class FakeOpenAI:
    def __init__(
        self, *, latency: float = 0.0, slow_seconds: float = 3.0, batch_polls_before_done: int = 1
    ) -> None:
        self.latency, self.slow_seconds, self.batch_polls_before_done = (
            latency,
            slow_seconds,
            batch_polls_before_done,
        )
        self.script: deque[str] = deque()
        self.fault_for: Callable[[str], str | None] = lambda prompt: None
        self.log: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.counter = 0
        self.httpd: ThreadingHTTPServer | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_GET(self) -> None:
                server._handle(self, "GET")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    @property
    def base_url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.log if r["path"].endswith("/chat/completions")]

    # -- plumbing ---------------------------------------------------------------------------------------
    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None = None,
        ctype: str = "application/json",
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = h.path.split("?")[0]
        with self.lock:
            self.counter += 1
            n = self.counter
        entry = {
            "n": n,
            "time": time.monotonic(),
            "method": method,
            "path": path,
            "auth": h.headers.get("Authorization"),
        }
        if path.endswith("/chat/completions"):
            body = json.loads(raw)
            entry["prompt"] = body["messages"][0]["content"]
            entry["body"] = body
            with self.lock:
                self.log.append(entry)
                fault = self.script.popleft() if self.script else self.fault_for(entry["prompt"])
            entry["fault"] = fault
            self._chat(h, body, fault, n)
            return
        with self.lock:
            self.log.append(entry)
        if path.endswith("/files") and method == "POST":
            self._upload(h, raw)
        elif re.search(r"/files/[^/]+/content$", path):
            fid = path.split("/")[-2]
            self._send(h, 200, self.files[fid]["content"], ctype="application/octet-stream")
        elif path.endswith("/batches") and method == "POST":
            self._create_batch(h, json.loads(raw))
        elif re.search(r"/batches/[^/]+$", path):
            self._retrieve_batch(h, path.split("/")[-1])
        else:
            self._send(
                h,
                404,
                {
                    "error": {
                        "message": f"no route {method} {path}",
                        "type": "invalid_request_error",
                    }
                },
            )

    # -- chat ------------------------------------------------------------------------------------------
    def completion(
        self, body: dict[str, Any], fault: str | None, n: int
    ) -> tuple[int, dict[str, Any] | bytes, dict[str, str]]:
        prompt = body["messages"][0]["content"]
        messages = dialogue_for(prompt)
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
        return (
            200,
            {
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
            },
            {},
        )

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

    def _chat(
        self, h: BaseHTTPRequestHandler, body: dict[str, Any], fault: str | None, n: int
    ) -> None:
        if self.latency:
            time.sleep(self.latency)
        if fault and fault.startswith("slow"):
            time.sleep(float(fault.partition(":")[2] or self.slow_seconds))
        if fault == "drop":
            h.close_connection = True
            h.connection.shutdown(2)
            return
        if fault == "malformed":
            self._send(h, 200, b'{"id": "x", "choices": [', {"x-request-id": f"req-{n}"})
            return
        err = self.error_response(fault) if fault else None
        if err:
            status, payload, headers = err
            self._send(h, status, payload, {"x-request-id": f"req-{n}", **headers})
            return
        status, payload, headers = self.completion(body, fault, n)
        self._send(h, status, payload, {"x-request-id": f"req-{n}", **headers})

    # -- files and batches ------------------------------------------------------------------------------
    def _upload(self, h: BaseHTTPRequestHandler, raw: bytes) -> None:
        boundary = re.search(r'boundary="?([^";]+)"?', h.headers["Content-Type"]).group(1).encode()  # type: ignore[union-attr]
        fields: dict[str, Any] = {}
        for part in raw.split(b"--" + boundary):
            if b"\r\n\r\n" not in part:
                continue
            head, _, value = part.partition(b"\r\n\r\n")
            name = re.search(rb'name="([^"]+)"', head)
            if name:
                fields[name.group(1).decode()] = value[:-2] if value.endswith(b"\r\n") else value
        fid = self._store(fields["file"], "batch")
        self._send(h, 200, self.files[fid]["object"])

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

    def _create_batch(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
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
        self._send(h, 200, {k: v for k, v in self.batches[bid].items() if not k.startswith("_")})

    def _retrieve_batch(self, h: BaseHTTPRequestHandler, bid: str) -> None:
        b = self.batches[bid]
        b["_polls"] += 1
        if b["status"] != "completed" and b["_polls"] > self.batch_polls_before_done:
            self._run_batch(b)
        elif b["status"] == "validating":
            b["status"] = "in_progress"
        self._send(h, 200, {k: v for k, v in b.items() if not k.startswith("_")})

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
            _, payload, _ = self.completion(body, fault, i)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description="run the fake OpenAI server until killed; prints its base URL"
    )
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = FakeOpenAI(latency=args.latency).start()
    print(server.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
