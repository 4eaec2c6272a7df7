"""A receiver's gate (services/outreach/shell/gate.py): its in-flight limit, taken in turn."""

from __future__ import annotations

import asyncio

from services.outreach.shell.gate import Gate


def test_no_more_sends_than_the_limit_are_in_flight_and_they_go_in_turn() -> None:
    async def scenario() -> None:
        limit = 2
        gate = Gate(lambda: limit)
        release = asyncio.Event()
        started: list[int] = []
        most = 0

        async def send(n: int) -> None:
            nonlocal most
            async with gate.slot():
                started.append(n)
                most = max(most, gate.busy)
                await release.wait()

        tasks = [asyncio.create_task(send(n)) for n in range(6)]
        await asyncio.sleep(0)
        assert started == [0, 1] and gate.waiting == 4
        limit = 4  # widened while they wait: taken up as places are handed over
        release.set()
        await asyncio.gather(*tasks)
        assert started == [0, 1, 2, 3, 4, 5]
        assert most <= 4 and gate.busy == 0 and gate.waiting == 0

    asyncio.run(scenario())


def test_a_narrowed_limit_holds_new_sends_until_enough_have_ended() -> None:
    async def scenario() -> None:
        limit = 3
        gate = Gate(lambda: limit)
        ends = [asyncio.Event() for _ in range(4)]
        inside: set[int] = set()

        async def send(n: int) -> None:
            async with gate.slot():
                inside.add(n)
                await ends[n].wait()
                inside.discard(n)

        tasks = [asyncio.create_task(send(n)) for n in range(4)]
        await asyncio.sleep(0)
        assert inside == {0, 1, 2}
        limit = 1
        ends[0].set()
        await asyncio.sleep(0.01)
        assert inside == {1, 2}  # two in flight still: above the limit, nobody new goes
        ends[1].set()
        ends[2].set()
        await asyncio.sleep(0.01)
        assert inside == {3}
        ends[3].set()
        await asyncio.gather(*tasks)
        assert gate.busy == 0

    asyncio.run(scenario())


def test_a_send_cancelled_while_it_waits_leaves_no_place_taken() -> None:
    async def scenario() -> None:
        gate = Gate(lambda: 1)
        release = asyncio.Event()
        entered: list[str] = []

        async def send(name: str) -> None:
            async with gate.slot():
                entered.append(name)
                await release.wait()

        first = asyncio.create_task(send("first"))
        waiting = asyncio.create_task(send("cancelled"))
        last = asyncio.create_task(send("last"))
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(first, last)
        assert entered == ["first", "last"]
        assert waiting.cancelled() and gate.busy == 0 and gate.waiting == 0

    asyncio.run(scenario())


def test_a_send_cancelled_just_as_it_was_handed_a_place_passes_it_on() -> None:
    async def scenario() -> None:
        gate = Gate(lambda: 1)
        entered: list[str] = []

        async def send(name: str) -> None:
            async with gate.slot():
                entered.append(name)

        async with gate.slot():
            handed = asyncio.create_task(send("handed"))
            last = asyncio.create_task(send("last"))
            await asyncio.sleep(0)
            assert gate.waiting == 2
        # Leaving handed the place to "handed", which is cancelled before it could run.
        handed.cancel()
        await asyncio.wait_for(last, 1)
        assert entered == ["last"]
        assert handed.cancelled() and gate.busy == 0 and gate.waiting == 0

    asyncio.run(scenario())
