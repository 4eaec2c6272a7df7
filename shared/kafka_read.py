"""Reading a topic's history: from its start (or an instant) up to its end as it stood when the
reading began, outside any consumer group.

The rebuild reads the events this way, and the dead-letter tools the DLQ; the backtest chooses
the newest part of the changes with :class:`TopicHistory` and reads it in bounded batches.
Records appended while the reading runs are left for the next one, so a reading always ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.kafka_security import client_kwargs, start_admin
from shared.settings import CommonSettings

Batch = list[ConsumerRecord[bytes, bytes]]


async def partitions_of(settings: CommonSettings, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic``, as the cluster describes them (none: no such topic)."""
    admin = await start_admin(settings)
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    found = [d for d in described if d["topic"] == topic and d["error_code"] == 0]
    return [TopicPartition(topic, p["partition"]) for d in found for p in d["partitions"]]


async def end_offsets(settings: CommonSettings, topic: str) -> dict[TopicPartition, int]:
    """Where each partition of ``topic`` ends now (empty when there is no such topic)."""
    partitions = await partitions_of(settings, topic)
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def read_until_end(
    settings: CommonSettings,
    topic: str,
    *,
    since: datetime | None = None,
    until: Mapping[TopicPartition, int] | None = None,
    max_records: int = 5000,
) -> AsyncIterator[Batch]:
    """The records of ``topic`` in batches, each partition in order, from its start (from the
    first record at or after ``since``) up to its end now (or the offsets ``until``). Nothing
    when the topic does not exist."""
    partitions = await partitions_of(settings, topic)
    if not partitions:
        return
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings), enable_auto_commit=False, auto_offset_reset="earliest"
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
        async for batch in _between(consumer, start, end, max_records):
            yield batch
    finally:
        await consumer.stop()


async def _between(
    consumer: AIOKafkaConsumer,
    start: Mapping[TopicPartition, int],
    end: Mapping[TopicPartition, int],
    max_records: int,
) -> AsyncIterator[Batch]:
    """The records from ``start`` up to (not including) ``end``, on a consumer not yet
    assigned anything."""
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


Offsets = dict[TopicPartition, int]


class TopicHistory:
    """One topic's history as it stood when opened: where each partition ends, where it
    stood at an instant (by record timestamp), and the records between two positions.

    Heavy readers use it to choose what to read before reading it (the newest ``n`` records,
    everything since an instant), then to read it in bounded batches. Fetches are kept small
    (``fetch_bytes`` per partition) so a long read holds little in memory at a time.
    """

    def __init__(
        self, settings: CommonSettings, topic: str, *, fetch_bytes: int = 256 * 1024
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._fetch_bytes = fetch_bytes
        self._meta: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []
        self.end: Offsets = {}

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **client_kwargs(self._settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self._fetch_bytes,
            fetch_max_bytes=self._fetch_bytes * 8,
        )

    async def __aenter__(self) -> TopicHistory:
        self.partitions = await partitions_of(self._settings, self._topic)
        if self.partitions:
            self._meta = self._consumer()
            await self._meta.start()
            self.end = dict(await self._meta.end_offsets(self.partitions))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._meta is not None:
            await self._meta.stop()

    async def offsets_at(self, instant_ms: int) -> Offsets:
        """Each partition's first offset whose record is stamped at or after ``instant_ms``
        (its end when none is)."""
        if self._meta is None:
            return {}
        found = await self._meta.offsets_for_times({tp: instant_ms for tp in self.partitions})
        return {
            tp: min(at.offset, self.end[tp]) if at is not None else self.end[tp]
            for tp, at in found.items()
        }

    def count(self, start: Mapping[TopicPartition, int]) -> int:
        """How many records lie from ``start`` to the end."""
        return sum(max(self.end[tp] - start.get(tp, self.end[tp]), 0) for tp in self.partitions)

    async def newest(self, n: int, *, lo_ms: int, hi_ms: int) -> int:
        """The earliest instant in [``lo_ms``, ``hi_ms``] from which at most ``n`` records are
        left to the end (a binary search over record timestamps; ``hi_ms`` when even the
        records of that instant are more than ``n``)."""
        if self.count(await self.offsets_at(lo_ms)) <= n:
            return lo_ms
        # count(lo) > n; find the smallest t with count(t) <= n.
        while hi_ms - lo_ms > 1:
            mid = (lo_ms + hi_ms) // 2
            if self.count(await self.offsets_at(mid)) <= n:
                hi_ms = mid
            else:
                lo_ms = mid
        return hi_ms

    async def read(
        self, start: Mapping[TopicPartition, int], *, max_records: int
    ) -> AsyncIterator[Batch]:
        """The records from ``start`` to the end the topic had when opened, in batches of at
        most ``max_records``, each partition in order (a consumer of its own per reading, so a
        reading abandoned half-way leaves nothing behind for the next)."""
        if not self.partitions or self.count(start) == 0:
            # Nothing to read: no consumer either (aiokafka's consumer stopped the moment it
            # started cancels its own coordinator task, and that cancellation escapes stop()).
            return
        consumer = self._consumer()
        await consumer.start()
        try:
            async for batch in _between(consumer, start, self.end, max_records):
                yield batch
        finally:
            await consumer.stop()
