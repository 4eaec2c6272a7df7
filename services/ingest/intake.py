"""Turning validated input into published events, exactly once as far as a client can tell.

For a batch: claim every event id in one statement (new ids are claimed ``pending``), look up
the ids that were already there, publish what is new or still pending, wait for the broker's
acknowledgement, then mark those ids ``published``. A crash or broker failure anywhere leaves
ids ``pending``, so the client's retry publishes again; consumers drop the repeat by event id.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.models import PENDING, PUBLISHED, idempotency_keys
from services.ingest.schemas import CustomerIn, IngestItem
from shared.events import PAYLOAD_OF, SCHEMA_VERSION, Envelope
from shared.kafka import Record, publish_many

# Fixed namespace: a derived event id must be the same on every instance, forever.
_NAMESPACE = uuid.UUID("6b3f7f0e-8a57-4c59-9a3c-2f1f0e3c9d41")


class Outcome(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class Prepared:
    envelope: Envelope
    payload_hash: str


def prepare(
    item: IngestItem, *, header_key: str | None, source: str, received_at: datetime
) -> Prepared:
    """The envelope of an input item, with its event id and the hash of what was sent."""
    sent = item.model_dump(mode="json", exclude={"event_id", "type"})
    if isinstance(item, CustomerIn) and "occurred_at" not in item.model_fields_set:
        # Defaulted to the arrival time: a blind retry must still match.
        sent.pop("occurred_at", None)
    payload_hash = hashlib.sha256(orjson.dumps(sent, option=orjson.OPT_SORT_KEYS)).hexdigest()
    event_type = item.event_type()
    event_id = item.event_id or header_key
    if event_id is None:
        natural = item.natural_id() or payload_hash
        event_id = str(uuid.uuid5(_NAMESPACE, f"{event_type}:{item.customer_id}:{natural}"))
    # Already validated: build the envelope without paying for validation twice.
    payload_type = PAYLOAD_OF[event_type]
    data = payload_type.model_construct(
        _fields_set=item.model_fields_set & payload_type.model_fields.keys(),
        **{name: getattr(item, name) for name in payload_type.model_fields},
    )
    envelope = Envelope.model_construct(
        event_id=event_id,
        event_type=event_type,
        schema_version=SCHEMA_VERSION,
        customer_id=item.customer_id,
        occurred_at=item.occurred_at,
        received_at=received_at,
        source=source,
        data=data,
    )
    return Prepared(envelope, payload_hash)


class Intake:
    def __init__(
        self, engine: AsyncEngine, producer: AIOKafkaProducer, topic: str, publish_timeout: float
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._topic = topic
        self._timeout = publish_timeout

    async def accept(self, batch: Sequence[Prepared]) -> list[Outcome]:
        """Publish what is new; report each item's outcome in input order.

        Raises :class:`shared.kafka.PublishError` when the broker does not acknowledge, and
        SQLAlchemy errors when the database is unreachable: then nothing in this call may be
        reported as accepted.
        """
        first_of: dict[str, int] = {}
        repeats: dict[int, int] = {}  # index of a repeat inside this batch -> its first
        for i, p in enumerate(batch):
            j = first_of.setdefault(p.envelope.event_id, i)
            if j != i:
                repeats[i] = j
        unique = [batch[i] for i in first_of.values()]
        now = datetime.now(UTC)

        async with self._engine.begin() as conn:
            claimed = set(
                (
                    await conn.execute(
                        insert(idempotency_keys)
                        .values(
                            [
                                {
                                    "event_id": p.envelope.event_id,
                                    "customer_id": p.envelope.customer_id,
                                    "payload_hash": p.payload_hash,
                                    "state": PENDING,
                                    "created_at": now,
                                }
                                for p in unique
                            ]
                        )
                        .on_conflict_do_nothing(index_elements=["event_id"])
                        .returning(idempotency_keys.c.event_id)
                    )
                ).scalars()
            )
            seen = [p.envelope.event_id for p in unique if p.envelope.event_id not in claimed]
            known = (
                {
                    row.event_id: row
                    for row in await conn.execute(
                        select(
                            idempotency_keys.c.event_id,
                            idempotency_keys.c.payload_hash,
                            idempotency_keys.c.state,
                        ).where(idempotency_keys.c.event_id.in_(seen))
                    )
                }
                if seen
                else {}
            )

        to_publish: list[Prepared] = []
        verdict: dict[str, Outcome] = {}
        for p in unique:
            eid = p.envelope.event_id
            row = known.get(eid)
            if row is None:
                to_publish.append(p)
                verdict[eid] = Outcome.ACCEPTED
            elif row.payload_hash != p.payload_hash:
                verdict[eid] = Outcome.CONFLICT
            elif row.state == PENDING:
                # Claimed before but never acknowledged (a failed or concurrent attempt).
                to_publish.append(p)
                verdict[eid] = Outcome.ACCEPTED
            else:
                verdict[eid] = Outcome.DUPLICATE

        if to_publish:
            await publish_many(
                self._producer,
                [
                    Record(
                        self._topic,
                        p.envelope.customer_id.encode(),
                        p.envelope.to_json(),
                        (("event_type", p.envelope.event_type.value.encode()),),
                    )
                    for p in to_publish
                ],
                timeout=self._timeout,
            )
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(idempotency_keys)
                    .where(
                        idempotency_keys.c.event_id.in_([p.envelope.event_id for p in to_publish])
                    )
                    .values(state=PUBLISHED)
                )

        return [
            _repeat_outcome(verdict[p.envelope.event_id], batch[repeats[i]], p)
            if i in repeats
            else verdict[p.envelope.event_id]
            for i, p in enumerate(batch)
        ]

    async def prune(self, retention: timedelta) -> int:
        """Forget idempotency keys older than ``retention``; returns how many."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.created_at < datetime.now(UTC) - retention
                )
            )
        return int(result.rowcount)


def _repeat_outcome(first: Outcome, first_item: Prepared, repeat: Prepared) -> Outcome:
    """A repeat inside one batch is judged against its first occurrence."""
    if first_item.payload_hash != repeat.payload_hash or first is Outcome.CONFLICT:
        return Outcome.CONFLICT
    return Outcome.DUPLICATE
