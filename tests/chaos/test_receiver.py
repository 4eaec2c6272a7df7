"""The webhook receiver misbehaves: it hangs, takes a delivery and answers only after the
sender timed out, drops connections, answers 500s — at random, then to everything for a
while. Every action is delivered in the end, each under its one webhook id."""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.chaos.load import Load
from tests.chaos.pipeline import Pipeline
from tests.chaos.scenario import Chaos, run_scenario
from tests.support.receivers import Step

pytestmark = pytest.mark.chaos


class Moods:
    """The receiver's answers: mostly 200, with every kind of failure mixed in; ``down``
    answers 500 to everything."""

    MIXED: tuple[tuple[Step, float], ...] = (
        (200, 0.45),
        (500, 0.15),
        ("hang", 0.12),
        ("late", 0.15),
        ("drop", 0.08),
        (503, 0.05),
    )

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.down = False

    def __call__(self) -> Step:
        if self.down:
            return 500
        steps, weights = zip(*self.MIXED, strict=True)
        step: Step = self._rng.choices(steps, weights)[0]
        return step


async def test_a_receiver_that_hangs_times_out_and_fails(chaos: Chaos) -> None:
    moods = Moods(random.Random(chaos.seed + 2))

    async def misbehave(p: Pipeline, load: Load, rng: random.Random) -> None:
        p.note("receiver answers at random")
        await load.until_accepted(len(load.accepted) + rng.randint(60, 90))
        moods.down = True
        p.fault("receiver answers 500 to everything")
        await asyncio.sleep(rng.uniform(3, 5))
        moods.down = False
        p.note("receiver answers at random again")

    await run_scenario("webhook receiver faults", chaos, misbehave, answers=moods)
