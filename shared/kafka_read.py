"""Reading a topic's history: from its start (or an instant) up to its end as it stood when the
reading began, outside any consumer group.

The backtest reads the recorded changes this way, the rebuild the events, and the dead-letter
tools the DLQ. Records appended while the reading runs are left for the next one, so a
reading always ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

Batch = list[ConsumerRecord[bytes, bytes]]


async def partitions_of(bootstrap_servers: str | list[str], topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, as the cluster describes them (none: no such topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = [d for d in described if d["topic"] == topic and d["error_code"] == 0]
    return [TopicPartition(topic, p["partition"]) for d in found for p in d["partitions"]]


async def end_offsets(bootstrap_servers: str | list[str], topic: str) -> dict[TopicPartition, int]:
    """Where each partition of ``topic`` ends now (empty when there is no such topic)."""
    partitions = await partitions_of(bootstrap_servers, topic)
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def read_until_end(
    bootstrap_servers: str | list[str],
    topic: str,
    *,
    since: datetime | None = None,
    until: Mapping[TopicPartition, int] | None = None,
    max_records: int = 5000,
) -> AsyncIterator[Batch]:
    """The records of ``topic`` in batches, each partition in order, from its start (from the
    first record at or after ``since``) up to its end now (or the offsets ``until``). Nothing
    when the topic does not exist."""
    partitions = await partitions_of(bootstrap_servers, topic)
    if not partitions:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        # Every offset is known before the partitions are assigned: once assigned, the consumer
        # starts fetching, and a position moved under a fetch in flight can skip records.
        end = dict(until) if until is not None else await consumer.end_offsets(partitions)
        if since is None:
            start = dict(await consumer.beginning_offsets(partitions))
        else:
            found = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in partitions}
            )
            # None: nothing on this partition since then.
            start = {tp: at.offset for tp, at in found.items() if at is not None}
        consumer.assign(sorted(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        pending = {tp for tp, offset in start.items() if offset < end.get(tp, 0)}
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=1000, max_records=max_records)
            batch = [r for tp, records in fetched.items() for r in records if r.offset < end[tp]]
            if batch:
                yield batch
            # Checked for every partition, fetched or not: a partition may end in records that
            # are never returned (transaction markers, compacted gaps).
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
