"""Reading topics back in tests: the real broker, no mocks."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord


async def read_all(bootstrap: str, topic: str, timeout_ms: int = 10_000) -> list[ConsumerRecord]:
    """Every record now on ``topic``, from the beginning to the current end of each partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        # No subscription, so no metadata yet: ask for the cluster's.
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        pending = {tp for tp in partitions if end[tp] > 0}
        while pending:
            batch = await consumer.getmany(timeout_ms=timeout_ms)
            if not batch:
                raise TimeoutError(f"{topic}: no records within {timeout_ms} ms; missing {pending}")
            for tp, recs in batch.items():
                records.extend(recs)
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
        return records
    finally:
        await consumer.stop()
