"""The dead-letter topic: what goes in, what is in it, replaying it, erasing a customer from it.

A poison record reaches the DLQ (:func:`dead_letter_record`, used by the batch consumer) as it
was — value and headers — plus ``dlq.*`` headers saying where it came from and what failed.
Every dead letter has a key of its own, ``<original key>|<topic>:<partition>:<offset>`` of the
source record (``|`` cannot occur in a topic name, so the last one splits the two), and the
original key travels in the ``dlq.source.key`` header. The DLQ is compacted, which keeps only
the latest record per key: were dead letters keyed by the customer id alone, a customer's
second poison record would have compaction remove their first before anyone replayed it. A
record without a key is stored under ``<topic>:<partition>:<offset>`` (a compacted topic
refuses null keys) and marked so that a replay restores the null key.

Erasing a customer (:func:`erase_from_dlq`) reads the DLQ and writes a tombstone under the key
of each of their dead letters, in its partition; compaction then removes them from the broker.

The ``dlq.error`` header says what failed without quoting personal data (:func:`describe_error`):
error messages from pydantic or PostgreSQL quote the input or the values of a row.

Replaying twice changes nothing, on two levels:

* a replayed record is the original, byte for byte and with its original key: the consumers'
  inboxes (scoring's by event id, outreach's by change id) drop any second copy;
* the replayer remembers what it replayed. Once the source topic has acknowledged the copies
  it appends one *replay marker* per record to the DLQ itself (key
  ``dlq.replayed/<partition>/<offset>``, empty value), and skips every record that has one.
  A crash between the two steps can replay a record a second time; the inboxes absorb it.

Markers rather than a consumer-group offset, because ``--source-topic`` and ``--since`` leave
holes that a single offset per partition cannot describe. A marker has a key of its own, so
compaction never lets it replace a record that is still waiting, and holds no customer data
(DLQ coordinates and a time), so erasure need not reach it; it expires with the DLQ's
retention, never before the record it marks.

A replayed copy carries ``dlq.replayed`` (the DLQ coordinates it came from). If it fails
again the consumer dead-letters it as a new record, without a marker: the next replay, after
the next fix, takes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.exc import StatementError

from shared.kafka import Producer, PublishError, Record
from shared.kafka_read import read_until_end
from shared.kafka_security import start_admin
from shared.logging import scrub
from shared.settings import CommonSettings
from shared.topics import Topics

SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
# The source record's key; the DLQ key adds the source coordinates to it.
SOURCE_KEY = "dlq.source.key"
GROUP = "dlq.consumer.group"
ERROR = "dlq.error"
ERROR_TYPE = "dlq.error.type"
FAILED_AT = "dlq.failed_at"
# Why the consumer gave up on the record, when it is not the error alone: its statement kept
# timing out while the database answered promptly (:data:`STATEMENT_TIMEOUT`).
REASON = "dlq.reason"
STATEMENT_TIMEOUT = "statement_timeout"
# The record had no key; the DLQ key is synthetic and a replay sends the record without one.
SYNTHETIC_KEY = "dlq.key.synthetic"
# On a replayed copy in the source topic: "<dlq topic>/<partition>/<offset>" it came from.
REPLAYED = "dlq.replayed"
# On a replay marker in the DLQ; the value is "<partition>/<offset>" of the record replayed.
MARKER = "dlq.marker.replayed"
REPLAYED_AT = "dlq.replayed_at"
ERASED_AT = "dlq.erased_at"
_OWN = "dlq."
# Between the original key and the source coordinates in a DLQ key.
KEY_SEPARATOR = b"|"

SEND_TIMEOUT_SECONDS = 30.0
# An erasure reads the whole DLQ (it is small) while a client waits for its answer.
ERASE_READ_TIMEOUT_SECONDS = 10.0
_MAX_ERROR_CHARS = 2000
_MAX_ERRORS_LISTED = 20

State = Literal["pending", "replayed", "erased"]
Headers = tuple[tuple[str, bytes], ...]


class Outgoing(NamedTuple):
    """A record to send; unlike :class:`shared.kafka.Record`, its key or value may be null."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    # None: the partitioner's choice, by key.
    partition: int | None = None


def dead_letter_record(
    record: ConsumerRecord[bytes, bytes],
    *,
    dlq_topic: str,
    group: str,
    exc: BaseException,
    reason: str | None = None,
) -> Record:
    """The DLQ record for a poison ``record`` that ``group`` failed on with ``exc``.

    Its key is unique to the source record, ``<key>|<topic>:<partition>:<offset>``, so that
    compaction never removes one dead letter in favour of another.
    """
    where = f"{record.topic}:{record.partition}:{record.offset}".encode()
    synthetic = not record.key
    key = where if synthetic else record.key + KEY_SEPARATOR + where
    headers = (
        *(record.headers or ()),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
        *(((SYNTHETIC_KEY, b"true"),) if synthetic else ((SOURCE_KEY, record.key),)),
        (GROUP, group.encode()),
        (ERROR, describe_error(exc).encode()),
        (ERROR_TYPE, type(exc).__name__.encode()),
        (FAILED_AT, datetime.now(UTC).isoformat().encode()),
        *(((REASON, reason.encode()),) if reason else ()),
    )
    # Never a null value: in a compacted topic that is a tombstone, an erasure.
    return Record(dlq_topic, key, record.value or b"", headers)


def describe_error(exc: BaseException) -> str:
    """What failed, for the ``dlq.error`` header, without the personal data its message may
    quote.

    * a pydantic validation error: the model, then the location and type of each error; not
      the input, nor the message (a validator's message may repeat the input);
    * a database error (SQLAlchemy, asyncpg): the exception classes and the SQLSTATE only;
      PostgreSQL's message and detail name a row's values, SQLAlchemy's the statement's
      parameters;
    * anything else: ``<class>: <message>``.

    Whatever the case, :func:`shared.logging.scrub` (email addresses, quoted inputs,
    parameters, key values) runs on the result as a safety net.
    """
    name = type(exc).__name__
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        listed = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'} [{e['type']}]"
            for e in errors[:_MAX_ERRORS_LISTED]
        ]
        if len(errors) > len(listed):
            listed.append(f"{len(errors) - len(listed)} more")
        text = f"{name} in {exc.title}: {'; '.join(listed)}"
    elif isinstance(exc, StatementError) or _sqlstate(exc) is not None:
        # SQLAlchemy wraps the driver's error (``orig``), which asyncpg's error caused.
        chain: list[BaseException] = [exc]
        orig = exc.orig if isinstance(exc, StatementError) else None
        if orig is not None:
            chain += [orig, *([orig.__cause__] if orig.__cause__ is not None else [])]
        inner = [n for n in dict.fromkeys(type(e).__name__ for e in chain[1:]) if n != name]
        state = next((s for e in reversed(chain) if (s := _sqlstate(e))), "unknown")
        driver = f" ({', '.join(inner)})" if inner else ""
        text = f"{name}{driver}: SQLSTATE {state}"
    else:
        text = f"{name}: {exc}"
    return scrub(text)[:_MAX_ERROR_CHARS]


def _sqlstate(exc: BaseException | None) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


@dataclass(frozen=True)
class DeadLetter:
    """One poison record in the DLQ, at ``partition``/``offset`` of the DLQ topic."""

    partition: int
    offset: int
    timestamp: datetime
    key: bytes
    value: bytes
    headers: Headers
    state: State = "pending"

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k == name]
        return found[-1].decode(errors="replace") if found else None

    @property
    def source_topic(self) -> str | None:
        return self.header(SOURCE_TOPIC)

    @property
    def source(self) -> str:
        """``topic/partition/offset`` the record was consumed from."""
        return "/".join(
            self.header(h) or "?" for h in (SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET)
        )

    @property
    def original_key(self) -> bytes | None:
        """The record's key in its source topic; None when it had none."""
        if self.header(SYNTHETIC_KEY):
            return None
        found = [v for k, v in self.headers if k == SOURCE_KEY]
        # Without the header, it was dead-lettered under its original key.
        return found[-1] if found else self.key

    def copy_for_replay(self, dlq_topic: str, source_topic: str) -> Outgoing:
        """The original record, bound for its source topic, marked as a replay."""
        headers = (
            *((k, v) for k, v in self.headers if not k.startswith(_OWN)),
            (REPLAYED, f"{dlq_topic}/{self.partition}/{self.offset}".encode()),
        )
        return Outgoing(source_topic, self.original_key, self.value, headers)

    def marker(self, dlq_topic: str) -> Outgoing:
        """The DLQ record that says this one has been replayed."""
        where = f"{self.partition}/{self.offset}"
        headers = ((MARKER, where.encode()), (REPLAYED_AT, datetime.now(UTC).isoformat().encode()))
        return Outgoing(dlq_topic, f"dlq.replayed/{where}".encode(), b"", headers)

    def tombstone(self, dlq_topic: str) -> Outgoing:
        """The DLQ record that erases this one: its key, no value, in its partition (where
        compaction can see both, even should partitions have been added since)."""
        at = datetime.now(UTC).isoformat().encode()
        return Outgoing(dlq_topic, self.key, None, ((ERASED_AT, at),), self.partition)


def classify(records: Iterable[ConsumerRecord[bytes, bytes]]) -> list[DeadLetter]:
    """The dead letters among the DLQ's ``records``, oldest first, each with its state.

    A record is *erased* when a tombstone for its key comes after it: in the same partition at
    a higher offset (where :func:`erase_from_dlq` writes it), or, for a tombstone written by
    key alone before that, in another partition and no earlier in time. It is *replayed* when
    a replay marker names it. Tombstones and markers themselves are not dead letters.
    """
    tombstones: dict[bytes, list[ConsumerRecord[bytes, bytes]]] = {}
    replayed: set[str] = set()
    candidates: list[ConsumerRecord[bytes, bytes]] = []
    for r in records:
        if r.value is None:
            tombstones.setdefault(r.key or b"", []).append(r)
            continue
        marker = [v for k, v in r.headers or () if k == MARKER]
        if marker:
            replayed.add(marker[-1].decode())
        else:
            candidates.append(r)

    def state(r: ConsumerRecord[bytes, bytes]) -> State:
        for t in tombstones.get(r.key or b"", ()):
            if t.offset > r.offset if t.partition == r.partition else t.timestamp >= r.timestamp:
                return "erased"
        return "replayed" if f"{r.partition}/{r.offset}" in replayed else "pending"

    candidates.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    return [
        DeadLetter(
            partition=r.partition,
            offset=r.offset,
            timestamp=datetime.fromtimestamp(r.timestamp / 1000, UTC),
            key=r.key or b"",
            value=r.value,
            headers=tuple(r.headers or ()),
            state=state(r),
        )
        for r in candidates
    ]


@dataclass(frozen=True)
class Snapshot:
    """The DLQ as it stood when read, and the topics that exist on the cluster."""

    letters: list[DeadLetter]
    topics: frozenset[str]


async def read_dlq(settings: CommonSettings, topics: Topics, timeout: float = 60.0) -> Snapshot:
    """Every record in the DLQ, from its start to its end as of now, classified.

    Raises :class:`TimeoutError` when reading takes longer than ``timeout`` seconds.
    """
    async with asyncio.timeout(timeout):
        existing, records = await _read(settings, topics.dlq)
    if topics.dlq not in existing:
        raise RuntimeError(f"no topic {topics.dlq}: create it with `tend topics`")
    return Snapshot(classify(records), existing)


async def _read(
    settings: CommonSettings, dlq: str
) -> tuple[frozenset[str], list[ConsumerRecord[bytes, bytes]]]:
    """The topics on the cluster, and the records of ``dlq`` from its start to its end as of
    now (none when there is no such topic)."""
    admin = await start_admin(settings)
    try:
        described = {t["topic"]: t for t in await admin.describe_topics()}
    finally:
        await admin.close()
    if dlq not in described:
        return frozenset(described), []
    records = [r async for batch in read_until_end(settings, dlq) for r in batch]
    return frozenset(described), records


@dataclass
class ReplayReport:
    replayed: int = 0
    already_replayed: int = 0
    erased: int = 0
    filtered: int = 0
    source_missing: int = 0

    @property
    def skipped(self) -> int:
        return self.already_replayed + self.erased + self.filtered + self.source_missing


async def replay_dead_letters(
    settings: CommonSettings,
    topics: Topics,
    producer: Producer,
    *,
    source_topic: str | None = None,
    since: datetime | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Re-publish the pending dead letters to their source topics, once.

    ``source_topic`` and ``since`` (dead-lettered at or after) narrow the choice; ``dry_run``
    counts without publishing. Erased and already replayed records are skipped, and so are
    records whose source topic no longer exists (a send would create it).
    """
    snapshot = await read_dlq(settings, topics)
    report = ReplayReport()
    chosen: list[tuple[DeadLetter, str]] = []
    for letter in snapshot.letters:
        source = letter.source_topic
        if letter.state == "erased":
            report.erased += 1
        elif (source_topic is not None and source != source_topic) or (
            since is not None and letter.timestamp < since
        ):
            report.filtered += 1
        elif letter.state == "replayed":
            report.already_replayed += 1
        elif source is None or source not in snapshot.topics:
            report.source_missing += 1
        else:
            chosen.append((letter, source))
    report.replayed = len(chosen)
    if chosen and not dry_run:
        # Copies first, markers only once the copies are acknowledged: a crash in between
        # replays again (harmless), never forgets a record.
        await _send(producer, [d.copy_for_replay(topics.dlq, source) for d, source in chosen])
        await _send(producer, [d.marker(topics.dlq) for d, _ in chosen])
    return report


async def erase_from_dlq(producer: Producer, topics: Topics, customer_id: str) -> None:
    """Erase a customer's dead letters from the DLQ.

    Reads the DLQ and writes a tombstone under the key of each dead letter whose original key
    is ``customer_id`` (replayed or not; replay markers hold nothing of the customer): from
    then on ``dlq list`` and ``dlq replay`` ignore those records, and compaction deletes them
    from the broker within hours (see the DLQ's configuration in :mod:`shared.topics`). A
    dead letter that reaches the DLQ afterwards is not covered. Erasing twice writes nothing
    the second time.

    Raises :class:`~shared.kafka.PublishError` when the DLQ cannot be read within
    ``ERASE_READ_TIMEOUT_SECONDS`` or the broker does not acknowledge the tombstones.
    """
    try:
        async with asyncio.timeout(ERASE_READ_TIMEOUT_SECONDS):
            _, records = await _read(producer.settings, topics.dlq)
    except (TimeoutError, KafkaError) as exc:
        raise PublishError(f"could not read the DLQ: {type(exc).__name__}") from exc
    key = customer_id.encode()
    theirs = [d for d in classify(records) if d.original_key == key and d.state != "erased"]
    # Records dead-lettered before keys were unique share a key: one tombstone each key.
    tombstones = {(d.partition, d.key): d.tombstone(topics.dlq) for d in theirs}
    if tombstones:
        await _send(producer, list(tombstones.values()))


async def _send(
    producer: Producer,
    records: Sequence[Outgoing],
) -> None:
    # shared.kafka.publish_many, for records whose key or value may be null.
    inner = producer.current
    try:
        async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
            futures = [
                await inner.send(
                    r.topic, r.value, key=r.key, headers=list(r.headers), partition=r.partition
                )
                for r in records
            ]
            await asyncio.gather(*futures)
    except (TimeoutError, KafkaError) as exc:
        await producer.recover(inner)
        raise PublishError(f"broker did not acknowledge: {type(exc).__name__}") from exc
