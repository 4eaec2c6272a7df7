"""kill -9 every service at random moments, several times each, under a steady load, and
restart it: nothing accepted is lost, nothing is decided twice.

One scenario kills all three in a random order (a service may die while another is still
coming back): three separate scenarios would spend most of their time starting pipelines.
The timeline printed with the figures says which kill came when."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.chaos.load import Load
from tests.chaos.pipeline import Pipeline
from tests.chaos.scenario import Chaos, run_scenario
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.chaos

KILLS_EACH = 2


async def test_kill_9_every_service_at_random_moments(chaos: Chaos) -> None:
    async def kill_and_restart(p: Pipeline, load: Load, rng: random.Random) -> None:
        victims = p.processes * KILLS_EACH
        rng.shuffle(victims)
        coming_back: dict[ServiceProcess, asyncio.Task[None]] = {}

        async def back_after(proc: ServiceProcess, pause: float) -> None:
            await asyncio.sleep(pause)
            await p.start(proc)

        for proc in victims:
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            if proc in coming_back:
                await coming_back.pop(proc)  # it must be up to be killed again
            proc.kill()
            p.fault(f"kill -9 {proc.service}")
            coming_back[proc] = asyncio.create_task(back_after(proc, rng.uniform(0.1, 1.0)))
        await asyncio.gather(*coming_back.values())

    await run_scenario("kill -9 every service", chaos, kill_and_restart)
