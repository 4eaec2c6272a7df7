"""The Kafka producer every service publishes with: idempotent, acks=all, batched.

``publish_many`` hands the whole batch to the producer before awaiting any acknowledgement,
so a batch costs one round trip, not one per record.

An idempotent producer numbers its batches per partition, and a broker that went away with
batches in flight can refuse every later one as out of sequence, forever (seen with a
graceful broker shutdown). :class:`Producer` therefore starts afresh — a new producer id,
sequences from zero — when a publish fails while the cluster answers. Nothing is lost: the
caller of a failed publish retries (ingest answers 503, relays keep their rows) and consumers
drop the repeats by event or change id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from shared.kafka_security import check_access, client_kwargs
from shared.logging import get_logger
from shared.settings import CommonSettings

log = get_logger(__name__)


class PublishError(Exception):
    """The broker did not acknowledge in time; nothing may be reported as accepted."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


# No lingering: a record waits only for the request in flight to its broker. publish_many
# hands a whole batch to the producer before it yields, so the batch leaves as one request
# anyway, and records sent while a request is in flight (one per broker) gather into the next
# one by themselves; a linger would only add its own wait to every acknowledgement (about
# 2 ms to 4 ms a publish here, paid by ingest's answer and by every relay pass).
LINGER_MS = 0


def _aiokafka_producer(settings: CommonSettings, linger_ms: int) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_kwargs(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        request_timeout_ms=10_000,
        retry_backoff_ms=100,
    )


class Producer:
    """An idempotent aiokafka producer that can be renewed in place (see the module text)."""

    def __init__(self, settings: CommonSettings, *, linger_ms: int = LINGER_MS) -> None:
        self._settings = settings
        self._linger_ms = linger_ms
        self._inner = _aiokafka_producer(settings, linger_ms)
        self._lock = asyncio.Lock()
        self.renewals = 0

    @property
    def settings(self) -> CommonSettings:
        """What the producer was made with: the cluster, and how to reach it securely."""
        return self._settings

    @property
    def client(self) -> Any:
        return self._inner.client

    @property
    def current(self) -> AIOKafkaProducer:
        return self._inner

    async def start(self) -> None:
        await self._inner.start()

    async def stop(self) -> None:
        await self._inner.stop()

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self._inner.send(
            topic, value, key=key, headers=headers, partition=partition
        )
        return future

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        return await (await self.send(topic, value, key=key, headers=headers))

    async def recover(self, failed: AIOKafkaProducer) -> None:
        """After a failed publish on ``failed``: if the cluster answers, the producer is what
        is stuck, so replace it. Concurrent callers renew it once."""
        async with self._lock:
            if self._inner is not failed or not await broker_reachable(self):
                return
            fresh = _aiokafka_producer(self._settings, self._linger_ms)
            try:
                async with asyncio.timeout(10):
                    await fresh.start()
            except (TimeoutError, KafkaError):
                with contextlib.suppress(Exception):
                    await fresh.stop()
                return
            self._inner = fresh
            self.renewals += 1
        log.warning("kafka_producer_renewed", renewals=self.renewals)
        with contextlib.suppress(Exception):
            await failed.stop()


def make_producer(settings: CommonSettings, *, linger_ms: int = LINGER_MS) -> Producer:
    return Producer(settings, linger_ms=linger_ms)


async def start_producer(settings: CommonSettings, *, wait_seconds: float = 60.0) -> Producer:
    """A started producer, waiting up to ``wait_seconds`` for the broker to answer.

    Once started, the producer reconnects by itself when the broker goes away and comes back.
    A broker that refuses us (a wrong password, a certificate we do not trust) raises
    :class:`~shared.kafka_security.KafkaAccessRefused` at once: waiting cannot fix that.
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
            await check_access(settings)
            if loop.time() >= deadline:
                raise RuntimeError(
                    f"Kafka at {settings.kafka_bootstrap_servers} did not answer within "
                    f"{wait_seconds:.0f} s: start it (make up) or set KAFKA_BOOTSTRAP_SERVERS"
                ) from exc
            await asyncio.sleep(1.0)


async def publish_many(producer: Producer, records: Sequence[Record], *, timeout: float) -> None:
    """Send every record and wait until the broker has acknowledged all of them.

    Raises :class:`PublishError` when any record is not acknowledged within ``timeout``
    seconds. Records may still reach the topic after that; callers make retries safe with
    idempotency keys, never by assuming a failed publish left no trace.
    """
    await _publish(producer, records, timeout, _send_each)


async def publish_alone(producer: Producer, records: Sequence[Record], *, timeout: float) -> None:
    """:func:`publish_many` for the only publisher to these topics through ``producer`` (an
    outbox relay, or ingest's intake, whose groups take turns; each waits for its
    acknowledgements before the next publish): the records
    go as record batches filled here, one per partition (more when one fills up), each
    partition's records in their order, to the partition the producer's own partitioner
    gives their key. The producer's per-record path (a partition lookup, an accumulator call
    and a future for every record) costs three times the CPU. Not for concurrent publishers
    to one topic: a batch handed over waits until that partition's queued batches are sent.
    """
    await _publish(producer, records, timeout, _send_batches)


class Handed:
    """Records handed to the producer (see :func:`hand_over_alone`), their acknowledgement
    still to come."""

    def __init__(
        self, producer: Producer, inner: AIOKafkaProducer, futures: list[asyncio.Future[Any]]
    ) -> None:
        self._producer = producer
        self._inner = inner
        self._futures = futures

    async def acknowledged(self, *, timeout: float) -> None:
        """Wait until the broker has acknowledged every record, as :func:`publish_many` does
        (:class:`PublishError` past ``timeout`` seconds)."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*self._futures)
        except (TimeoutError, KafkaError) as exc:
            await self._producer.recover(self._inner)
            raise PublishError(f"broker did not acknowledge: {type(exc).__name__}") from exc


async def hand_over_alone(
    producer: Producer, records: Sequence[Record], *, timeout: float
) -> Handed:
    """The first half of :func:`publish_alone`: the records are handed to the producer as
    record batches, and on their way to the broker once the caller yields; the caller awaits
    :meth:`Handed.acknowledged` when it needs them acknowledged (before it deletes what they
    came from, say). Same rule: the only publisher of whole batches to these topics."""
    inner = producer.current
    try:
        async with asyncio.timeout(timeout):
            futures = await _send_batches(inner, records)
    except (TimeoutError, KafkaError) as exc:
        await producer.recover(inner)
        raise PublishError(f"broker did not take the records: {type(exc).__name__}") from exc
    return Handed(producer, inner, futures)


Sender = Callable[[AIOKafkaProducer, Sequence[Record]], Awaitable[list["asyncio.Future[Any]"]]]


async def _publish(
    producer: Producer, records: Sequence[Record], timeout: float, send: Sender
) -> None:
    inner = producer.current
    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*await send(inner, records))
    except (TimeoutError, KafkaError) as exc:
        await producer.recover(inner)
        raise PublishError(f"broker did not acknowledge: {type(exc).__name__}") from exc


async def _send_each(
    inner: AIOKafkaProducer, records: Sequence[Record]
) -> list[asyncio.Future[Any]]:
    partitions = _Partitions(inner)
    return [
        await inner.send(
            r.topic,
            r.value,
            key=r.key,
            headers=list(r.headers),
            partition=await partitions.of(r.topic, r.key),
        )
        for r in records
    ]


async def _send_batches(
    inner: AIOKafkaProducer, records: Sequence[Record]
) -> list[asyncio.Future[Any]]:
    partitions = _Partitions(inner)
    by_partition: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        by_partition.setdefault((r.topic, await partitions.of(r.topic, r.key)), []).append(r)
    futures: list[asyncio.Future[Any]] = []
    for (topic, partition), batch_records in by_partition.items():
        batch = inner.create_batch()
        for r in batch_records:
            # A full batch refuses the record (a batch always takes its first): send it, and
            # go on in a new one.
            while (
                batch.append(key=r.key, value=r.value, timestamp=None, headers=list(r.headers))
                is None
            ):
                futures.append(await inner.send_batch(batch, topic, partition=partition))
                batch = inner.create_batch()
        futures.append(await inner.send_batch(batch, topic, partition=partition))
    return futures


@lru_cache(maxsize=32_768)
def key_hash(key: bytes) -> int:
    """The hash the producer's default partitioner gives ``key`` (Kafka's murmur2, positive),
    remembered for the customers seen lately: aiokafka computes it in pure Python, about
    20 us a key, which was a sixth of ingest's CPU for an event."""
    return int(murmur2(key)) & 0x7FFFFFFF


class _Partitions:
    """The partition of each record, as :class:`aiokafka.partitioner.DefaultPartitioner`
    chooses it (a keyed record's partition is its key's hash modulo the partition count)."""

    def __init__(self, inner: AIOKafkaProducer) -> None:
        self._inner = inner
        self._known: dict[str, list[int]] = {}

    async def of(self, topic: str, key: bytes) -> int:
        known = self._known.get(topic)
        if known is None:
            known = self._known[topic] = sorted(await self._inner.partitions_for(topic))
        return known[key_hash(key) % len(known)]


async def broker_reachable(producer: Producer, timeout: float = 2.0) -> bool:
    """True when a metadata round trip to the cluster succeeds (used by /readyz)."""
    try:
        async with asyncio.timeout(timeout):
            await producer.client.fetch_all_metadata()
    except Exception:
        return False
    return True
