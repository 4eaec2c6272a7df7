"""Two instances each of scoring and outreach share their partitions; one of each is frozen
past its session timeout and woken (a zombie), or killed mid-batch (a rebalance)."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import text

from tests.chaos.load import Load
from tests.chaos.pipeline import Pipeline
from tests.chaos.scenario import Chaos, run_scenario

pytestmark = pytest.mark.chaos

# shared.consumer.BatchConsumer's session timeout: a member silent this long is dropped
# from its group and its partitions are handed to the others.
SESSION_TIMEOUT_SECONDS = 10.0


async def _applied(p: Pipeline) -> tuple[int, int]:
    async with p.engine.connect() as conn:
        scored = await conn.scalar(text("SELECT count(*) FROM scoring.inbox"))
        seen = await conn.scalar(text("SELECT count(*) FROM outreach.inbox"))
    return int(scored or 0), int(seen or 0)


async def test_a_frozen_consumer_loses_its_partitions_and_wakes_up_a_zombie(
    chaos: Chaos,
) -> None:
    async def freeze(p: Pipeline, load: Load, rng: random.Random) -> None:
        scoring, outreach = p.scoring[0], p.outreach[0]
        await load.until_accepted(len(load.accepted) + rng.randint(10, 40))
        before = await _applied(p)
        scoring.pause()
        p.fault("SIGSTOP scoring")
        await asyncio.sleep(rng.uniform(0, 2))
        outreach.pause()
        p.fault("SIGSTOP outreach")
        try:
            await asyncio.sleep(SESSION_TIMEOUT_SECONDS + rng.uniform(4, 6))
            during = await _applied(p)
        finally:
            scoring.resume()
            outreach.resume()
        p.fault("SIGCONT scoring and outreach")
        p.note(
            f"applied while frozen: scoring +{during[0] - before[0]}, "
            f"outreach +{during[1] - before[1]}"
        )

    await run_scenario("zombie consumer", chaos, freeze, scoring=2, outreach=2)


async def test_one_of_two_instances_killed_mid_batch(chaos: Chaos) -> None:
    async def kill_one(p: Pipeline, load: Load, rng: random.Random) -> None:
        for victim in (p.scoring[0], p.outreach[0]):
            await load.until_accepted(len(load.accepted) + rng.randint(5, 30))
            victim.kill()
            p.fault(f"kill -9 one {victim.service}")
        # The survivors take the partitions over once the session times out; then the
        # killed instances come back and the groups rebalance again.
        before = await _applied(p)
        await asyncio.sleep(SESSION_TIMEOUT_SECONDS + rng.uniform(1, 3))
        during = await _applied(p)
        p.note(
            f"applied by the survivors: scoring +{during[0] - before[0]}, "
            f"outreach +{during[1] - before[1]}"
        )
        await asyncio.gather(p.start(p.scoring[0]), p.start(p.outreach[0]))

    await run_scenario("rebalance after a kill", chaos, kill_one, scoring=2, outreach=2)
