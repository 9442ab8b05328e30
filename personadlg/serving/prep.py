"""`PrepWorker`: the one thread that parses, validates, tokenises and renders requests, cheapest
first.

A request's preparation runs off the event loop (so `/health` answers and signals are heard), in a
single thread (the counting tokenizers are not shared across threads). Its queue is ordered by each
job's cost, the request body's size: an ordinary request of a few hundred bytes is prepared before
the 4 MB bodies queued ahead of it, so clients flooding the server with large bodies delay one
another, not everybody (jobs of one cost keep their arrival order).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class PrepWorker:
    """One daemon thread running submitted jobs, lowest cost first."""

    def __init__(self, name: str = "personadlg-prep") -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def run(self, cost: int, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """FN(*ARGS, **KWARGS) in the worker, after the queued jobs of lower COST; its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        self._queue.put((cost, next(self._order), (call, loop, future)))
        return await future

    def stop(self) -> None:
        """End the thread once the job under way returns; queued jobs are dropped."""
        self._queue.put((-1, -1, _STOP))

    def _run(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is _STOP:
                return
            call, loop, future = job
            if future.done():  # its request went away meanwhile
                continue
            try:
                out = (True, call())
            except BaseException as err:
                out = (False, err)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future, *out)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not future.done():
        (future.set_result if ok else future.set_exception)(value)
