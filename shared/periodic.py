"""Background jobs that run on an interval inside a service (sweeps, refits, reloads)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.logging import get_logger

log = get_logger(__name__)


async def every(
    seconds: float, name: str, job: Callable[[], Awaitable[object]], *, at_start: bool = False
) -> None:
    """Run ``job`` every ``seconds`` until cancelled (the first time at once with
    ``at_start``); a failed round is logged and the next one tries again."""
    first = at_start
    while True:
        if not first:
            await asyncio.sleep(seconds)
        first = False
        try:
            await job()
        except Exception as exc:
            log.warning("periodic_job_failed", job=name, reason=type(exc).__name__)
