"""The recorded history a backtest replays: the change stream itself
(``crm.customer-changes.v1``, kept 35 days), read from an instant to the end it has now."""

from __future__ import annotations

from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.outreach.core.changes import read_change
from shared.changes import Change


async def recorded_changes(bootstrap: str, topic: str, since: datetime) -> list[Change]:
    """Every change on ``topic`` from ``since`` to the end it has now, oldest first."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[Change] = []
    try:
        # No subscription, so no metadata yet: ask for the cluster's.
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return out
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times(
            {tp: int(since.timestamp() * 1000) for tp in partitions}
        )
        pending = set()
        for tp in partitions:
            found = starts.get(tp)
            if found is None:
                continue  # nothing on this partition since then
            consumer.seek(tp, found.offset)
            if found.offset < end[tp]:
                pending.add(tp)
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=2000, max_records=5000)
            if not batches:
                break
            for tp, records in batches.items():
                out.extend(read_change(r.value) for r in records if r.offset < end[tp])
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    out.sort(key=lambda c: c.at)  # stable: one customer's changes keep their order
    return out
