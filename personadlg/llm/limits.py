"""Client-side rate limits: requests and tokens per sliding minute, exact over any window."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    """At most LIMIT units (requests or tokens) within any WINDOW seconds (0 = no limit)."""

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._events: deque[tuple[float, int]] = deque()
        self._used = 0
        self._lock = asyncio.Lock()

    async def acquire(self, amount: int = 1) -> None:
        if self.limit <= 0:
            return
        amount = min(amount, self.limit)  # a single request larger than the limit still goes, alone
        async with self._lock:
            while True:
                now = self.clock()
                while self._events and now - self._events[0][0] >= self.window:
                    self._used -= self._events.popleft()[1]
                if self._used + amount <= self.limit:
                    self._events.append((now, amount))
                    self._used += amount
                    return
                await asyncio.sleep(max(self._events[0][0] + self.window - now, 0.001))
