"""Turning validated input into published events, exactly once as far as a client can tell.

For a batch: claim every event id in one statement (new ids are claimed ``pending``), look up
the ids that were already there, publish what is new or still pending, wait for the broker's
acknowledgement, then mark those ids ``published``. A crash or broker failure anywhere leaves
ids ``pending``, so the client's retry publishes again; consumers drop the repeat by event id.

Requests that arrive while another's events are on their way are taken together, as one
batch (:meth:`Intake.accept`): a shop posting its orders one by one costs a claim, a resolve,
a publish and a mark per group of requests, not per order, and a request alone is not kept
waiting for company. A group that fails for a reason other than an unreachable broker or
database is tried again request by request, so one request's bad data fails only itself.
Groups take turns, so the intake is the one publisher of whole record batches to the events
topic in its process (:func:`shared.kafka.publish_alone`).

A key is remembered for ``TEND_EVENT_ID_RETENTION_DAYS`` from when its event was received (the
envelope's ``received_at``), the consumers' inboxes for a day less
(:func:`shared.settings.inbox_retention`): an id ingest takes for new is new to every consumer
too, never answered 202 and then dropped. A key past its retention counts as absent even before
the hourly prune removes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.identity import Carried, IdentifierKey, IdentityMap, map_key
from services.ingest.models import PENDING, PUBLISHED
from services.ingest.schemas import MAX_IDENTIFIERS, CustomerIn, IngestItem
from services.ingest.settings import phone_region
from shared.db import unreachable
from shared.events import SCHEMA_VERSION, EventType
from shared.identifiers import normalise_email, normalise_phone
from shared.kafka import Producer, PublishError, Record, publish_alone
from shared.privacy import customer_digest
from shared.settings import EVENT_ID_RETENTION_DAYS

# Fixed namespace: a derived event id must be the same on every instance, forever.
_NAMESPACE = uuid.UUID("6b3f7f0e-8a57-4c59-9a3c-2f1f0e3c9d41")


# Not a stored state: the claim answers it for an event of an erased customer.
ERASED = -1

# One round trip claims the new ids and returns the ones that were already there: the final
# SELECT reads the snapshot taken before the INSERT, so it sees only pre-existing rows. A key
# past its retention is claimed again as if new (and not returned).
_CLAIM = text(
    f"""
    WITH incoming AS (
        SELECT event_id, customer_id, payload_hash, digest, occurred_at,
            CAST(received AS timestamptz) AS received_at
        FROM unnest(CAST(:ids AS text[]), CAST(:customers AS text[]),
                    CAST(:hashes AS bytea[]), CAST(:digests AS text[]),
                    CAST(:occurred AS text[]), CAST(:received AS text[]))
            AS t(event_id, customer_id, payload_hash, digest, occurred_at, received)
    ), erased AS (
        -- Events from before their customer's erasure: refused, and not even remembered.
        SELECT i.event_id FROM incoming AS i
        JOIN ingest.erasures AS e ON e.customer_digest = i.digest
        WHERE CAST(i.occurred_at AS timestamptz) <= e.erased_at
    ), claimed AS (
        INSERT INTO ingest.idempotency_keys AS k
            (event_id, customer_id, payload_hash, state, created_at)
        SELECT event_id, customer_id, payload_hash, {PENDING}, received_at FROM incoming
        WHERE event_id NOT IN (SELECT event_id FROM erased)
        ON CONFLICT (event_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
            payload_hash = EXCLUDED.payload_hash, state = {PENDING},
            created_at = EXCLUDED.created_at
        WHERE k.created_at < EXCLUDED.created_at - make_interval(days => :retention_days)
    )
    SELECT k.event_id, k.payload_hash, k.state
    FROM ingest.idempotency_keys AS k JOIN incoming AS i USING (event_id)
    WHERE k.created_at >= i.received_at - make_interval(days => :retention_days)
    UNION ALL
    SELECT event_id, NULL, {ERASED} FROM erased
    """
)
# A key's time is the latest received_at the broker acknowledged for it (a pending key
# published on a later retry): no consumer's inbox holds the id from a later time than that.
# For a first attempt the time is unchanged, so no indexed column changes and the row may be
# updated in place (HOT), but only while its page has room: pages are filled to 90%, so in a
# batch of fresh keys about one in eight is; the others write a new version and index entries.
# Half-full pages would make every update HOT (the update 40–55% cheaper, measured) at the
# price of keys kept 400 days taking nearly twice the pages.
_MARK_PUBLISHED = text(
    f"""
    UPDATE ingest.idempotency_keys AS k
    SET state = {PUBLISHED}, created_at = greatest(k.created_at, CAST(t.received AS timestamptz))
    FROM unnest(CAST(:ids AS text[]), CAST(:received AS text[])) AS t(event_id, received)
    WHERE k.event_id = t.event_id
    """
)
_PRUNE = text(
    "DELETE FROM ingest.idempotency_keys "
    "WHERE created_at < now() - make_interval(days => :retention_days)"
)


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    ERASED = "erased"  # from before its customer's erasure: refused


@dataclass(frozen=True, slots=True)
class Prepared:
    """An event ready to publish: its identity, the hash of what the client sent, and the
    envelope as it goes on the wire (the :class:`shared.events.Envelope` contract)."""

    event_id: str
    event_type: EventType
    customer_id: str
    payload_hash: str
    value: bytes
    occurred_at: str  # ISO 8601, as in the envelope
    received_at: str  # ISO 8601, as in the envelope
    # The identifiers the event carries, as the identity map keys them, and whether verified.
    identifiers: tuple[tuple[IdentifierKey, bool], ...] = ()

    @property
    def stored_hash(self) -> bytes:
        """The payload hash as its key keeps it: the first 128 bits (a conflict is the
        client's own payloads differing, so half of SHA-256 is plenty, and 400 days of keys
        stay small)."""
        return bytes.fromhex(self.payload_hash[:32])

    def addressed(self, survivor: str) -> Prepared:
        """The event as published under ``survivor``, the customer its own was merged into;
        ``addressed_to`` keeps the id the backend sent."""
        envelope = orjson.loads(self.value)
        envelope["customer_id"] = survivor
        envelope["addressed_to"] = self.customer_id
        return dataclasses.replace(self, customer_id=survivor, value=orjson.dumps(envelope))


# A UUID's RFC 4122 variant digit, by the hex digit of the hash it stands in for.
_VARIANT = {c: "89ab"[int(c, 16) & 0x3] for c in "0123456789abcdef"}


def derived_event_id(name: str) -> str:
    """``str(uuid.uuid5(_NAMESPACE, name))``, without building UUID objects (a hot path)."""
    h = hashlib.sha1(_NAMESPACE.bytes + name.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


# What an input item holds beside the event's payload: its id and, in a batch, its kind.
_NOT_SENT = {"event_id", "type"}
_HEADERS = {t: (("event_type", t.encode()),) for t in EventType}


def prepare(
    item: IngestItem, *, header_key: str | None, source: str, received_at: datetime
) -> Prepared:
    """The wire envelope of a validated input item, with its event id and payload hash."""
    return _prepare(item, header_key, source, received_at.isoformat())


def prepare_batch(
    items: Sequence[IngestItem], *, source: str, received_at: datetime
) -> list[Prepared]:
    """:func:`prepare` for every item of a batch (each names its own event id, if any)."""
    received = received_at.isoformat()
    return [_prepare(item, None, source, received) for item in items]


def _prepare(item: IngestItem, header_key: str | None, source: str, received: str) -> Prepared:
    # The envelope is written straight from the item's JSON form: the item was validated
    # once already, and building pydantic models again would double the cost of every event.
    sent = item.model_dump(mode="json", exclude=_NOT_SENT)
    if isinstance(item, CustomerIn) and "occurred_at" not in item.model_fields_set:
        # Defaulted to the arrival time: a blind retry must still match.
        sent.pop("occurred_at", None)
    # Identifiers travel beside the payload, not in it.
    identifiers: list[dict[str, Any]] = sent.pop("identifiers", None) or []
    # The hash is of the sorted JSON of what was sent, the form stored with every key since
    # the first release: changing it would turn retries of older events into conflicts (so
    # an event without identifiers hashes as before they existed).
    hashed = {**sent, "identifiers": identifiers} if identifiers else sent
    payload_hash = hashlib.sha256(orjson.dumps(hashed, option=orjson.OPT_SORT_KEYS)).hexdigest()
    if isinstance(item, CustomerIn):
        identifiers = _with_profile_contacts(item, identifiers)
    event_type = item.event_type()
    event_id = item.event_id or header_key
    if event_id is None:
        natural = item.natural_id() or payload_hash
        event_id = derived_event_id(f"{event_type}:{item.customer_id}:{natural}")
    customer_id = sent.pop("customer_id")
    occurred = sent.pop("occurred_at", received)
    envelope = {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "customer_id": customer_id,
        "occurred_at": occurred,
        "received_at": received,
        "source": source,
        "data": sent,
    }
    if not identifiers:
        value = orjson.dumps(envelope)
        return Prepared(event_id, event_type, customer_id, payload_hash, value, occurred, received)
    envelope["identifiers"] = identifiers
    carried = tuple(
        (map_key(i["kind"], i["source"], i["value"]), bool(i["verified"])) for i in identifiers
    )
    value = orjson.dumps(envelope)
    return Prepared(
        event_id, event_type, customer_id, payload_hash, value, occurred, received, carried
    )


def _with_profile_contacts(
    item: CustomerIn, identifiers: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A profile's email and phone count as identifiers of the customer (unverified, unless
    the event also lists them verified). A phone that is no possible number stays a profile
    field only, as it was before identifiers existed."""
    have = {(i["kind"], i["value"]) for i in identifiers}
    more = []
    if item.email is not None:
        more.append(("email", normalise_email(item.email)))
    if item.phone is not None:
        e164 = normalise_phone(item.phone, phone_region())
        if e164 is not None:
            more.append(("phone", e164))
    added = [
        {"kind": kind, "value": value, "source": None, "verified": False}
        for kind, value in more
        if (kind, value) not in have
    ]
    # An envelope carries at most 20 identifiers: the profile's own fields still travel in
    # its data when a client already sent that many.
    return (identifiers + added)[:MAX_IDENTIFIERS] if added else identifiers


# At most this many events go in one group of requests (a few full batches).
GROUP_EVENTS = 5000

# A request waiting its turn, and where its outcomes (or its failure) go.
_Waiting = tuple[Sequence[Prepared], "asyncio.Future[list[Outcome]]"]


class Intake:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: Producer,
        topic: str,
        publish_timeout: float,
        identities: IdentityMap,
        retention_days: int = EVENT_ID_RETENTION_DAYS,
    ) -> None:
        """``retention_days``: how long a key is remembered (``TEND_EVENT_ID_RETENTION_DAYS``)."""
        self._retention_days = retention_days
        self._identities = identities
        self._engine = engine
        self._producer = producer
        self._topic = topic
        self._timeout = publish_timeout
        self._waiting: list[_Waiting] = []
        self._worker: asyncio.Task[None] | None = None

    async def accept(self, batch: Sequence[Prepared]) -> list[Outcome]:
        """Publish what is new; report each item's outcome in input order.

        The batch goes at once when nothing else is on its way, and otherwise with the other
        requests that arrived meanwhile, as one batch (see the module text).

        Raises :class:`shared.kafka.PublishError` when the broker does not acknowledge, and
        SQLAlchemy errors when the database is unreachable: then nothing in this call may be
        reported as accepted.
        """
        done: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, done))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._take_turns())
        return await done

    async def _take_turns(self) -> None:
        """Groups of waiting requests, one after the other, until none wait."""
        while self._waiting:
            group: list[_Waiting] = []
            events = 0
            while self._waiting and (
                not group or events + len(self._waiting[0][0]) <= GROUP_EVENTS
            ):
                group.append(self._waiting.pop(0))
                events += len(group[-1][0])
            await self._accept_group(group)

    async def _accept_group(self, group: list[_Waiting]) -> None:
        try:
            outcomes = await self._accept_batch([p for batch, _ in group for p in batch])
        except Exception as exc:
            if len(group) > 1 and not _unreachable(exc):
                # Something in one request's data, perhaps: each request on its own.
                for one in group:
                    await self._accept_group([one])
                return
            for _, done in group:
                if not done.done():
                    done.set_exception(exc)
            return
        at = 0
        for batch, done in group:
            if not done.done():  # a client that went away is not waited for
                done.set_result(outcomes[at : at + len(batch)])
            at += len(batch)

    async def _accept_batch(self, batch: Sequence[Prepared]) -> list[Outcome]:
        first_of: dict[str, int] = {}
        repeats: dict[int, int] = {}  # index of a repeat inside this batch -> its first
        for i, p in enumerate(batch):
            j = first_of.setdefault(p.event_id, i)
            if j != i:
                repeats[i] = j
        unique = [batch[i] for i in first_of.values()]
        async with self._engine.connect() as conn:
            known = {
                row.event_id: row
                for row in await conn.execute(
                    _CLAIM,
                    {
                        "ids": [p.event_id for p in unique],
                        "customers": [p.customer_id for p in unique],
                        "hashes": [p.stored_hash for p in unique],
                        "digests": [customer_digest(p.customer_id) for p in unique],
                        "occurred": [p.occurred_at for p in unique],
                        "received": [p.received_at for p in unique],
                        "retention_days": self._retention_days,
                    },
                )
            }

        to_publish: list[Prepared] = []
        verdict: dict[str, Outcome] = {}
        for p in unique:
            eid = p.event_id
            row = known.get(eid)
            if row is None:
                to_publish.append(p)
                verdict[eid] = Outcome.ACCEPTED
            elif row.state == ERASED:
                verdict[eid] = Outcome.ERASED
            elif row.payload_hash != p.stored_hash:
                verdict[eid] = Outcome.CONFLICT
            elif row.state == PENDING:
                # Claimed before but never acknowledged (a failed or concurrent attempt).
                to_publish.append(p)
                verdict[eid] = Outcome.ACCEPTED
            else:
                verdict[eid] = Outcome.DUPLICATE

        if to_publish:
            to_publish = await self._resolved(to_publish)
            # Groups take turns (one publishes at a time), so a group hands the producer
            # whole record batches, one per partition (publish_alone): a per-record send costs
            # three times the CPU, which a request of 500 events pays 500 times.
            await publish_alone(
                self._producer,
                [
                    Record(self._topic, p.customer_id.encode(), p.value, _HEADERS[p.event_type])
                    for p in to_publish
                ],
                timeout=self._timeout,
            )
            async with self._engine.connect() as conn:
                await conn.execute(
                    _MARK_PUBLISHED,
                    {
                        "ids": [p.event_id for p in to_publish],
                        "received": [p.received_at for p in to_publish],
                    },
                )

        return [
            _repeat_outcome(verdict[p.event_id], batch[repeats[i]], p)
            if i in repeats
            else verdict[p.event_id]
            for i, p in enumerate(batch)
        ]

    async def _resolved(self, batch: list[Prepared]) -> list[Prepared]:
        """The batch as published: each event under its customer's survivor, after any
        automatic merge its identifiers make (published first, under the survivor's key)."""
        carried = [
            Carried(p.customer_id, key, verified) for p in batch for key, verified in p.identifiers
        ]
        resolution = await self._identities.resolve(
            [p.customer_id for p in batch], carried, datetime.fromisoformat(batch[0].received_at)
        )
        survivors = resolution.survivors
        return [
            p
            if survivors.get(p.customer_id, p.customer_id) == p.customer_id
            else p.addressed(survivors[p.customer_id])
            for p in batch
        ]

    async def prune(self) -> int:
        """Forget idempotency keys past their retention; returns how many."""
        async with self._engine.connect() as conn:
            result = await conn.execute(_PRUNE, {"retention_days": self._retention_days})
        return int(result.rowcount)


def _unreachable(exc: BaseException) -> bool:
    """The broker or the database could not be reached: every request of the group fails as
    it would have alone."""
    return isinstance(exc, PublishError) or unreachable(exc)


def _repeat_outcome(first: Outcome, first_item: Prepared, repeat: Prepared) -> Outcome:
    """A repeat inside one batch is judged against its first occurrence."""
    if first is Outcome.ERASED:
        return first
    if first_item.payload_hash != repeat.payload_hash or first is Outcome.CONFLICT:
        return Outcome.CONFLICT
    return Outcome.DUPLICATE
