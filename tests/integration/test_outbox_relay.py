"""The outbox relay against the real broker and database: only the leader publishes, and a
leader whose pass failed hands over at once, its rows published by the next in their order."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine
from shared.kafka import Producer, PublishError, start_producer
from shared.outbox import VACUUM_EVERY, OutboxRelay
from shared.settings import CommonSettings
from tests.support.kafka_io import create_topic, read_all

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def outbox(settings: CommonSettings, engine: AsyncEngine) -> AsyncIterator[tuple[str, str]]:
    """A table shaped like the services' outboxes and a topic, both this test's own."""
    table = f"public.relay_outbox_{uuid.uuid4().hex[:8]}"
    topic = f"{settings.topic_prefix}relay-test-{uuid.uuid4().hex[:6]}"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                f"CREATE TABLE {table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                "customer_id text NOT NULL, payload bytea NOT NULL)"
            )
        )
    await create_topic(settings, topic)
    yield table, topic
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP TABLE {table}"))


async def test_a_leader_whose_pass_failed_hands_over_at_once(
    settings: CommonSettings, engine: AsyncEngine, outbox: tuple[str, str]
) -> None:
    table, topic = outbox
    lock = secrets.randbelow(2**31)
    # Two instances of a service: each its own pool and producer.
    engine_a, engine_b = make_engine(settings, pool_size=1), make_engine(settings, pool_size=1)
    producer_a, producer_b = await start_producer(settings), await start_producer(settings)
    a = OutboxRelay(engine=engine_a, producer=producer_a, table=table, topic=topic, lock_key=lock)
    b = OutboxRelay(engine=engine_b, producer=producer_b, table=table, topic=topic, lock_key=lock)
    try:
        assert await a.ready()
        assert not await b.ready()
        async with engine.begin() as conn:
            await conn.execute(
                text(f"INSERT INTO {table} (customer_id, payload) VALUES (:c, :p)"),
                [{"c": "c1", "p": f"change-{n}".encode()} for n in (1, 2, 3)],
            )
        # Only the leader publishes.
        assert await b.relay_once() == 0

        # The broker client the leader publishes with is gone: its pass fails, and its rows
        # stay.
        await producer_a.current.stop()
        with pytest.raises(PublishError) as failure:
            await a.run_once()
        await a.failed(failure.value)

        # The other instance leads at once (the lock went with the failed leader's
        # connection, not back into its pool) and publishes the rows in their order.
        assert await b.ready()
        assert await b.relay_once() == 3
        async with engine.connect() as conn:
            assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0
        assert await _published(settings, topic, b"c1") == [b"change-1", b"change-2", b"change-3"]
    finally:
        await a.aclose()
        await b.aclose()
        await producer_a.stop()
        await producer_b.stop()
        await engine_a.dispose()
        await engine_b.dispose()


async def _insert(engine: AsyncEngine, table: str, customer: str, payloads: list[bytes]) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(f"INSERT INTO {table} (customer_id, payload) VALUES (:c, :p)"),
            [{"c": customer, "p": p} for p in payloads],
        )


async def _published(settings: CommonSettings, topic: str, key: bytes) -> list[bytes]:
    """What the topic holds under ``key``, in its order."""
    return [r.value for r in await read_all(settings, topic) if r.key == key]


def resting_relay(
    engine: AsyncEngine,
    producer: Producer,
    table: str,
    topic: str,
    vacuum_every: int = VACUUM_EVERY,
) -> OutboxRelay:
    """A relay whose own loop rests an hour between passes: only a hand-over publishes."""
    return OutboxRelay(
        engine=engine,
        producer=producer,
        table=table,
        topic=topic,
        lock_key=secrets.randbelow(2**31),
        idle_seconds=3600,
        vacuum_every=vacuum_every,
    )


async def test_rows_a_batch_wrote_leave_when_it_commits_not_after_the_idle_pause(
    settings: CommonSettings, engine: AsyncEngine, outbox: tuple[str, str]
) -> None:
    """The consumer hands a batch's rows over as soon as the batch commits: the relay's own
    loop, resting for an hour and never nudged, is not what publishes them; and rows written
    while a handed-over pass is still being acknowledged follow it, in their order, once."""
    table, topic = outbox
    producer = await start_producer(settings)
    relay = resting_relay(engine, producer, table, topic)
    loop = asyncio.create_task(relay.run())
    try:
        while not await relay.ready():  # the loop's first pass found nothing; it rests now
            await asyncio.sleep(0.05)
        await _insert(engine, table, "c1", [b"change-1", b"change-2"])
        await relay.publish_now()
        await _insert(engine, table, "c1", [b"change-3"])
        await relay.publish_now()  # a pass is still under way: it follows that pass
        await relay.settled()
        await relay.publish_now()
        await relay.settled()

        assert await _published(settings, topic, b"c1") == [b"change-1", b"change-2", b"change-3"]
        async with engine.connect() as conn:
            assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0
    finally:
        relay.stop()
        await loop
        await producer.stop()


async def test_a_hand_over_that_fails_keeps_the_rows_for_the_next_pass(
    settings: CommonSettings, engine: AsyncEngine, outbox: tuple[str, str]
) -> None:
    table, topic = outbox
    producer = await start_producer(settings)
    relay = resting_relay(engine, producer, table, topic)
    try:
        assert await relay.ready()
        await _insert(engine, table, "c2", [b"change-1", b"change-2"])
        broken = producer.current
        await broken.stop()
        await relay.publish_now()  # the consumer's batch is durable: nothing raised to it
        await relay.settled()
        async with engine.connect() as conn:
            assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) == 2

        # The failed hand-over renewed the producer (the cluster answers); the next pass,
        # of a leader again, publishes the rows in their order.
        assert producer.current is not broken
        assert await relay.ready()
        assert await relay.relay_once() == 2
        assert await _published(settings, topic, b"c2") == [b"change-1", b"change-2"]
    finally:
        await relay.aclose()
        await producer.stop()


async def _read_cost(engine: AsyncEngine, table: str) -> int:
    """Buffers the relay's read of the oldest rows touches (the server's own count)."""
    async with engine.connect() as conn:
        plan = await conn.scalar(
            text(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                f"SELECT id, customer_id, payload FROM {table} ORDER BY id LIMIT 2000"
            )
        )
    top = plan[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


@pytest.mark.parametrize("vacuum_every", [400, 10**9], ids=["vacuumed", "never"])
async def test_the_leader_vacuums_its_table_so_a_pass_does_not_step_over_old_rows(
    settings: CommonSettings, engine: AsyncEngine, outbox: tuple[str, str], vacuum_every: int
) -> None:
    """Every pass reads the oldest rows by id; without a vacuum between them it would step
    over the index entry of every row deleted since the last one (autovacuum looks once a
    minute). With the relay vacuuming every ``vacuum_every`` deleted rows, the read of the
    emptied table costs the same after 4,000 rows as after 400; the same relay never
    vacuuming shows what that saves: the read grows with every row it deleted."""
    table, topic = outbox
    producer = await start_producer(settings)
    relay = resting_relay(engine, producer, table, topic, vacuum_every)
    try:
        assert await relay.ready()
        costs = {}
        for n in range(20):
            await _insert(engine, table, f"c{n}", [b"change-%d" % i for i in range(200)])
            assert await relay.relay_once() == 200
            if n in (1, 19):
                costs[relay.published] = await _read_cost(engine, table)
        assert relay.published == 4000
        if vacuum_every == 400:  # one vacuum every two passes
            assert relay.vacuums == 10
            assert costs[4000] <= costs[400] + 1, costs
        else:
            assert relay.vacuums == 0
            assert costs[4000] > 3 * costs[400], costs
        # Publishing goes on after a vacuum: the next rows leave in their order.
        await _insert(engine, table, "last", [b"change-1", b"change-2"])
        assert await relay.relay_once() == 2
        assert await _published(settings, topic, b"last") == [b"change-1", b"change-2"]
    finally:
        await relay.aclose()
        await producer.stop()
