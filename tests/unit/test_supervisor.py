"""The supervisor of a service's background tasks: a task that dies is started again (a new
run each time), named as down until then, and the shutdown asks, then cancels."""

from __future__ import annotations

import asyncio
import contextlib

from shared.supervisor import Supervisor


async def test_a_task_that_raises_or_returns_is_started_again_and_named_meanwhile() -> None:
    supervisor = Supervisor("unit", first_backoff=0.01)
    runs = 0
    may_finish = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("boom")
        if runs == 2:
            return  # a worker loop that leaves while nobody stops it is down too
        await may_finish.wait()

    supervisor.start("flaky", flaky)
    async with asyncio.timeout(10):
        while runs < 3:
            await asyncio.sleep(0.005)
    assert supervisor.down() == {}
    assert supervisor.task("flaky") is not None
    await supervisor.stop(1)


async def test_a_killed_task_is_down_until_its_backoff_is_over() -> None:
    supervisor = Supervisor("unit", first_backoff=30)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    supervisor.start("forever", forever)
    await started.wait()
    task = supervisor.task("forever")
    assert task is not None
    task.cancel()
    await asyncio.wait({task})
    await asyncio.sleep(0)
    assert supervisor.down() == {"forever": "cancelled"}
    assert supervisor.task("forever") is None
    # The shutdown does not wait out the 30 s backoff.
    async with asyncio.timeout(5):
        await supervisor.stop(1)


async def test_the_shutdown_asks_those_that_can_finish_and_cancels_the_rest() -> None:
    supervisor = Supervisor("unit", first_backoff=0.01)
    asked = asyncio.Event()
    finished: list[str] = []

    async def worker() -> None:
        await asked.wait()
        finished.append("worker")

    async def job() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            finished.append("job cancelled")
            raise

    names = [supervisor.start("w", worker, stop=asked.set), supervisor.start("w", job)]
    assert names == ["w", "w#2"]
    await asyncio.sleep(0.01)
    await supervisor.stop(1)
    assert finished == ["worker", "job cancelled"]
    assert supervisor.down() == {}


async def test_a_task_that_will_not_end_does_not_hold_the_shutdown_for_ever() -> None:
    supervisor = Supervisor("unit", first_backoff=0.01)
    release = asyncio.Event()
    others_stopped = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            # Swallows every cancellation (a client stuck in its own close, say).
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    async def polite() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            others_stopped.set()

    supervisor.start("stubborn", stubborn)
    supervisor.start("polite", polite)
    await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        await supervisor.stop(0.2)
    # The tasks after the stubborn one were still stopped.
    assert others_stopped.is_set()
    release.set()
    await asyncio.sleep(0.01)
