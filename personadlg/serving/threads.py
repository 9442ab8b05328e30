"""`in_daemon_thread`: blocking work (loading a model, generating) awaited from the event loop
in a daemon thread, so a server that must stop never waits for it at exit (the default
executor's threads are joined when the interpreter exits)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any


async def in_daemon_thread(fn: Callable[..., Any], *args: Any, name: str = "personadlg") -> Any:
    """FN(*ARGS) in a new daemon thread NAME; its result (or exception) once it returns. When the
    awaiting task is cancelled the thread runs on, and its result is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            (future.set_result if ok else future.set_exception)(value)

    def work() -> None:
        try:
            out = (True, context.run(fn, *args))
        except BaseException as err:
            out = (False, err)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(settle, *out)

    threading.Thread(target=work, name=name, daemon=True).start()
    return await future
