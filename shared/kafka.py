"""The Kafka producer every service publishes with: idempotent, acks=all, batched.

``publish_many`` hands the whole batch to the producer before awaiting any acknowledgement,
so a batch costs one round trip, not one per record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from shared.settings import CommonSettings


class PublishError(Exception):
    """The broker did not acknowledge in time; nothing may be reported as accepted."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def make_producer(settings: CommonSettings, *, linger_ms: int = 2) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=10_000,
        retry_backoff_ms=100,
    )


async def start_producer(
    settings: CommonSettings, *, wait_seconds: float = 60.0
) -> AIOKafkaProducer:
    """A started producer, waiting up to ``wait_seconds`` for the broker to answer.

    Once started, the producer reconnects by itself when the broker goes away and comes back.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        producer = make_producer(settings)
        try:
            await producer.start()
            return producer
        except KafkaError as exc:
            await producer.stop()
            if loop.time() >= deadline:
                raise RuntimeError(
                    f"Kafka at {settings.kafka_bootstrap_servers} did not answer within "
                    f"{wait_seconds:.0f} s: start it (make up) or set KAFKA_BOOTSTRAP_SERVERS"
                ) from exc
            await asyncio.sleep(1.0)


async def publish_many(
    producer: AIOKafkaProducer, records: Sequence[Record], *, timeout: float
) -> None:
    """Send every record and wait until the broker has acknowledged all of them.

    Raises :class:`PublishError` when any record is not acknowledged within ``timeout``
    seconds. Records may still reach the topic after that; callers make retries safe with
    idempotency keys, never by assuming a failed publish left no trace.
    """
    try:
        async with asyncio.timeout(timeout):
            futures = [
                await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers))
                for r in records
            ]
            await asyncio.gather(*futures)
    except (TimeoutError, KafkaError) as exc:
        raise PublishError(f"broker did not acknowledge: {type(exc).__name__}") from exc


async def broker_reachable(producer: AIOKafkaProducer, timeout: float = 2.0) -> bool:
    """True when a metadata round trip to the cluster succeeds (used by /readyz)."""
    try:
        async with asyncio.timeout(timeout):
            await producer.client.fetch_all_metadata()
    except Exception:
        return False
    return True
