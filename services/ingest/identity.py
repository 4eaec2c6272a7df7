"""The identity map: which customer id each event is published under, and merges.

Ingest keeps one piece of customer state: for every customer id it has seen, the survivor its
events go under (itself until merged), and for every identifier (an email, a phone, an
external id per source) the customer that first carried it. Every incoming batch is resolved
in one statement that also records the batch's new customers and identifiers.

A merge — asked for by an operator, or automatic when an event carries a verified identifier
that belongs to another customer and ``TEND_INGEST_AUTO_MERGE`` allows its kind — is a
``customer.merged`` event under the survivor's key. It is made under a transaction-level
advisory lock, re-reading the map first, so two requests racing to merge the same customers
make one merge; the map changes only if the broker acknowledged the event. Chains are
flattened as they form: when Y (survivor of X) is merged into Z, X's row is moved to Z too,
and the event's ``merged_ids`` name X beside Y.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.audit import Actor, record
from shared.events import Envelope, EventType, MergeData
from shared.kafka import Producer, Record, publish_many
from shared.logging import get_logger
from shared.privacy import customer_digest

log = get_logger(__name__)

# One lock for every merge: merges are rare, and one lock cannot deadlock.
_MERGE_LOCK = 0x7E9D_1D  # an arbitrary constant, the same on every instance
MAX_MERGED = 100  # MergeData.merged_ids' bound

# A (kind, source, value) identifier as the map keys it; source is '' for emails and phones.
IdentifierKey = tuple[str, str, str]


def map_key(kind: str, source: str | None, value: str) -> IdentifierKey:
    return (kind, source or "" if kind == "external" else "", value)


_RESOLVE = text(
    """
    WITH seen AS (
        SELECT DISTINCT customer_id FROM unnest(CAST(:customers AS text[])) AS t(customer_id)
    ), known AS (
        SELECT i.customer_id, i.survivor_id FROM ingest.identities AS i
        JOIN seen USING (customer_id)
    ), new_customers AS (
        -- Only the ids not found are inserted: a conflict check costs more than the lookup.
        INSERT INTO ingest.identities (customer_id, survivor_id, first_seen)
        SELECT customer_id, customer_id, CAST(:now AS timestamptz) FROM seen
        WHERE customer_id NOT IN (SELECT customer_id FROM known)
        ON CONFLICT (customer_id) DO NOTHING
    ), sent AS (
        SELECT DISTINCT ON (kind, source, value) customer_id, kind, source, value, verified
        FROM unnest(CAST(:id_customers AS text[]), CAST(:kinds AS text[]),
                    CAST(:sources AS text[]), CAST(:values AS text[]),
                    CAST(:verified AS boolean[]))
            AS t(customer_id, kind, source, value, verified)
        ORDER BY kind, source, value, verified DESC
    ), new_identifiers AS (
        -- The first customer to carry an identifier keeps it; the same customer vouching
        -- for it later marks it verified.
        INSERT INTO ingest.identifiers AS x
            (kind, source, value, customer_id, verified, first_seen)
        SELECT kind, source, value, customer_id, verified, CAST(:now AS timestamptz) FROM sent
        ON CONFLICT (kind, source, value) DO UPDATE SET verified = true
        WHERE EXCLUDED.verified AND NOT x.verified AND x.customer_id = EXCLUDED.customer_id
    )
    SELECT customer_id, survivor_id, NULL AS kind, NULL AS source, NULL AS value FROM known
    WHERE survivor_id <> customer_id
    UNION ALL
    -- The owners (as survivors) of the identifiers that may merge automatically.
    SELECT x.customer_id, coalesce(o.survivor_id, x.customer_id), x.kind, x.source, x.value
    FROM ingest.identifiers AS x
    LEFT JOIN ingest.identities AS o ON o.customer_id = x.customer_id
    WHERE (x.kind, x.source, x.value) IN (
        SELECT kind, source, value FROM unnest(CAST(:auto_kinds AS text[]),
            CAST(:auto_sources AS text[]), CAST(:auto_values AS text[]))
            AS a(kind, source, value)
    )
    """
)
_LOCK = text("SELECT pg_advisory_xact_lock(:lock)")
_ROWS = text(
    """
    SELECT customer_id, survivor_id, first_seen, merge_event_id FROM ingest.identities
    WHERE customer_id = ANY(CAST(:ids AS text[]))
    """
)
_ALIASES = text(
    """
    SELECT customer_id FROM ingest.identities
    WHERE survivor_id = ANY(CAST(:ids AS text[])) AND customer_id <> survivor_id
    ORDER BY customer_id
    """
)
_MOVE = text(
    """
    UPDATE ingest.identities SET survivor_id = :survivor, merge_event_id = :event_id,
        merged_at = :at
    WHERE customer_id = ANY(CAST(:ids AS text[]))
    """
)
_SURVIVOR_OF = text("SELECT survivor_id FROM ingest.identities WHERE customer_id = :id")
_PERSON = text(
    """
    SELECT customer_id FROM ingest.identities WHERE survivor_id = :survivor
    ORDER BY customer_id
    """
)
_IDENTIFIERS_OF = text(
    """
    SELECT kind, source, value, customer_id, verified, first_seen FROM ingest.identifiers
    WHERE customer_id = ANY(CAST(:ids AS text[])) ORDER BY first_seen, kind, source, value
    """
)
_FORGET = (
    text("DELETE FROM ingest.identifiers WHERE customer_id = ANY(CAST(:ids AS text[]))"),
    text("DELETE FROM ingest.identities WHERE customer_id = ANY(CAST(:ids AS text[]))"),
    # The audit log keeps that a merge was made, and by whom, not of whom.
    text(
        """
        UPDATE auth.audit_log SET subject = :anonymous, before = NULL, after = NULL
        WHERE subject = ANY(CAST(:ids AS text[])) AND action = 'customer.merged'
        """
    ),
)


class MergeRefused(Exception):
    """A merge that cannot be made as asked: ``status`` (404, 409, 422), why, and for which
    field."""

    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Merged:
    """A merge made (``created``) or found already made: the survivor, every id now its
    alias by this merge, and the ``customer.merged`` event's id."""

    survivor: str
    merged_ids: list[str]
    event_id: str
    created: bool


@dataclass(slots=True)
class Resolution:
    """A batch resolved: each customer id's survivor, and the merges made on the way (already
    published, in order)."""

    survivors: dict[str, str]
    merges: list[Merged] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Carried:
    """An identifier as one event carries it."""

    customer_id: str
    key: IdentifierKey
    verified: bool


class IdentityMap:
    def __init__(
        self,
        engine: AsyncEngine,
        producer: Producer,
        topic: str,
        publish_timeout: float,
        source: str,
        auto_kinds: Sequence[str] = (),
    ) -> None:
        """``auto_kinds``: the identifier kinds whose verified match merges customers
        (``TEND_INGEST_AUTO_MERGE``)."""
        self._engine = engine
        self._producer = producer
        self._topic = topic
        self._timeout = publish_timeout
        self._source = source
        self._auto_kinds = frozenset(auto_kinds)

    async def resolve(
        self, customer_ids: Sequence[str], carried: Sequence[Carried], now: datetime
    ) -> Resolution:
        """Each customer's survivor, recording new customers and identifiers (one round
        trip), after making and publishing the automatic merges the policy allows."""
        auto = [c for c in carried if c.verified and c.key[0] in self._auto_kinds]
        auto_keys = sorted({c.key for c in auto})
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    _RESOLVE,
                    {
                        "customers": list(customer_ids),
                        "now": now,
                        "id_customers": [c.customer_id for c in carried],
                        "kinds": [c.key[0] for c in carried],
                        "sources": [c.key[1] for c in carried],
                        "values": [c.key[2] for c in carried],
                        "verified": [c.verified for c in carried],
                        "auto_kinds": [k[0] for k in auto_keys],
                        "auto_sources": [k[1] for k in auto_keys],
                        "auto_values": [k[2] for k in auto_keys],
                    },
                )
            ).all()
        # The statement names only the merged ids' survivors; every other id is its own.
        survivors = {cid: cid for cid in customer_ids}
        owners: dict[IdentifierKey, str] = {}
        for row in rows:
            if row.kind is None:
                survivors[row.customer_id] = row.survivor_id
            else:
                owners[(row.kind, row.source, row.value)] = row.survivor_id
        resolution = Resolution(survivors)
        if not auto:
            return resolution
        for group, key in _groups(auto, owners, survivors):
            try:
                merged = await self._auto_merge(group, key, now)
            except MergeRefused as exc:
                # More ids than one merge event names: left for an operator to look at.
                log.warning("auto_merge_refused", reason=exc.message, kind=key[0])
                continue
            if merged.created:
                resolution.merges.append(merged)
                log.info("customers_merged_automatically", merge_event_id=merged.event_id)
            for cid, survivor in survivors.items():
                if survivor in merged.merged_ids:
                    survivors[cid] = merged.survivor
        return resolution

    async def _auto_merge(self, group: set[str], key: IdentifierKey, now: datetime) -> Merged:
        kind, source, value = key
        actor = Actor(f"auto:{kind}")
        evidence = f"verified {kind}{f' from {source}' if source else ''} shared by " + (
            f"{len(group)} customers (value digest {customer_digest(value)[:12]})"
        )
        async with self._transaction() as conn:
            rows = (await conn.execute(_ROWS, {"ids": sorted(group)})).all()
            # As the map stands under the lock: a racing request may have merged them already.
            current = {r.survivor_id for r in rows}
            firsts = (await conn.execute(_ROWS, {"ids": sorted(current)})).all()
            survivor = min(firsts, key=lambda r: (r.first_seen, r.customer_id)).customer_id
            if len(current) < 2:
                return Merged(survivor, sorted(group - {survivor}), "", created=False)
            return await self._merge_locked(
                conn, survivor, sorted(current - {survivor}), actor, evidence, now
            )

    async def merge(
        self, survivor: str, from_ids: Sequence[str], reason: str, actor: Actor
    ) -> Merged:
        """Merge ``from_ids`` into ``survivor`` as an operator asked. Raises
        :class:`MergeRefused`: 422 when the survivor is among them, 404 for an id ingest has
        never seen, 409 when the survivor is itself merged into another customer (refused,
        naming that customer: merge into it instead) or an id is already merged into
        another. Ids already merged into this survivor are left as they are; when all are,
        the merge that made them is returned, not made again."""
        wanted = list(dict.fromkeys(from_ids))
        if survivor in wanted:
            raise MergeRefused(
                422,
                "a customer cannot be merged into itself",
                f"body.from.{wanted.index(survivor)}",
            )
        now = datetime.now(UTC)
        async with self._transaction() as conn:
            rows = {
                r.customer_id: r for r in await conn.execute(_ROWS, {"ids": [survivor, *wanted]})
            }
            if survivor not in rows:
                raise MergeRefused(
                    404, f"ingest has never seen customer {survivor!r}", "path.customer_id"
                )
            unknown = [i for i, cid in enumerate(wanted) if cid not in rows]
            if unknown:
                raise MergeRefused(
                    404,
                    f"ingest has never seen customer {wanted[unknown[0]]!r}",
                    f"body.from.{unknown[0]}",
                )
            if rows[survivor].survivor_id != survivor:
                raise MergeRefused(
                    409,
                    f"customer {survivor!r} is merged into {rows[survivor].survivor_id!r}: "
                    "merge into that customer instead",
                    "path.customer_id",
                )
            new: list[str] = []
            for i, cid in enumerate(wanted):
                now_under = rows[cid].survivor_id
                if now_under == cid:
                    new.append(cid)
                elif now_under != survivor:
                    raise MergeRefused(
                        409,
                        f"customer {cid!r} is already merged into {now_under!r}",
                        f"body.from.{i}",
                    )
            if not new:
                first = rows[wanted[0]]
                return Merged(survivor, wanted, str(first.merge_event_id), created=False)
            return await self._merge_locked(conn, survivor, new, actor, reason, now)

    async def _merge_locked(
        self,
        conn: AsyncConnection,
        survivor: str,
        ids: list[str],
        actor: Actor,
        reason: str,
        now: datetime,
    ) -> Merged:
        """Move ``ids`` and their own aliases to ``survivor``, audit it and publish the
        merge; the caller's transaction commits only once the broker has the event."""
        aliases = [r.customer_id for r in await conn.execute(_ALIASES, {"ids": ids})]
        merged = sorted({*ids, *aliases})
        if len(merged) > MAX_MERGED:
            raise MergeRefused(
                422, f"at most {MAX_MERGED} customer ids can be merged at once", "body.from"
            )
        event_id = f"merge-{uuid.uuid4()}"
        await conn.execute(
            _MOVE, {"survivor": survivor, "event_id": event_id, "at": now, "ids": merged}
        )
        data = MergeData(merged_ids=merged, reason=reason, actor=actor.name[:64])
        await record(
            conn,
            actor=actor,
            service="ingest",
            action="customer.merged",
            subject=survivor,
            after={"event_id": event_id, **data.model_dump(mode="json")},
        )
        envelope = Envelope(
            event_id=event_id,
            event_type=EventType.CUSTOMER_MERGED,
            customer_id=survivor,
            occurred_at=now,
            received_at=now,
            source=self._source,
            data=data,
        )
        await publish_many(
            self._producer,
            [
                Record(
                    self._topic,
                    survivor.encode(),
                    envelope.to_json(),
                    (("event_type", EventType.CUSTOMER_MERGED.encode()),),
                )
            ],
            timeout=self._timeout,
        )
        return Merged(survivor, merged, event_id, created=True)

    def _transaction(self) -> _Locked:
        return _Locked(self._engine)


async def person(engine: AsyncEngine, customer_id: str) -> tuple[str, list[str]]:
    """The survivor of ``customer_id`` and every id of that person (the survivor first)."""
    async with engine.connect() as conn:
        survivor = await conn.scalar(_SURVIVOR_OF, {"id": customer_id}) or customer_id
        ids = [r.customer_id for r in await conn.execute(_PERSON, {"survivor": survivor})]
    return survivor, [survivor, *(i for i in ids if i != survivor)]


async def held_on(engine: AsyncEngine, customer_id: str) -> dict[str, Any] | None:
    """What the map holds on the person ``customer_id`` is one of (for their export):
    their survivor, every id merged into it, and every identifier of theirs; None when
    the map does not know the id."""
    async with engine.connect() as conn:
        survivor = await conn.scalar(_SURVIVOR_OF, {"id": customer_id})
        if survivor is None:
            return None
        ids = [r.customer_id for r in await conn.execute(_PERSON, {"survivor": survivor})]
        identifiers = (await conn.execute(_IDENTIFIERS_OF, {"ids": ids})).all()
    return {
        "survivor": survivor,
        "customer_ids": ids,
        "identifiers": [
            {
                "kind": i.kind,
                "source": i.source or None,
                "value": i.value,
                "verified": i.verified,
                "customer_id": i.customer_id,
                "first_seen": i.first_seen.isoformat(),
            }
            for i in identifiers
        ],
    }


async def forget(conn: AsyncConnection, ids: Iterable[str], anonymous: str) -> None:
    """Erase these customer ids from the identity map, with their identifiers, and strip the
    audit entries of their merges of whom they were about."""
    params = {"ids": list(ids), "anonymous": anonymous}
    for statement in _FORGET:
        await conn.execute(statement, params)


class _Locked:
    """A transaction on its own connection (ingest's engine autocommits) holding the merge
    lock: commits on success, rolls back on any error."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def __aenter__(self) -> AsyncConnection:
        self._conn = await self._engine.connect()
        try:
            await self._conn.execution_options(isolation_level="READ COMMITTED")
            await self._conn.begin()
            await self._conn.execute(_LOCK, {"lock": _MERGE_LOCK})
        except BaseException:
            await self._conn.close()
            raise
        return self._conn

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                await self._conn.commit()
            else:
                await self._conn.rollback()
        finally:
            await self._conn.close()


def _groups(
    auto: Sequence[Carried], owners: dict[IdentifierKey, str], survivors: dict[str, str]
) -> list[tuple[set[str], IdentifierKey]]:
    """The sets of survivors a batch's verified identifiers join (each with the identifier
    that joined it first): an identifier's owner and every customer carrying it verified
    are one person."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    joins: list[tuple[str, IdentifierKey]] = []
    for c in auto:
        mine = survivors.get(c.customer_id, c.customer_id)
        owner = owners.get(c.key)
        if owner is None:
            # Nobody had it before this batch: the first carrier in the batch owns it.
            owners[c.key] = mine
            continue
        a, b = root(owner), root(mine)
        if a != b:
            parent[b] = a
            joins.append((a, c.key))
    groups: dict[str, set[str]] = {}
    for x in parent:
        groups.setdefault(root(x), set()).add(x)
    evidence: dict[str, IdentifierKey] = {}
    for node, key in joins:
        evidence.setdefault(root(node), key)
    return [(members, evidence[r]) for r, members in groups.items() if len(members) > 1]
