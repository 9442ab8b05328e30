"""Running the app: `run_server` (the command, blocking, with signals) and `serve_in_thread`
(tests and benchmarks: a real server on 127.0.0.1 in a background thread).

SIGTERM and SIGINT start uvicorn's graceful shutdown: the listening socket closes, requests in
flight — and whatever the batchers have queued for them — finish and are answered, then the
lifespan's shutdown drains the batchers and `run_server` returns 0. Requests still waiting after
the app's `shutdown_timeout` are answered 503 (`ServerState.begin_shutdown`); a second SIGINT or
SIGTERM answers them 503 at once, a third one exits without answering. The socket is bound and listening before the app starts, so the URL (port 0: a free port)
is known at once and clients that connect while the models load are answered (503) rather than
refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from personadlg.errors import PersonadlgError

logger = logging.getLogger(__name__)

BACKLOG = 2048
"""Connections the kernel queues before they are accepted (uvicorn's default)."""


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to HOST:PORT (port 0: a free port); a clear error when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # listening at once: a client that connects before uvicorn accepts waits in the backlog
        # instead of being refused (the URL is printed before the server starts)
        sock.listen(BACKLOG)
    except OSError as err:
        sock.close()
        raise PersonadlgError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


BACKSTOP_S = 5.0
"""Seconds after the app's shutdown timeout at which uvicorn cancels whatever still runs."""


def _server(app: Any) -> Any:
    """A uvicorn server for APP that tells the app when it starts stopping (so requests in flight
    get their shutdown timeout), answers what still waits at once on a second SIGINT or SIGTERM,
    and exits without answering on a third."""
    import uvicorn

    state = getattr(app.state, "personadlg", None)
    timeout = getattr(state, "shutdown_timeout", None)

    class Server(uvicorn.Server):  # type: ignore[misc]
        loop: asyncio.AbstractEventLoop | None = None
        told = 0

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().startup(sockets)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.told += 1
            if self.told == 2 and state is not None and self.loop is not None:
                # told twice: answer what still waits now (503), then stop as usual
                self.loop.call_soon_threadsafe(state.abandon_requests)
            elif self.told >= 2:
                self.force_exit = True
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if state is not None:
                state.begin_shutdown()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        app,
        log_config=None,  # personadlg's logging setup stays in charge
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=None if timeout is None else timeout + BACKSTOP_S,
        server_header=False,
    )
    return Server(config)


@contextlib.contextmanager
def _signals_noted() -> Iterator[list[int]]:
    """SIGINT / SIGTERM only noted inside the block: uvicorn re-raises the signal that stopped it
    once it is done, and that must not turn a clean shutdown into an error exit."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield noted
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_server(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve APP until SIGTERM / SIGINT (graceful: in-flight requests finish first).

    ON_LISTENING is called with the URL once the socket is bound. Raises PersonadlgError when
    the address is taken or a checkpoint fails to load (the server then stops)."""
    sock = bind(host, port)
    server = _server(app)
    failed: list[str] = []

    def stop_on_failure(message: str) -> None:
        failed.append(message)
        server.should_exit = True

    app.state.personadlg.on_load_failed.append(stop_on_failure)
    url = url_of(sock)
    logger.info("listening on %s", url)
    if on_listening is not None:
        on_listening(url)
    with _signals_noted() as noted:
        server.run(sockets=[sock])
    if noted:
        logger.info("stopped by %s", signal.Signals(noted[-1]).name)
    if failed:
        raise PersonadlgError(f"cannot load the models: {failed[0]}")


@dataclass
class RunningServer:
    """A server in a background thread (`serve_in_thread`)."""

    server: Any
    thread: threading.Thread
    url: str

    @property
    def base_url(self) -> str:
        """The OpenAI client's base_url."""
        return self.url + "/v1"

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful shutdown, as on SIGTERM; waits for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_thread(
    app: Any, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0
) -> RunningServer:
    """Start APP on HOST:PORT (0: a free port) in a daemon thread; returns once it accepts
    connections (its models may still be loading: poll `/health`)."""
    sock = bind(host, port)
    server = _server(app)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="personadlg-serve", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise PersonadlgError("the server thread exited during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise PersonadlgError(f"the server did not start within {timeout:.0f}s")
        time.sleep(0.01)
    return RunningServer(server, thread, url_of(sock))
