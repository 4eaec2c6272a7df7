"""The dead-letter topic end to end: poison records from the real scoring and outreach
consumers land in it, each under a key of its own that names their original key; `tend dlq
replay` re-publishes them once the cause is fixed, exactly once; a customer's several poison
records all wait and all replay; an erased customer's records are tombstoned one by one and
neither listed nor replayed; and an old, uncompacted DLQ is brought to the compacted
configuration."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.settings import OutreachSettings
from services.scoring.core.state import CustomerState
from shared.consumer import BatchConsumer, Message
from shared.dlq import (
    GROUP,
    REPLAYED,
    SOURCE_KEY,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    SYNTHETIC_KEY,
    DeadLetter,
    erase_from_dlq,
    read_dlq,
    replay_dead_letters,
)
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import DLQ, Topics, delete_topics, sync_topics
from tests.integration.conftest import wait_applied
from tests.support.kafka_io import read_all
from tests.support.pipeline import consumers_assigned, post_events, until
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def stack(settings: CommonSettings) -> AsyncIterator[Stack]:
    """Ingest, scoring and outreach with a DLQ of the test's own."""
    async with isolated_stack(settings, outreach=OutreachSettings()) as s:
        await consumers_assigned(s)
        yield s


async def _dead_letters(settings: CommonSettings, count: int) -> list[DeadLetter]:
    """The DLQ's records, oldest first, once there are at least ``count``."""
    topics = Topics.from_settings(settings)

    async def enough() -> list[DeadLetter] | None:
        letters = (await read_dlq(settings, topics)).letters
        return letters if len(letters) >= count else None

    found: list[DeadLetter] = await until(enough, 60, f"{count} records in the DLQ")
    return found


async def _tend(settings: CommonSettings, *args: str) -> str:
    """`python -m cli.main ARGS` as an operator runs it; its standard output."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "TEND_TOPIC_PREFIX": settings.topic_prefix,
    }
    # Not subprocess.run: the services under test share this event loop.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _end_offsets(settings: CommonSettings, topics: list[str]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    partitions = [
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    ]
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return ends
    finally:
        await consumer.stop()


def _bad_event(cid: str, n: int = 1) -> bytes:
    """An event of a schema version no scoring knows: poison for good."""
    return orjson.dumps(
        {
            "event_id": f"bad-{cid}" + (f"-{n}" if n > 1 else ""),
            "event_type": "order.paid",
            "customer_id": cid,
            "schema_version": 99,
        }
    )


def _visit(cid: str) -> dict[str, object]:
    return {
        "type": "visit",
        "visit_id": f"{cid}-v",
        "customer_id": cid,
        "channel": "web",
        "occurred_at": datetime.now(UTC).isoformat(),
    }


async def _refuse_inbox_rows_of(engine: AsyncEngine, cid: str) -> None:
    """A fault the test controls: scoring's transaction fails for this customer's events
    (a constraint violation, so the consumer sees a poison record, not an outage)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION scoring.test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by the test' "
                "USING ERRCODE = 'check_violation'; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER test_refuse BEFORE INSERT ON scoring.inbox FOR EACH ROW "
                f"WHEN (NEW.customer_id = '{cid}') EXECUTE FUNCTION scoring.test_refuse()"
            )
        )


async def _fix(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("DROP TRIGGER test_refuse ON scoring.inbox"))
        await conn.execute(text("DROP FUNCTION scoring.test_refuse()"))


async def test_poison_records_from_events_and_changes_reach_the_dlq_under_keys_of_their_own(
    stack: Stack,
) -> None:
    settings = stack.settings
    topics = Topics.from_settings(settings)
    prefix = settings.topic_prefix
    event_cid, change_cid = f"e-{uuid.uuid4().hex[:8]}", f"c-{uuid.uuid4().hex[:8]}"
    bad_change = orjson.dumps({"change_id": f"bad-{event_cid}", "customer_id": change_cid})
    producer = await start_producer(settings)
    try:
        sent_event = await producer.send_and_wait(
            topics.events, _bad_event(event_cid), key=event_cid.encode(), headers=[("trace", b"t1")]
        )
        sent_change = await producer.send_and_wait(
            topics.changes, bad_change, key=change_cid.encode()
        )
        sent_unkeyed = await producer.send_and_wait(topics.changes, b"not json", key=None)
    finally:
        await producer.stop()

    letters = await _dead_letters(settings, 3)
    by_value = {d.value: d for d in letters}
    assert set(by_value) == {_bad_event(event_cid), bad_change, b"not json"}

    from_events = by_value[_bad_event(event_cid)]
    assert from_events.key == (
        f"{event_cid}|{topics.events}:{sent_event.partition}:{sent_event.offset}".encode()
    )
    assert from_events.header(SOURCE_KEY) == event_cid
    assert from_events.original_key == event_cid.encode()
    assert from_events.header("trace") == "t1"  # the record's own headers travel with it
    assert from_events.header(SOURCE_TOPIC) == topics.events
    assert from_events.header(SOURCE_PARTITION) == str(sent_event.partition)
    assert from_events.header(SOURCE_OFFSET) == str(sent_event.offset)
    assert from_events.header(GROUP) == f"{prefix}scoring"
    # Where validation failed and how, not what the record said there.
    assert "schema_version [literal_error]" in (from_events.header("dlq.error") or "")

    from_changes = by_value[bad_change]
    assert from_changes.original_key == change_cid.encode()
    assert from_changes.key.startswith(change_cid.encode() + b"|")
    assert from_changes.source == f"{topics.changes}/{sent_change.partition}/{sent_change.offset}"
    assert from_changes.header(GROUP) == f"{prefix}outreach"
    assert "no card" in (from_changes.header("dlq.error") or "")

    # No key: a compacted topic refuses a null key, so the DLQ key names the source record.
    unkeyed = by_value[b"not json"]
    assert (
        unkeyed.key == f"{topics.changes}:{sent_unkeyed.partition}:{sent_unkeyed.offset}".encode()
    )
    assert unkeyed.header(SYNTHETIC_KEY) == "true"
    assert unkeyed.header(SOURCE_KEY) is None
    assert unkeyed.original_key is None
    assert all(d.state == "pending" for d in letters)

    listed = await _tend(settings, "dlq", "list", "--source-topic", "changes")
    assert change_cid in listed
    assert unkeyed.source in listed
    assert event_cid not in listed
    assert "2 records (2 pending, 0 replayed)" in listed
    everything = await _tend(settings, "dlq", "list")
    assert event_cid in everything and f"{prefix}scoring" in everything
    assert "3 records (3 pending, 0 replayed)" in everything


async def test_a_replay_after_the_fix_applies_the_record_once_and_a_second_changes_nothing(
    stack: Stack,
) -> None:
    settings, engine = stack.settings, stack.engine
    topics = Topics.from_settings(settings)
    cid = f"r-{uuid.uuid4().hex[:8]}"
    await _refuse_inbox_rows_of(engine, cid)
    [event_id] = await post_events(stack, [_visit(cid)])
    [first] = await _dead_letters(settings, 1)
    assert first.original_key == cid.encode()
    # A database error is named by its classes and SQLSTATE: PostgreSQL's message may quote
    # the values of the row.
    assert first.header("dlq.error") == "IntegrityError (CheckViolationError): SQLSTATE 23514"

    # Replayed before the fix, the record fails again and comes back as a new dead letter
    # that says which one it replays.
    out = await _tend(settings, "dlq", "replay")
    assert out.startswith("replayed 1, skipped 0"), out
    replayed_first, second = await _dead_letters(settings, 2)
    assert (replayed_first.offset, replayed_first.state) == (first.offset, "replayed")
    assert second.state == "pending"
    assert second.header(REPLAYED) == f"{topics.dlq}/{first.partition}/{first.offset}"
    assert second.value == first.value and second.original_key == first.original_key
    assert second.key != first.key  # two dead letters, neither compacted away

    # After the fix, the next replay takes only the new dead letter, and scoring applies it.
    await _fix(engine)
    out = await _tend(settings, "dlq", "replay", "--source-topic", "events", "--since", "1h")
    assert out.startswith("replayed 1, skipped 1 (1 already replayed, 0 erased"), out
    await wait_applied(engine, [event_id])

    async def one_change() -> bool:
        records = await read_all(settings.kafka_bootstrap_servers, topics.changes)
        return len([r for r in records if r.key == cid.encode()]) == 1

    await until(one_change, 30, "the change of the replayed event")

    # A second replay publishes nothing, so nothing anywhere can change.
    before = await _end_offsets(settings, [topics.events, topics.dlq, topics.changes])
    out = await _tend(settings, "dlq", "replay")
    assert out.startswith("replayed 0, skipped 2 (2 already replayed"), out
    producer = await start_producer(settings)
    try:
        report = await replay_dead_letters(settings, topics, producer)
    finally:
        await producer.stop()
    assert (report.replayed, report.already_replayed) == (0, 2)
    assert await _end_offsets(settings, [topics.events, topics.dlq, topics.changes]) == before

    # The original and two replays, byte for byte, and the customer's event applied once.
    copies = [
        r
        for r in await read_all(settings.kafka_bootstrap_servers, topics.events)
        if r.key == cid.encode()
    ]
    assert len(copies) == 3 and len({r.value for r in copies}) == 1
    assert [dict(r.headers).get(REPLAYED) for r in copies[1:]] == [
        f"{topics.dlq}/{d.partition}/{d.offset}".encode() for d in (first, second)
    ]
    async with engine.connect() as conn:
        state = await conn.scalar(
            text("SELECT state FROM scoring.customers WHERE customer_id = :c"), {"c": cid}
        )
    assert len(CustomerState.from_json(state).visits) == 1
    assert await one_change()


async def test_an_erased_customer_is_neither_listed_nor_replayed(stack: Stack) -> None:
    settings = stack.settings
    topics = Topics.from_settings(settings)
    erased, kept = f"x-{uuid.uuid4().hex[:8]}", f"k-{uuid.uuid4().hex[:8]}"
    producer = await start_producer(settings)
    try:
        for cid in (erased, kept):
            await producer.send_and_wait(topics.events, _bad_event(cid), key=cid.encode())
        await _dead_letters(settings, 2)

        await erase_from_dlq(producer, topics, erased)

        listed = await _tend(settings, "dlq", "list")
        assert kept in listed and erased not in listed
        assert "1 records (1 pending, 0 replayed); 1 erased, not shown" in listed
        out = await _tend(settings, "dlq", "replay", "--dry-run")
        assert out.startswith("would replay 1, skipped 1 (0 already replayed, 1 erased"), out

        report = await replay_dead_letters(settings, topics, producer)
        assert (report.replayed, report.erased) == (1, 1)
        replayed_keys = {
            r.key
            for r in await read_all(settings.kafka_bootstrap_servers, topics.events)
            if REPLAYED in dict(r.headers)
        }
        assert replayed_keys == {kept.encode()}

        # Erasure covers what was there: a poison record that arrives later is listed.
        await producer.send_and_wait(topics.events, _bad_event(erased), key=erased.encode())
        letters = await _dead_letters(settings, 4)  # two erased or replayed, two new
        assert [d.state for d in letters if d.original_key == erased.encode()] == [
            "erased",
            "pending",
        ]
    finally:
        await producer.stop()


async def test_a_customers_poison_records_all_wait_all_replay_and_are_all_erased(
    stack: Stack,
) -> None:
    settings = stack.settings
    topics = Topics.from_settings(settings)
    cid = f"m-{uuid.uuid4().hex[:8]}"
    bad = [_bad_event(cid, 1), _bad_event(cid, 2)]
    producer = await start_producer(settings)
    try:
        for value in bad:
            await producer.send_and_wait(topics.events, value, key=cid.encode())
        letters = await _dead_letters(settings, 2)
        # Two keys: compaction, which keeps the latest record per key, keeps both.
        assert [d.original_key for d in letters] == [cid.encode()] * 2
        assert len({d.key for d in letters}) == 2
        assert [d.value for d in letters] == bad

        report = await replay_dead_letters(settings, topics, producer)
        assert report.replayed == 2
        copies = [
            r
            for r in await read_all(settings.kafka_bootstrap_servers, topics.events)
            if REPLAYED in dict(r.headers)
        ]
        assert sorted((r.key, r.value) for r in copies) == [(cid.encode(), v) for v in bad]

        # Still poison: both come back as new dead letters, four of the customer's in all.
        letters = await _dead_letters(settings, 4)
        assert [d.state for d in letters] == ["replayed", "replayed", "pending", "pending"]

        await erase_from_dlq(producer, topics, cid)

        records = await read_all(settings.kafka_bootstrap_servers, topics.dlq)
        tombstones = [r for r in records if r.value is None]
        # One tombstone per dead letter, after it in its partition, where compaction sees both.
        assert sorted((t.partition, t.key) for t in tombstones) == sorted(
            (d.partition, d.key) for d in letters
        )
        for d in letters:
            [t] = [t for t in tombstones if t.key == d.key]
            assert t.offset > d.offset
        # The replay markers name DLQ coordinates only: nothing of the customer to erase.
        markers = [r for r in records if r.value == b""]
        assert len(markers) == 2
        assert all(cid.encode() not in r.key + b"".join(v for _, v in r.headers) for r in markers)
        snapshot = await read_dlq(settings, topics)
        assert [d.state for d in snapshot.letters] == ["erased"] * 4
        assert "0 records (0 pending, 0 replayed); 4 erased, not shown" in await _tend(
            settings, "dlq", "list"
        )

        # Erasing again has nothing left to do.
        before = await _end_offsets(settings, [topics.dlq])
        await erase_from_dlq(producer, topics, cid)
        assert await _end_offsets(settings, [topics.dlq]) == before
    finally:
        await producer.stop()


async def test_compaction_keeps_every_dead_letter_and_removes_the_erased_ones(
    settings: CommonSettings,
) -> None:
    """On a DLQ that rolls and compacts its segments within seconds: two poison records of one
    customer both outlive a compaction that removes an overwritten record, and both are gone
    after the next one once the customer is erased."""
    run = f"{settings.topic_prefix}compact{uuid.uuid4().hex[:6]}"
    source, dlq = f"{run}.source", f"{run}.dlq"
    fast = {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(86_400_000),
        "segment.ms": "100",
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100",
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source, 1, 1), NewTopic(dlq, 1, 1, topic_configs=fast)])
    finally:
        await admin.close()
    topics = replace(Topics.from_settings(settings), dlq=dlq)
    cid = f"z-{uuid.uuid4().hex[:8]}"
    producer = await start_producer(settings)

    async def compacted(gone: bytes) -> list[bytes] | None:
        """The DLQ's values once ``gone`` is no longer among them; a write each time, since a
        segment rolls (and so can be compacted) on the first write after segment.ms."""
        await publish_many(producer, [Record(dlq, b"filler", b"filler")], timeout=10)
        values = [r.value for r in await read_all(settings.kafka_bootstrap_servers, dlq)]
        return None if gone in values else values

    try:
        # The control: a record overwritten under its key, which compaction must remove.
        await publish_many(
            producer,
            [Record(dlq, b"control", b"control-1"), Record(dlq, b"control", b"control-2")],
            timeout=10,
        )
        await publish_many(
            producer,
            [Record(source, cid.encode(), b"poison-1"), Record(source, cid.encode(), b"poison-2")],
            timeout=10,
        )

        async def refuse(records: Sequence[Message]) -> None:
            raise ValueError("poison")

        consumer = BatchConsumer(
            settings=settings,
            topics=[source],
            group_id=f"{run}.group",
            handler=refuse,
            dlq_topic=dlq,
            dlq_producer=producer,
        )
        task = asyncio.create_task(consumer.run())
        async with asyncio.timeout(60):
            while consumer.dead_lettered < 2:
                await asyncio.sleep(0.1)
        consumer.stop()
        await task

        values = await until(lambda: compacted(b"control-1"), 90, "a compaction of the DLQ")
        assert b"poison-1" in values and b"poison-2" in values

        await erase_from_dlq(producer, topics, cid)
        values = await until(lambda: compacted(b"poison-1"), 90, "a compaction after erasure")
        assert b"poison-2" not in values and b"control-2" in values
    finally:
        await producer.stop()


async def _topic_overrides(settings: CommonSettings, name: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        entries = response.resources[0][4]
        return {e[0]: e[1] for e in entries if e[3] == 1}  # set on the topic itself
    finally:
        await admin.close()


async def test_tend_topics_compacts_a_dlq_created_before_and_keeps_other_overrides(
    settings: CommonSettings,
) -> None:
    own = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}old{uuid.uuid4().hex[:6]}.",
            "topic_partitions": 1,
        }
    )
    dlq = Topics.from_settings(own).dlq
    admin = AIOKafkaAdminClient(bootstrap_servers=own.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    dlq,
                    num_partitions=1,
                    replication_factor=1,
                    topic_configs={
                        "retention.ms": str(30 * 86_400_000),
                        "max.message.bytes": "2000000",
                    },
                )
            ]
        )

        async def listed() -> bool:
            return dlq in await admin.list_topics()

        await until(listed, 30, f"{dlq} created")
    finally:
        await admin.close()
    try:
        done = await sync_topics(own)
        assert dlq not in done.created
        assert "cleanup.policy" in done.reconfigured[dlq]
        overrides = await _topic_overrides(own, dlq)
        assert set(overrides["cleanup.policy"].split(",")) == {"compact", "delete"}
        assert overrides["retention.ms"] == str(30 * 86_400_000)
        assert overrides["segment.ms"] == "3600000"
        assert overrides["max.message.bytes"] == "2000000"  # an operator's, left alone
        assert (await sync_topics(own)).reconfigured == {}
        assert DLQ in dlq
    finally:
        await delete_topics(own)
