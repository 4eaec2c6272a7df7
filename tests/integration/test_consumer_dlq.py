"""The shared batch consumer: poison records go to the DLQ with their headers, the rest go on,
and offsets are committed only for work the handler finished."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.consumer import BatchConsumer, Message
from shared.db import answers_promptly
from shared.events import Envelope
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import create_topic, read_all

pytestmark = pytest.mark.integration


async def _consume_until(
    settings: CommonSettings,
    source: str,
    group: str,
    handler: Callable[[Sequence[Message]], Awaitable[None]],
    producer: Any,
    done: Callable[[], bool],
) -> BatchConsumer:
    """Run a consumer of ``source`` in ``group`` until ``done()``, then stop it."""
    consumer = BatchConsumer(
        settings=settings,
        topics=[source],
        group_id=f"{settings.topic_prefix}{group}",
        handler=handler,
        dlq_topic=Topics.from_settings(settings).dlq,
        dlq_producer=producer,
    )
    task = asyncio.create_task(consumer.run())
    async with asyncio.timeout(60):
        while not done():
            await asyncio.sleep(0.1)
    consumer.stop()
    await task
    return consumer


async def test_a_poison_record_goes_to_the_dlq_with_its_headers_and_the_next_is_processed(
    settings: CommonSettings,
) -> None:
    source = f"{settings.topic_prefix}consumer-test-{uuid.uuid4().hex[:6]}"
    await create_topic(settings, source)
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
    await create_topic(settings, source)
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
    await create_topic(settings, source)
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
        consumer = await _consume_until(
            settings, source, "retry-test", flaky, producer, lambda: bool(handled)
        )
    finally:
        await producer.stop()
    assert handled == [b"only"]
    assert attempts == 3
    assert consumer.dead_lettered == 0


def _statement_timeout_handler(
    engine: AsyncEngine, handled: list[bytes], *, slow: Callable[[bytes], bool]
) -> Callable[[Sequence[Message]], Awaitable[None]]:
    """A consumer's handler doing its batch in one transaction under a 200 ms statement
    timeout, where the database takes a second over each record ``slow`` picks."""

    async def handler(records: Sequence[Message]) -> None:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL statement_timeout = 200"))
            for r in records:
                await conn.execute(
                    text("SELECT pg_sleep(CASE WHEN :slow THEN 1 ELSE 0 END)"),
                    {"slow": slow(r.value)},
                )
        handled.extend(r.value for r in records)

    return handler


async def test_a_record_that_always_hits_the_statement_timeout_is_dead_lettered_alone(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    source = f"{settings.topic_prefix}consumer-slow-{uuid.uuid4().hex[:6]}"
    await create_topic(settings, source)
    dlq = Topics.from_settings(settings).dlq
    values = [f"r{i}".encode() for i in range(8)]
    values[5] = b"slow"
    handled: list[bytes] = []
    producer = await start_producer(settings)
    try:
        # One key: one partition, so the slow record sits among the others of its batch.
        await publish_many(producer, [Record(source, b"c1", v) for v in values], timeout=10)
        consumer = BatchConsumer(
            settings=settings,
            topics=[source],
            group_id=f"{settings.topic_prefix}slow-test",
            handler=_statement_timeout_handler(engine, handled, slow=lambda v: v == b"slow"),
            dlq_topic=dlq,
            dlq_producer=producer,
            probe=lambda: answers_promptly(engine, 1.0),
        )
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(20):
            while len(handled) < 7 or consumer.dead_lettered < 1:
                await asyncio.sleep(0.1)
        consumer.stop()
        await task
    finally:
        await producer.stop()

    assert handled == [v for v in values if v != b"slow"]
    [dead] = [
        r
        for r in await read_all(settings.kafka_bootstrap_servers, dlq)
        if dict(r.headers).get("dlq.source.topic") == source.encode()
    ]
    assert dead.value == b"slow"
    assert dict(dead.headers)["dlq.reason"] == b"statement_timeout"
    assert dict(dead.headers)["dlq.source.offset"] == b"5"


async def test_a_slow_database_dead_letters_nothing_and_the_batch_is_retried(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    source = f"{settings.topic_prefix}consumer-slowdb-{uuid.uuid4().hex[:6]}"
    await create_topic(settings, source)
    handled: list[bytes] = []
    attempts = 0
    probes = 0
    slow_handler = _statement_timeout_handler(engine, handled, slow=lambda v: True)

    async def handler(records: Sequence[Message]) -> None:
        nonlocal attempts
        attempts += 1
        await slow_handler(records)

    async def probe() -> bool:
        # The whole database is slow: even SELECT 1 takes a second.
        nonlocal probes
        probes += 1
        try:
            async with asyncio.timeout(0.5), engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(1)"))
        except TimeoutError:
            return False
        return True

    producer = await start_producer(settings)
    try:
        await publish_many(
            producer, [Record(source, b"c1", b"a"), Record(source, b"c1", b"b")], timeout=10
        )
        consumer = BatchConsumer(
            settings=settings,
            topics=[source],
            group_id=f"{settings.topic_prefix}slowdb-test",
            handler=handler,
            dlq_topic=Topics.from_settings(settings).dlq,
            dlq_producer=producer,
            probe=probe,
        )
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(20):
            while probes < 2:
                await asyncio.sleep(0.1)
        consumer.stop()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await producer.stop()

    assert attempts >= 4
    assert consumer.dead_lettered == 0
    assert consumer.processed == 0
    assert handled == []
    dlq = Topics.from_settings(settings).dlq
    assert not [
        r
        for r in await read_all(settings.kafka_bootstrap_servers, dlq)
        if dict(r.headers).get("dlq.source.topic") == source.encode()
    ]


async def test_a_batch_the_database_rolls_back_for_a_deadlock_is_retried_whole(
    settings: CommonSettings, engine: AsyncEngine
) -> None:
    source = f"{settings.topic_prefix}consumer-deadlock-{uuid.uuid4().hex[:6]}"
    await create_topic(settings, source)
    key = uuid.uuid4().int % 2**31
    batches: list[list[bytes]] = []
    attempts = 0

    async def rival(waiting: asyncio.Event) -> None:
        """Holds the second lock, then wants the first, which the handler holds."""
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k + 1)"), {"k": key})
            await waiting.wait()
            await asyncio.sleep(0.3)  # the handler waits first, so it is the one refused
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    async def handler(records: Sequence[Message]) -> None:
        nonlocal attempts
        attempts += 1
        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            if attempts == 1:
                waiting = asyncio.Event()
                other = asyncio.create_task(rival(waiting))
                await asyncio.sleep(0.3)  # the rival holds its lock
                waiting.set()
                try:
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k + 1)"), {"k": key})
                finally:
                    await asyncio.shield(other)
        batches.append([r.value for r in records])

    producer = await start_producer(settings)
    try:
        await publish_many(
            producer, [Record(source, b"c1", b"a"), Record(source, b"c1", b"b")], timeout=10
        )
        consumer = await _consume_until(
            settings, source, "deadlock-test", handler, producer, lambda: bool(batches)
        )
    finally:
        await producer.stop()
    # Refused once for the deadlock, then the same batch again: not split, nothing lost.
    assert attempts == 2
    assert batches == [[b"a", b"b"]]
    assert consumer.dead_lettered == 0
