"""`personadlg serve`: trained checkpoints behind the OpenAI chat-completions API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from personadlg.cli._options import AllowPickle, TrustRemoteCode


def serve(
    checkpoints: Annotated[
        list[Path], typer.Argument(help="Checkpoint dirs, e.g. runs/x/final (one or more).")
    ],
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0: any free port).")] = 8000,
    name: Annotated[
        Optional[list[str]],
        typer.Option(
            "--name", help="Model name for each checkpoint, in order (default: the run names)."
        ),
    ] = None,
    batch_window_ms: Annotated[
        float,
        typer.Option(
            "--batch-window-ms", help="Requests arriving within this window are generated together."
        ),
    ] = 10.0,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Most examples per generate call (1: no batching).")
    ] = 32,
    max_messages: Annotated[
        int,
        typer.Option(
            "--max-messages",
            help="Most messages one request may hold (more: a 400 error).",
        ),
    ] = 256,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            "--shutdown-timeout",
            help="Seconds the requests in flight get to finish after SIGTERM / Ctrl-C; then they are "
            "answered 503 and the server exits (a second signal: at once).",
        ),
    ] = 30.0,
    api_key_env: Annotated[
        Optional[str],
        typer.Option(
            "--api-key-env",
            help="Require `Authorization: Bearer KEY`, KEY being this environment variable's value.",
        ),
    ] = None,
    trust_remote_code: TrustRemoteCode = False,
    allow_pickle: AllowPickle = False,
) -> None:
    """Serve checkpoints through the OpenAI chat API: /v1/chat/completions, /v1/models, /health.

    Any OpenAI client works: persona, profile and attributes go in extra_body, a lora user in `user`.

    The models load in the background (/health answers 503 until they are ready). SIGTERM or Ctrl-C finishes the requests in flight (for at most --shutdown-timeout seconds), then exits; a second signal exits at once.

    [bold]Examples[/]

      personadlg serve runs/finetune-tiny/final
      personadlg serve runs/lora-tiny/final runs/cvae-tiny/final --port 8080 --max-batch 64
      MY_KEY=secret personadlg serve runs/x/final --host 0.0.0.0 --api-key-env MY_KEY
    """
    import os

    from personadlg.cli._console import err, out, set_interrupt_note
    from personadlg.errors import UsageError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UsageError(
            f"personadlg serve needs fastapi and uvicorn ({e.name} is not installed): "
            "pip install 'personadlg[serve]'"
        ) from None
    if not 0 <= port <= 65535:
        raise UsageError(f"--port: expected 0-65535, got {port}")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env, "")
        if not api_key:
            raise UsageError(
                f"--api-key-env {api_key_env}: the environment variable is not set (or empty)"
            )

    from personadlg.serving.app import create_app
    from personadlg.serving.server import run_server

    app = create_app(
        checkpoints,
        names=name,
        batch_window_ms=batch_window_ms,
        max_batch=max_batch,
        max_messages=max_messages,
        shutdown_timeout=shutdown_timeout,
        api_key=api_key,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    names = app.state.personadlg.registry.names
    set_interrupt_note("the server stopped")
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        err.print(
            f"warning: listening on {host} without --api-key-env: anyone who can reach it can use it",
            markup=False,
            highlight=False,
        )

    def listening(url: str) -> None:
        out.print(
            f"serving {', '.join(names)} on {url}/v1, chat page {url}/ (loading; {url}/health says when ready)",
            markup=False,
            highlight=False,
        )
        out.file.flush()

    run_server(app, host=host, port=port, on_listening=listening)
    _exit_now_if_still_busy()


def _exit_now_if_still_busy() -> None:
    """End the process at once when a generation (or a load) abandoned at shutdown still runs in
    its daemon thread: letting the interpreter finalize under a thread inside torch aborts it."""
    import logging
    import os
    import sys
    import threading

    busy = [t.name for t in threading.enumerate() if t.daemon and t.name.startswith("personadlg-")]
    if busy:
        logging.getLogger(__name__).info("exiting with %s still running", ", ".join(busy))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Models")(serve)
