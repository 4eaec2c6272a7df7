"""The outbox relay against the real broker and database: only the leader publishes, and a
leader whose pass failed hands over at once, its rows published by the next in their order."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine
from shared.kafka import PublishError, start_producer
from shared.outbox import OutboxRelay
from shared.settings import CommonSettings
from tests.support.kafka_io import read_all

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
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
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
        published = [r.value for r in await read_all(settings, topic) if r.key == b"c1"]
        assert published == [b"change-1", b"change-2", b"change-3"]
    finally:
        await a.aclose()
        await b.aclose()
        await producer_a.stop()
        await producer_b.stop()
        await engine_a.dispose()
        await engine_b.dispose()
