"""Supervised background tasks: a consumer, relay, delivery loop or periodic job that dies is
started again, and while it is down the service says so.

Every task a service runs for its whole life (see :class:`shared.runtime.Runtime`) runs under
one :class:`Supervisor`. A task that raises, is cancelled by anything but the shutdown, or
returns while the service is not stopping is *down*: logged with its reason, counted in
``tend_task_restarts_total`` when it starts again, and named by ``/readyz`` (the check
``task:<name>`` is false) until then. It starts again after a backoff that begins at
``TEND_TASK_RESTART_SECONDS`` and doubles up to :data:`MAX_RESTART_SECONDS`; a task that then
runs for :data:`STEADY_SECONDS` starts from the first backoff again at its next death.

Each start calls the task's factory anew: a worker whose ``run`` cannot be entered twice
(an aiokafka consumer cannot be restarted) builds what it needs inside ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from shared.logging import get_logger

log = get_logger(__name__)

MAX_RESTART_SECONDS = 60.0
STEADY_SECONDS = 60.0

TASK_RESTARTS = Counter(
    "tend_task_restarts_total",
    "Times a background task (consumer, relay, delivery, periodic job) was started again "
    "after it died",
    ["service", "task"],
)
TASK_UP = Gauge(
    "tend_task_up",
    "1 while a background task runs, 0 while it is down and waits to be started again",
    ["service", "task"],
)


@dataclass
class _Supervised:
    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], None] | None
    current: asyncio.Task[None] | None = None
    down: str | None = None  # why it is down; None while it runs
    keeper: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Runs named tasks for the life of a service and starts again those that die."""

    def __init__(self, service: str, *, first_backoff: float) -> None:
        self.service = service
        self.first_backoff = first_backoff
        self._tasks: dict[str, _Supervised] = {}
        self._stopping = asyncio.Event()

    def start(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        stop: Callable[[], None] | None = None,
    ) -> str:
        """Run ``run()`` under the name ``name`` (made unique with a suffix); ``stop`` asks it
        to finish at shutdown (without one, it is cancelled). Returns the name given."""
        unique, n = name, 2
        while unique in self._tasks:
            unique, n = f"{name}#{n}", n + 1
        supervised = _Supervised(unique, run, stop)
        self._tasks[unique] = supervised
        supervised.keeper = asyncio.create_task(self._keep(supervised), name=f"keep:{unique}")
        return unique

    def task(self, name: str) -> asyncio.Task[None] | None:
        """The running task of ``name`` (None while it is down)."""
        supervised = self._tasks.get(name)
        return supervised.current if supervised and supervised.down is None else None

    def names(self) -> list[str]:
        return list(self._tasks)

    def down(self) -> dict[str, str]:
        """The tasks that are down now, with why."""
        return {s.name: s.down for s in self._tasks.values() if s.down is not None}

    async def stop(self, timeout: float) -> None:
        """Start nothing again; ask the tasks that can finish to finish (in the order
        started, each given ``timeout`` seconds), then cancel the rest, each again given
        ``timeout`` seconds to end. A task that outlives that is logged and left behind:
        a shutdown never waits without end (an orchestrator would kill the process anyway,
        without the steps that follow: the producer's flush, the pool's close)."""
        self._stopping.set()
        for supervised in self._tasks.values():
            if supervised.stop is not None:
                supervised.stop()
        for supervised in self._tasks.values():
            keeper = supervised.keeper
            if keeper is None:
                continue
            if supervised.stop is not None:
                await asyncio.wait({keeper}, timeout=timeout)
            keeper.cancel()
            ended, _ = await asyncio.wait({keeper}, timeout=timeout)
            if not ended:
                log.error("task_did_not_stop", service=self.service, task=supervised.name)
            elif not keeper.cancelled():
                with contextlib.suppress(BaseException):
                    keeper.result()

    async def _keep(self, supervised: _Supervised) -> None:
        labels = (self.service, supervised.name)
        loop = asyncio.get_running_loop()
        backoff = self.first_backoff
        while True:
            started = loop.time()
            task = asyncio.create_task(_run(supervised.start), name=supervised.name)
            supervised.current, supervised.down = task, None
            TASK_UP.labels(*labels).set(1)
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:  # the shutdown cancels the keeper: end the task
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise
            if self._stopping.is_set():
                return
            supervised.down = _why(task)
            TASK_UP.labels(*labels).set(0)
            if loop.time() - started >= STEADY_SECONDS:
                backoff = self.first_backoff
            log.error(
                "task_down",
                service=self.service,
                task=supervised.name,
                reason=supervised.down,
                restart_in=round(backoff, 2),
                exc_info=None if task.cancelled() else task.exception(),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            if self._stopping.is_set():
                return
            backoff = min(backoff * 2, MAX_RESTART_SECONDS)
            TASK_RESTARTS.labels(*labels).inc()
            log.warning("task_restarted", service=self.service, task=supervised.name)


async def _run(start: Callable[[], Awaitable[None]]) -> None:
    await start()


def _why(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    if exc is not None:
        return f"raised {type(exc).__name__}"
    return "returned"
