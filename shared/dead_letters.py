"""The dead-letter topic as operations read it over HTTP: its newest records, each described
without its payload, and counts by reason.

What a dead letter is, how it is written, replayed and erased is :mod:`shared.dlq`; this reads
the DLQ's tail — at most :data:`READ_RECORDS` records, the newest of each partition, within
:data:`READ_SECONDS` — so an answer is bounded however long the DLQ grows (it stays small:
replayed and erased records are compacted or expire). Replay markers and tombstones come
after what they mark, so the tail classifies its own records as the whole topic would. A
record is shown as ``tend dlq list`` shows it (where it came from, the consumer group, the
error as scrubbed when it was dead-lettered, the source key — a customer id — and the size),
plus the id of the event or change it held; never its payload. Erased records are left out.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime

import orjson

from shared.dlq import (
    ERROR,
    ERROR_TYPE,
    GROUP,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    DeadLetter,
    classify,
)
from shared.kafka_read import TopicHistory
from shared.logging import scrub
from shared.settings import CommonSettings

READ_RECORDS = 10_000
READ_SECONDS = 10.0
# An id is read from a payload up to this size; larger poison is not parsed at all.
_PARSED_BYTES = 1_000_000
_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter, described without its payload."""

    partition: int  # of the DLQ
    offset: int
    failed_at: datetime
    state: str  # pending or replayed
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    group: str | None
    reason: str  # why it was given up on: the header's reason, else the error's class
    error: str | None
    key: str | None  # the record's key in its source topic: the customer id
    event_id: str | None  # the event's (or change's) id, when the payload names one
    size: int  # bytes of payload


@dataclass(frozen=True, slots=True)
class Tail:
    letters: list[Letter]  # oldest first
    complete: bool  # false: older records than those read may exist


async def read_tail(settings: CommonSettings, dlq_topic: str) -> Tail:
    """The DLQ's newest records (see the module docstring), described; raises
    :class:`TimeoutError` when the broker does not answer in time."""
    async with asyncio.timeout(READ_SECONDS), TopicHistory(settings, dlq_topic) as topic:
        if not topic.partitions:
            return Tail([], True)
        each = math.ceil(READ_RECORDS / len(topic.partitions))
        start = {tp: max(end - each, 0) for tp, end in topic.end.items()}
        complete = all(at == 0 for at in start.values())
        records = [r async for batch in topic.read(start, max_records=2000) for r in batch]
    letters = [describe(d) for d in classify(records) if d.state != "erased"]
    return Tail(letters, complete)


def describe(letter: DeadLetter) -> Letter:
    """What a client is shown of a dead letter."""
    original = letter.original_key
    return Letter(
        partition=letter.partition,
        offset=letter.offset,
        failed_at=letter.timestamp,
        state=letter.state,
        source_topic=letter.source_topic,
        source_partition=_number(letter.header(SOURCE_PARTITION)),
        source_offset=_number(letter.header(SOURCE_OFFSET)),
        group=letter.header(GROUP),
        reason=letter.header(REASON) or letter.header(ERROR_TYPE) or "unknown",
        # Scrubbed when dead-lettered; again for records from before that was done.
        error=scrub(" ".join(error.split())) if (error := letter.header(ERROR)) else None,
        key=original.decode(errors="replace") if original is not None else None,
        event_id=_payload_id(letter.value),
        size=len(letter.value),
    )


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _payload_id(value: bytes) -> str | None:
    """The ``event_id`` (an event) or ``change_id`` (a change) the payload names, if it is a
    JSON object that names one; nothing else of it."""
    if len(value) > _PARSED_BYTES:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    for name in ("event_id", "change_id"):
        found = doc.get(name)
        if isinstance(found, str) and 0 < len(found) <= _ID_CHARS:
            return found
    return None
