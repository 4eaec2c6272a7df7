"""A recorded change stream of a test's (or a benchmark's) own, produced fast: changes
serialised from one template and published in big batches, stamped (record time and change
time) where the caller says, as scoring's relay would have published them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kafka_read import partitions_of
from shared.kafka_security import client_kwargs
from shared.settings import CommonSettings
from tests.support.kafka_io import kafka_settings

# A card as compact as a decision can use: consent, a time zone, a stage.
SMALL_CARD: dict[str, Any] = {
    "stage": "mature",
    "tier": "key",
    "profile": {
        "name": "N",
        "email": "n@example.com",
        "timezone": "Europe/Paris",
        "consent": {"email": True, "sms": False, "marketing": True},
    },
    "value": {"orders": 1},
}
BATCH = 20_000


def visit_change(n: int, customer: str, at: datetime, card: Mapping[str, Any]) -> bytes:
    """Change ``n``: a visit recorded for ``customer`` at ``at``, with ``card``."""
    stamp = at.isoformat()
    return orjson.dumps(
        {
            "change_id": f"hist-{n}",
            "customer_id": customer,
            "cause": "event",
            "at": stamp,
            "event": {
                "event_id": f"hist-ev-{n}",
                "event_type": "visit.recorded",
                "customer_id": customer,
                "occurred_at": stamp,
                "received_at": stamp,
                "source": "test",
                "data": {"visit_id": f"v-{n}", "channel": "web"},
            },
            "card": {**card, "customer_id": customer},
        }
    )


async def publish_visits(
    bootstrap: str,
    topic: str,
    *,
    changes: int,
    customers: int,
    start: datetime,
    end: datetime,
    card: Mapping[str, Any] = SMALL_CARD,
    first: int = 0,
) -> None:
    """Publish ``changes`` visit changes spread evenly over [``start``, ``end``) (change time
    and record time alike) among ``customers`` customers, in batches of futures."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024, acks=1
    )
    await producer.start()
    try:
        step = (end - start) / max(changes, 1)
        for low in range(0, changes, BATCH):
            futures = []
            for i in range(low, min(low + BATCH, changes)):
                n = first + i
                customer = f"hist-{n % customers:06d}"
                at = start + step * i
                futures.append(
                    await producer.send(
                        topic,
                        visit_change(n, customer, at, card),
                        key=customer.encode(),
                        timestamp_ms=int(at.timestamp() * 1000),
                    )
                )
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def skip_to_end(kafka: CommonSettings | str, topic: str, group: str) -> None:
    """Commit ``group``'s offsets at the end of ``topic``: a consumer of that group starts
    after the history (the live path is not what is measured)."""
    settings = kafka_settings(kafka)
    partitions = await partitions_of(settings, topic)
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        end: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        await consumer.commit({tp: offset for tp, offset in end.items()})
    finally:
        await consumer.stop()
