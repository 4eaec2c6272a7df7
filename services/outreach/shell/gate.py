"""A receiver's gate: at most its pace's in-flight limit of sends at once, in turn.

The limit moves while sends wait (the pace widens on quick answers and narrows on slow
ones or errors). A send that finds a place goes at once; the others queue, and each send
that ends hands its place to the oldest waiting one while the limit allows. A hand-off wakes
one waiter, never every waiter to check again: at saturation thousands of sends wait on one
receiver, and waking them all per answer was a twentieth of outreach's work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable


class Gate:
    def __init__(self, limit: Callable[[], int]) -> None:
        """``limit``: how many sends may be in flight now (read on every entry and end)."""
        self._limit = limit
        self._busy = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def busy(self) -> int:
        """How many sends hold a place."""
        return self._busy

    @property
    def waiting(self) -> int:
        """How many sends wait for one."""
        return sum(1 for w in self._waiting if not w.done())

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a place for the length of the block."""
        if self._busy < self._limit() and not self._waiting:
            self._busy += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter  # the send that handed its place over counted this one in
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._leave()  # handed a place as it was cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._leave()

    def _leave(self) -> None:
        self._busy -= 1
        waiting = self._waiting
        while waiting and self._busy < self._limit():
            waiter = waiting.popleft()
            if not waiter.done():  # a cancelled waiter has left already
                self._busy += 1
                waiter.set_result(None)
