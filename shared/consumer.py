"""The batch consumer every service reads Kafka with.

The loop: fetch a batch, hand it to the service's handler (which makes its work durable in
one database transaction), then commit ``offset + 1`` per partition. Offsets are never
committed for work that is not durable, so a crash replays, and the handler's inbox drops
what it has already applied. The commit goes to the broker while the next batch is fetched
and handled (one commit in flight at a time, in order, so a committed offset never moves
back); a rebalance and the end of the loop wait for it.

Overlapped batches (``overlap_by``, scoring's consumer): the database's share of a batch (its
statements and the commit) is time the process would otherwise sit idle. Given what each
record touches (its key, and whatever else its handling changes), the loop hands the next
batch's records that touch nothing of the batch before it to the handler at once, in a
transaction of their own, while that batch is still being written; the records that do touch
it wait until it is durable, and go in a transaction of their own. Records of one key are
thus handled in order, a batch's offsets are committed only once it and every batch before
it are durable, and at most one batch is being written beside the one being handed over.

Errors are sorted in one place (:meth:`BatchConsumer._process`):

* transient (database or broker unreachable, or the transaction rolled back for a deadlock
  or a serialization failure): nothing is committed; the batch is retried with backoff until
  it succeeds or the consumer is stopped;
* a statement timeout: retried like a transient error, since a slow database slows every
  batch; but once the batch has timed out three times while the database answers a probe
  (``SELECT 1``) promptly, the batch itself is to blame: it is split in halves, and a half
  that times out again is split again, until the record that makes it slow is alone; that
  record goes to the DLQ with reason ``statement_timeout`` (after three timeouts of its own,
  the probe still prompt) and the rest of the batch is processed. Without a prompt probe
  nothing is ever dead-lettered for being slow;
* anything else: the batch is split record by record; a record that still fails on its own
  is a poison record and goes to the DLQ under a key of its own (its key and where it was
  read), with its source topic, partition, offset and key, the consumer group and the error
  (without personal data) in headers (:func:`shared.dlq.dead_letter_record`), and the
  consumer moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.db import rolled_back, statement_timed_out, unreachable
from shared.dlq import STATEMENT_TIMEOUT, dead_letter_record
from shared.kafka import PublishError, publish_many
from shared.kafka_security import client_kwargs
from shared.logging import get_logger
from shared.settings import CommonSettings
from shared.signals import CONSUMED, DEAD_LETTERS

log = get_logger(__name__)

Message: TypeAlias = ConsumerRecord
# A handler makes a batch durable in one transaction and returns the records it could not
# use at all (undecodable, unknown schema): those go to the DLQ, the rest are done.
Handler = Callable[[Sequence[Message]], Awaitable[Sequence[tuple[Message, Exception]] | None]]

# What handling a record changes, as keys: records that share a key are handled in order. A
# None among them (a record without a key) orders the record after everything before it.
Touches = Callable[[Message], Iterable[bytes | None]]

# Tells a slow statement from a slow database: True when the database answers promptly.
Probe = Callable[[], Awaitable[bool]]

# A batch (or a lone record) whose statement times out this many times while the probe is
# prompt holds a record that makes it slow.
TIMEOUTS_BEFORE_BLAME = 3

TRANSIENT: tuple[type[BaseException], ...] = (
    OperationalError,
    PoolTimeout,
    OSError,
    ConnectionError,
    TimeoutError,
    KafkaError,
    PublishError,
)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying the batch, not dead-lettering a record: the broker or the database
    could not be reached (a connection the database closed under us included), or the
    database rolled the batch back for a deadlock with another transaction (two replicas
    folding the same customers, say)."""
    return unreachable(exc) or rolled_back(exc) or isinstance(exc, TRANSIENT)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: BatchConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Let the batches in hand finish and commit before the partitions move on.
        async with self._owner.in_flight:
            try:
                await self._owner.land()
            except Exception as exc:
                # The loop meets the same failure when it next lands, and ends; what is
                # durable before it is committed here.
                log.warning("batch_failed", reason=type(exc).__name__, group=self._owner.group_id)
            await self._owner.commit_pending()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions_assigned", count=len(assigned), group=self._owner.group_id)


@dataclass(eq=False)
class _Flight:
    """A batch handed to the handler in overlapped mode: the tasks handling its parts, the
    offsets to commit once they have all succeeded, and the keys its records touch."""

    parts: list[asyncio.Task[None]]
    offsets: dict[TopicPartition, int]
    keys: frozenset[bytes | None]

    def done(self) -> bool:
        return all(part.done() for part in self.parts)


class BatchConsumer:
    def __init__(
        self,
        *,
        settings: CommonSettings,
        topics: Sequence[str],
        group_id: str,
        handler: Handler,
        dlq_topic: str,
        dlq_producer: Any,
        max_records: int = 1000,
        poll_timeout_ms: int = 200,
        session_timeout_ms: int = 10_000,
        auto_offset_reset: str = "earliest",
        probe: Probe | None = None,
        overlap_by: Touches | None = None,
    ) -> None:
        """``probe`` (see :func:`shared.db.answers_promptly`): without one, a statement
        timeout is always retried, as a transient error. ``overlap_by``: what each record
        touches; given, batches overlap (see the module's text)."""
        self.group_id = group_id
        self._probe = probe
        self._overlap_by = overlap_by
        self._flights: deque[_Flight] = deque()
        self._topics = list(topics)
        self._handler = handler
        self._dlq_topic = dlq_topic
        self._dlq = dlq_producer
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._settings = settings
        self._session_timeout_ms = session_timeout_ms
        self._auto_offset_reset = auto_offset_reset
        self._consumer = self._new_consumer()
        self._started = False
        self.in_flight = asyncio.Lock()
        self._pending: dict[TopicPartition, int] = {}
        # One commit at a time, in the order asked: offsets only ever move forward.
        self._commit_lock = asyncio.Lock()
        self._committer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.processed = 0
        self.dead_lettered = 0

    def _new_consumer(self) -> AIOKafkaConsumer:
        """A Kafka consumer for one run: an aiokafka consumer cannot start again once
        stopped, and a supervised consumer whose run died is run again
        (:mod:`shared.supervisor`)."""
        return AIOKafkaConsumer(
            **client_kwargs(self._settings),
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self._auto_offset_reset,
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(1000, self._session_timeout_ms // 4),
            max_poll_interval_ms=300_000,
            fetch_max_bytes=16 * 1024 * 1024,
            # A topic created after the consumer started is noticed within seconds, not the
            # default five minutes.
            metadata_max_age_ms=10_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit, and return."""
        self._stopping.set()

    async def run(self) -> None:
        if self._started:  # run again after a run that died: a new member of the group
            self._consumer = self._new_consumer()
            # Offsets of durable work left uncommitted: the inbox drops what is replayed.
            self._pending = {}
            self._flights.clear()
        self._started = True
        try:
            await self._consumer.start()
            self._consumer.subscribe(self._topics, listener=_Rebalance(self))
            log.info("consumer_started", group=self.group_id, topics=self._topics)
            while not self._stopping.is_set():
                batches = await self._consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
                records = [r for recs in batches.values() for r in recs]
                if not records:
                    if self._flights and self._flights[-1].done():
                        async with self.in_flight:
                            await self.land()
                            self._commit_in_background()
                    continue
                offsets = {tp: recs[-1].offset + 1 for tp, recs in batches.items() if recs}
                async with self.in_flight:
                    if self._overlap_by is None:
                        await self._process(records)
                        self._pending.update(offsets)
                    else:
                        await self._launch(records, offsets)
                    self._commit_in_background()
        finally:
            with contextlib.suppress(Exception):
                async with self.in_flight:
                    await self._wind_down()
                    await self.commit_pending()
            if self._committer is not None:
                with contextlib.suppress(Exception):
                    await self._committer
            await self._consumer.stop()
            log.info("consumer_stopped", group=self.group_id, processed=self.processed)

    async def _launch(self, records: Sequence[Message], offsets: dict[TopicPartition, int]) -> None:
        """Hand ``records`` to the handler beside the batch before them: those that touch
        nothing of it at once, then, once it (and every batch before) is durable, the rest."""
        assert self._overlap_by is not None
        touched = [frozenset(self._overlap_by(record)) for record in records]
        last = self._flights[-1] if self._flights else None
        before = last.keys if last is not None and not last.done() else frozenset()
        free: list[Message] = []
        held: list[Message] = []
        for record, keys in zip(records, touched, strict=True):
            apart = before.isdisjoint(keys) and None not in keys and None not in before
            (free if apart or not before else held).append(record)
        flight = _Flight([], offsets, frozenset().union(*touched))
        if free:
            flight.parts.append(asyncio.create_task(self._process(free)))
        self._flights.append(flight)
        await self.land(before=flight)
        if held:
            flight.parts.append(asyncio.create_task(self._process(held)))

    async def land(self, *, before: _Flight | None = None) -> None:
        """Wait for the batches handed over (those before ``before`` when given), oldest
        first, and make their offsets the ones to commit. A batch whose handling failed
        raises here and stays, with every batch after it: none of them is committed."""
        while self._flights and self._flights[0] is not before:
            flight = self._flights[0]
            for part in flight.parts:
                await part
            self._flights.popleft()
            self._pending.update(flight.offsets)

    async def _wind_down(self) -> None:
        """At the loop's end: land what was handed over; after a failure, the batches left
        are waited for (their work may be durable, the inbox drops it on replay) but not
        committed."""
        try:
            await self.land()
        except Exception as exc:
            log.warning("batch_failed", reason=type(exc).__name__, group=self.group_id)
        for flight in self._flights:
            for part in flight.parts:
                with contextlib.suppress(Exception):
                    await part
        self._flights.clear()

    async def commit_pending(self) -> None:
        """Commit the offsets of the work made durable so far (after any commit in flight)."""
        async with self._commit_lock:
            if not self._pending:
                return
            offsets, self._pending = self._pending, {}
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # The partitions moved during the batch: their new owner replays from the
                # last committed offset, and the handler's inbox drops what we already applied.
                log.warning("commit_failed", reason=type(exc).__name__, group=self.group_id)

    def _commit_in_background(self) -> None:
        """Commit the pending offsets without holding up the next batch: a commit is a round
        trip to the broker, and the batch behind it need not wait for it."""
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_all())

    async def _commit_all(self) -> None:
        try:
            while self._pending:
                await self.commit_pending()
        except Exception as exc:
            # Left for the next batch, the next rebalance or the loop's end to commit.
            log.warning("commit_failed", reason=type(exc).__name__, group=self.group_id)

    async def _process(self, records: Sequence[Message], *, splitting: bool = False) -> None:
        """``splitting``: ``records`` is a part of a batch that timed out, so one more
        timeout (the database still prompt) splits it again."""
        delay = 0.2
        timeouts = 0
        while True:
            try:
                rejected = await self._handler(records) or ()
                for record, error in rejected:
                    await self._dead_letter(record, error)
                self._count(records, rejected)
                return
            except Exception as exc:
                timed_out = statement_timed_out(exc)
                if timed_out and self._probe is not None:
                    timeouts += 1
                    needed = 1 if splitting and len(records) > 1 else TIMEOUTS_BEFORE_BLAME
                    if timeouts >= needed and await self._probe():
                        await self._blame_slow(records, exc)
                        return
                if timed_out or is_transient(exc):
                    if self._stopping.is_set():
                        raise
                    log.warning(
                        "batch_retry",
                        reason=type(exc).__name__,
                        records=len(records),
                        retry_in=round(delay, 1),
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                if len(records) == 1:
                    await self._dead_letter(records[0], exc)
                    return
                # Find the poison record: the others still go through, one at a time.
                for record in records:
                    await self._process([record])
                return

    def _count(
        self, records: Sequence[Message], rejected: Sequence[tuple[Message, Exception]]
    ) -> None:
        """Count what the handler made durable, by topic (its dead letters are counted by
        :meth:`_dead_letter`)."""
        handled = Counter(r.topic for r in records)
        handled.subtract(r.topic for r, _ in rejected)
        for topic, n in handled.items():
            if n > 0:
                CONSUMED.labels(self.group_id, topic).inc(n)
        self.processed += len(records) - len(rejected)

    async def _blame_slow(self, records: Sequence[Message], exc: BaseException) -> None:
        """The database is prompt but ``records`` keep timing out: dead-letter the record
        alone, or split the batch in halves and go on with each."""
        if len(records) == 1:
            await self._dead_letter(records[0], exc, reason=STATEMENT_TIMEOUT)
            return
        log.warning("batch_split_on_statement_timeout", records=len(records), group=self.group_id)
        half = len(records) // 2
        await self._process(records[:half], splitting=True)
        await self._process(records[half:], splitting=True)

    async def _dead_letter(
        self, record: Message, exc: BaseException, *, reason: str | None = None
    ) -> None:
        log.error(
            "record_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            group=self.group_id,
            error_type=type(exc).__name__,
            reason=reason,
        )
        dead = dead_letter_record(
            record, dlq_topic=self._dlq_topic, group=self.group_id, exc=exc, reason=reason
        )
        delay = 0.5
        while True:
            try:
                await publish_many(self._dlq, [dead], timeout=10)
                self.dead_lettered += 1
                DEAD_LETTERS.labels(self.group_id, record.topic, reason or type(exc).__name__).inc()
                return
            except PublishError:
                # Never drop a poison record silently: hold the partition until the DLQ
                # takes it.
                if self._stopping.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
