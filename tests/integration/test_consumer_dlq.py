"""The shared batch consumer: poison records go to the DLQ with their headers, the rest go on,
and offsets are committed only for work the handler finished."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.consumer import BatchConsumer, Message
from shared.events import Envelope
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


async def _topic(settings: CommonSettings, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()


async def test_a_poison_record_goes_to_the_dlq_with_its_headers_and_the_next_is_processed(
    settings: CommonSettings,
) -> None:
    source = f"{settings.topic_prefix}consumer-test-{uuid.uuid4().hex[:6]}"
    await _topic(settings, source)
    dlq = Topics.from_settings(settings).dlq
    producer = await start_producer(settings)
    marker = uuid.uuid4().hex.encode()
    try:
        # Same key: same partition, so "after" really comes after the poison record.
        await publish_many(
            producer,
            [
                Record(source, b"c1", b"before-" + marker),
                Record(source, b"c1", b"poison-" + marker, (("event_type", b"order.paid"),)),
                Record(source, b"c1", b"after-" + marker),
            ],
            timeout=10,
        )

        handled: list[bytes] = []

        async def handler(records: Sequence[Message]) -> None:
            if any(r.value.startswith(b"poison") for r in records):
                raise ValueError("amount is not a number")
            handled.extend(r.value for r in records)

        group = f"{settings.topic_prefix}dlq-test"
        consumer = BatchConsumer(
            settings=settings,
            topics=[source],
            group_id=group,
            handler=handler,
            dlq_topic=dlq,
            dlq_producer=producer,
        )
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(60):
            while len(handled) < 2:
                await asyncio.sleep(0.1)
        consumer.stop()
        await task
    finally:
        await producer.stop()

    assert handled == [b"before-" + marker, b"after-" + marker]
    [dead] = [
        r
        for r in await read_all(settings.kafka_bootstrap_servers, dlq)
        if r.value == b"poison-" + marker
    ]
    headers = dict(dead.headers)
    # A key of its own, so compaction keeps it whatever else the customer has in the DLQ.
    assert dead.key == f"c1|{source}:{int(headers['dlq.source.partition'])}:1".encode()
    assert headers["dlq.source.key"] == b"c1"
    assert headers["event_type"] == b"order.paid"
    assert headers["dlq.source.topic"] == source.encode()
    assert headers["dlq.source.offset"] == b"1"
    assert headers["dlq.source.partition"].isdigit()
    assert headers["dlq.consumer.group"] == group.encode()
    assert headers["dlq.error"] == b"ValueError: amount is not a number"

    # Everything was committed: a new member of the group has nothing left to read.
    again: list[bytes] = []

    async def record_again(records: Sequence[Message]) -> None:
        again.extend(r.value for r in records)

    producer = await start_producer(settings)
    try:
        second = BatchConsumer(
            settings=settings,
            topics=[source],
            group_id=group,
            handler=record_again,
            dlq_topic=dlq,
            dlq_producer=producer,
        )
        task = asyncio.create_task(second.run())
        await asyncio.sleep(5)
        second.stop()
        await task
    finally:
        await producer.stop()
    assert again == []


async def test_the_error_header_says_what_failed_without_quoting_the_record(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    source = f"{settings.topic_prefix}consumer-scrub-{uuid.uuid4().hex[:6]}"
    await _topic(settings, source)
    dlq = Topics.from_settings(settings).dlq
    email = f"ada.{uuid.uuid4().hex[:8]}@example.org"
    producer = await start_producer(settings)
    try:
        await publish_many(
            producer,
            [
                # pydantic quotes the input it could not parse...
                Record(source, b"c1", b'{"customer_id": "' + email.encode() + b'"'),
                # ... and PostgreSQL the value it could not convert.
                Record(source, b"c2", email.encode()),
            ],
            timeout=10,
        )

        async def handler(records: Sequence[Message]) -> None:
            for r in records:
                if r.key == b"c1":
                    Envelope.from_json(r.value)
                else:
                    async with engine.connect() as conn:
                        await conn.execute(
                            text("SELECT CAST(CAST(:v AS text) AS int)"), {"v": r.value.decode()}
                        )

        consumer = BatchConsumer(
            settings=settings,
            topics=[source],
            group_id=f"{settings.topic_prefix}scrub-test",
            handler=handler,
            dlq_topic=dlq,
            dlq_producer=producer,
        )
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(60):
            while consumer.dead_lettered < 2:
                await asyncio.sleep(0.1)
        consumer.stop()
        await task
    finally:
        await producer.stop()

    errors = {
        dict(r.headers)["dlq.source.key"]: dict(r.headers)["dlq.error"].decode()
        for r in await read_all(settings.kafka_bootstrap_servers, dlq)
        if dict(r.headers).get("dlq.source.topic") == source.encode()
    }
    assert errors == {
        b"c1": "ValidationError in Envelope: (root) [json_invalid]",
        b"c2": "DBAPIError (Error, InvalidTextRepresentationError): SQLSTATE 22P02",
    }


async def test_a_transient_failure_is_retried_not_dead_lettered(settings: CommonSettings) -> None:
    source = f"{settings.topic_prefix}consumer-retry-{uuid.uuid4().hex[:6]}"
    await _topic(settings, source)
    producer = await start_producer(settings)
    attempts = 0
    handled: list[bytes] = []

    async def flaky(records: Sequence[Message]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("database restarting")
        handled.extend(r.value for r in records)

    try:
        await publish_many(producer, [Record(source, b"k", b"only")], timeout=10)
        consumer = BatchConsumer(
            settings=settings,
            topics=[source],
            group_id=f"{settings.topic_prefix}retry-test",
            handler=flaky,
            dlq_topic=Topics.from_settings(settings).dlq,
            dlq_producer=producer,
        )
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(60):
            while not handled:
                await asyncio.sleep(0.1)
        consumer.stop()
        await task
    finally:
        await producer.stop()
    assert handled == [b"only"]
    assert attempts == 3
    assert consumer.dead_lettered == 0
