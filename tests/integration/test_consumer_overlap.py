"""Overlapped batches (scoring's consumer): the next batch's records that touch nothing of the
batch being written are handled at once, those that do wait until it is durable, and offsets
are committed only for batches durable with every batch before them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.consumer import BatchConsumer, Message
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import create_topic

pytestmark = pytest.mark.integration


def _key(record: Message) -> Iterator[bytes | None]:
    yield record.key


async def _committed(settings: CommonSettings, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    found = offsets.get(TopicPartition(topic, 0))
    return found.offset if found is not None and found.offset >= 0 else 0


async def test_a_batch_overlaps_the_one_before_only_for_customers_that_one_does_not_touch(
    settings: CommonSettings,
) -> None:
    topic = f"{settings.topic_prefix}overlap-{uuid.uuid4().hex[:6]}"
    await create_topic(settings, topic, partitions=1)
    # One partition and batches of four: the first batch is a1..a4, the second b1..b3 and a
    # second event of a1's.
    first = [(f"a{n}".encode(), f"a{n}-1".encode()) for n in range(1, 5)]
    second = [(b"b1", b"b1-1"), (b"a1", b"a1-2"), (b"b2", b"b2-1"), (b"b3", b"b3-1")]
    producer = await start_producer(settings)
    release = asyncio.Event()
    calls: list[tuple[list[bytes], float, float]] = []  # values, started, returned

    async def handler(records: Sequence[Message]) -> None:
        started = time.monotonic()
        values = [r.value for r in records]
        if b"a1-1" in values:
            await release.wait()  # the first batch's transaction, still being written
        calls.append((values, started, time.monotonic()))

    group = f"{settings.topic_prefix}overlap"
    consumer = BatchConsumer(
        settings=settings,
        topics=[topic],
        group_id=group,
        handler=handler,
        dlq_topic=Topics.from_settings(settings).dlq,
        dlq_producer=producer,
        max_records=4,
        overlap_by=_key,
    )
    try:
        await publish_many(producer, [Record(topic, k, v) for k, v in first + second], timeout=10)
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(60):
            while not any(b"b1-1" in values for values, _, _ in calls):
                await asyncio.sleep(0.05)
        # b1..b3 were handled while the first batch is still held; a1's second event was not.
        [(free, _, _)] = calls
        assert free == [b"b1-1", b"b2-1", b"b3-1"]
        await asyncio.sleep(1.0)
        assert len(calls) == 1
        # Nothing is committed: the batch before is not durable, and its offsets come first.
        assert await _committed(settings, group, topic) == 0

        release.set()
        async with asyncio.timeout(60):
            while await _committed(settings, group, topic) < 8:
                await asyncio.sleep(0.1)
        consumer.stop()
        await task
    finally:
        release.set()
        await producer.stop()

    by_value = {v: (started, returned) for values, started, returned in calls for v in values}
    assert sorted(by_value) == sorted(v for _, v in first + second)
    assert len(calls) == 3
    # a1's second event was handed over only once the batch with its first had returned.
    assert by_value[b"a1-2"][0] >= by_value[b"a1-1"][1]
    assert consumer.processed == 8
