"""A background worker's loop: passes until stopped, a nudge to look now, backoff on failure.

The outbox relay and outreach's delivery worker are both this loop: do a pass; when it found
nothing, rest until nudged or until the idle pause is over; when it failed (the database or the
broker away), log, rest a little longer each time (0.2 s doubling up to 5 s) and try again: an
outage is waited out, never fatal. :meth:`Worker.stop` lets the pass in progress finish.
"""

from __future__ import annotations

import asyncio
import contextlib

FIRST_BACKOFF = 0.2
MAX_BACKOFF = 5.0


class Worker:
    """Subclasses give :meth:`run_once`; they may refine :meth:`ready` (may this process work
    now?), :meth:`failed` (what a failed pass leaves to clean up and log) and :meth:`aclose`."""

    def __init__(self, *, idle_seconds: float, standby_seconds: float = 1.0) -> None:
        self.idle_seconds = idle_seconds
        self.standby_seconds = standby_seconds
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    def stop(self) -> None:
        """Finish the pass in progress, then leave :meth:`run`."""
        self._stopping.set()
        self._wake.set()

    def nudge(self) -> None:
        """There is new work: look now rather than after the idle pause."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Pass after pass until :meth:`stop`."""
        backoff = FIRST_BACKOFF
        try:
            while not self._stopping.is_set():
                try:
                    if not await self.ready():
                        await self.pause(self.standby_seconds)
                        continue
                    handled = await self.run_once()
                except Exception as exc:
                    await self.failed(exc)
                    await self.pause(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                backoff = FIRST_BACKOFF
                if handled == 0:
                    await self.pause(self.idle_seconds)
        finally:
            await self.aclose()

    async def run_once(self) -> int:
        """One pass; returns how much work it found (0: rest before the next)."""
        raise NotImplementedError

    async def ready(self) -> bool:
        return True

    async def failed(self, exc: Exception) -> None:
        """A pass raised: log it (and release what the pass held)."""

    async def aclose(self) -> None:
        """Release what the worker holds, once it has stopped."""

    async def pause(self, seconds: float) -> None:
        """Rest ``seconds``, or less when nudged or stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
