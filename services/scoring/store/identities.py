"""The SQL of identities: which ids were merged into which survivor, the events forwarded to
survivors, each customer's identifiers, and the duplicates report.

Every batch registers (and so locks) its customers' ids in ``customer_ids`` before anything
else, in id order, and a merge does the same for the ids it merges: an event for an id being
merged waits for the merge to commit and then finds the id an alias (and forwards the event),
whether or not scoring had seen the id before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring.core.identities import Ident
from shared.privacy import customer_digest

_REGISTER = text(
    """
    INSERT INTO scoring.customer_ids AS k (customer_id)
    SELECT id FROM unnest(CAST(:ids AS text[])) AS id ORDER BY id
    ON CONFLICT (customer_id) DO UPDATE SET survivor_id = k.survivor_id WHERE false
    """
)
_SURVIVORS = text(
    """
    SELECT customer_id, survivor_id FROM scoring.customer_ids
    WHERE customer_id = ANY(CAST(:ids AS text[])) AND survivor_id IS NOT NULL
    """
)


async def register(conn: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, str]:
    """Record these ids, locked until the transaction ends (an id being merged meanwhile is
    waited for); returns the survivor of each that is an alias."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    # ON CONFLICT DO UPDATE locks the rows it does not update too: a merge holding one makes
    # this wait, and the read below then sees what the merge committed.
    await conn.execute(_REGISTER, {"ids": ids})
    rows = await conn.execute(_SURVIVORS, {"ids": ids})
    return {r.customer_id: r.survivor_id for r in rows}


_UNREGISTER = text(
    """
    DELETE FROM scoring.customer_ids
    WHERE customer_id = ANY(CAST(:ids AS text[])) AND survivor_id IS NULL
        AND NOT EXISTS (SELECT 1 FROM scoring.customers AS c
                        WHERE c.customer_id = customer_ids.customer_id)
    """
)


async def unregister(conn: AsyncConnection, customer_ids: Iterable[str]) -> None:
    """Forget these ids where they are neither a customer nor an alias (their events were
    dropped: an erased customer's)."""
    ids = sorted(set(customer_ids))
    if ids:
        await conn.execute(_UNREGISTER, {"ids": ids})


_ALIAS = text(
    """
    UPDATE scoring.customer_ids SET survivor_id = :survivor, merged_by = :event_id
    WHERE customer_id = ANY(CAST(:ids AS text[])) OR survivor_id = ANY(CAST(:ids AS text[]))
    """
)
_MOVE = (
    text("DELETE FROM scoring.customers WHERE customer_id = ANY(CAST(:ids AS text[]))"),
    text("DELETE FROM scoring.complaints WHERE customer_id = ANY(CAST(:ids AS text[]))"),
    text("DELETE FROM scoring.order_facts WHERE customer_id = ANY(CAST(:ids AS text[]))"),
    text("DELETE FROM scoring.stage_history WHERE customer_id = ANY(CAST(:ids AS text[]))"),
    text(
        "UPDATE scoring.inbox SET customer_id = :survivor "
        "WHERE customer_id = ANY(CAST(:ids AS text[]))"
    ),
    text(
        """
        INSERT INTO scoring.identifiers (customer_id, kind, source, value)
        SELECT :survivor, kind, source, value FROM scoring.identifiers
        WHERE customer_id = ANY(CAST(:ids AS text[]))
        ON CONFLICT DO NOTHING
        """
    ),
    text("DELETE FROM scoring.identifiers WHERE customer_id = ANY(CAST(:ids AS text[]))"),
)


async def merge(conn: AsyncConnection, survivor: str, merged: Sequence[str], event_id: str) -> None:
    """Make ``merged`` (and their own aliases) aliases of ``survivor``, and hand their rows
    to it: their stored figures, complaints, orders and stage history go (the survivor's are
    written from the folded facts), their applied events and identifiers become the
    survivor's."""
    if not merged:
        return
    params = {"survivor": survivor, "ids": sorted(set(merged)), "event_id": event_id}
    await conn.execute(_ALIAS, params)
    for statement in _MOVE:
        await conn.execute(statement, params)


_REKEY_INBOX = text(
    """
    UPDATE scoring.inbox AS i SET customer_id = t.s,
        forwarded_to = CASE WHEN t.f THEN t.s END
    FROM unnest(CAST(:ids AS text[]), CAST(:survivors AS text[]), CAST(:forwarded AS bool[]))
        AS t(e, s, f)
    WHERE i.event_id = t.e
    """
)
_ADD_FORWARDS = text(
    """
    INSERT INTO scoring.forwards (customer_id, payload, created_at)
    SELECT c, p, now() FROM unnest(CAST(:customers AS text[]), CAST(:payloads AS bytea[]))
        AS t(c, p)
    """
)


@dataclass(frozen=True, slots=True)
class Redirected:
    """An event that came under a merged id: now the survivor's; ``payload`` is its
    forwarded copy for the events topic (None when applied to the survivor directly)."""

    event_id: str
    survivor: str
    payload: bytes | None


async def redirect(conn: AsyncConnection, redirected: Sequence[Redirected]) -> None:
    """File these events' inbox rows under the survivor (a forwarded one waits for its copy)
    and queue the forwarded copies."""
    if not redirected:
        return
    await conn.execute(
        _REKEY_INBOX,
        {
            "ids": [r.event_id for r in redirected],
            "survivors": [r.survivor for r in redirected],
            "forwarded": [r.payload is not None for r in redirected],
        },
    )
    sent = [r for r in redirected if r.payload is not None]
    if sent:
        await conn.execute(
            _ADD_FORWARDS,
            {"customers": [r.survivor for r in sent], "payloads": [r.payload for r in sent]},
        )


_ADD_IDENTIFIERS = text(
    """
    INSERT INTO scoring.identifiers (customer_id, kind, source, value)
    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:kinds AS text[]),
        CAST(:sources AS text[]), CAST(:values AS text[]))
    ON CONFLICT DO NOTHING
    """
)


async def add_identifiers(conn: AsyncConnection, rows: Iterable[tuple[str, Ident]]) -> None:
    """Remember these ``(customer, identifier)`` (an identifier once known stays known)."""
    found = sorted(set(rows))
    if found:
        await conn.execute(
            _ADD_IDENTIFIERS,
            {
                "ids": [c for c, _ in found],
                "kinds": [i.kind for _, i in found],
                "sources": [i.source for _, i in found],
                "values": [i.value for _, i in found],
            },
        )


_ALIASES_OF = text("SELECT customer_id FROM scoring.customer_ids WHERE survivor_id = :id")
_FORGET = (
    text("DELETE FROM scoring.customer_ids WHERE customer_id = :id OR survivor_id = :id"),
    text("DELETE FROM scoring.identifiers WHERE customer_id = :id"),
    text("DELETE FROM scoring.forwards WHERE customer_id = :id"),
)
# An alias is erased with its survivor: events from before the erasure under it are dropped
# too. Its spend and orders are the survivor's, registered once, under the survivor.
_REGISTER_ERASED = text(
    """
    INSERT INTO scoring.erasures AS e (customer_digest, erased_at, event_id, lifetime_spend,
        orders)
    SELECT d, :at, :event_id, 0, 0 FROM unnest(CAST(:digests AS text[])) AS d
    ON CONFLICT (customer_digest) DO UPDATE SET
        erased_at = greatest(e.erased_at, EXCLUDED.erased_at), event_id = EXCLUDED.event_id
    """
)


async def forget(conn: AsyncConnection, survivor: str, event_id: str, at: datetime) -> list[str]:
    """Forget a customer's aliases, identifiers and forwarded events not yet sent, and
    register each alias as erased at ``at``; returns the aliases."""
    aliases = sorted((await conn.execute(_ALIASES_OF, {"id": survivor})).scalars())
    for statement in _FORGET:
        await conn.execute(statement, {"id": survivor})
    if aliases:
        await conn.execute(
            _REGISTER_ERASED,
            {
                "digests": [customer_digest(a) for a in aliases],
                "at": at,
                "event_id": event_id,
            },
        )
    return aliases


async def empty(conn: AsyncConnection) -> None:
    """Forget every alias and identifier (a rebuild derives them again from the events)."""
    await conn.execute(text("TRUNCATE scoring.customer_ids, scoring.identifiers"))


# -- reads -------------------------------------------------------------------------------------

_SURVIVOR_OF = text(
    "SELECT survivor_id FROM scoring.customer_ids "
    "WHERE customer_id = :id AND survivor_id IS NOT NULL"
)


async def survivor_of(engine: AsyncEngine, customer_id: str) -> str | None:
    """The customer ``customer_id`` was merged into; None when it is not an alias."""
    async with engine.connect() as conn:
        found: str | None = await conn.scalar(_SURVIVOR_OF, {"id": customer_id})
    return found


# -- the duplicates report ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LikelyPair:
    """Two customers who share at least one email or phone (``shared``: ``(kind, value)``)."""

    first_id: str
    second_id: str
    first_name: str | None
    second_name: str | None
    shared: list[tuple[str, str]]


_PAIRS = """
    WITH pairs AS (
        SELECT a.customer_id AS first_id, b.customer_id AS second_id,
            array_agg(a.kind || ' ' || a.value ORDER BY a.kind, a.value) AS shared
        FROM scoring.identifiers AS a
        JOIN scoring.identifiers AS b ON b.kind = a.kind AND b.source = a.source
            AND b.value = a.value AND b.customer_id > a.customer_id
        WHERE a.kind IN ('email', 'phone') {after}
        GROUP BY 1, 2
    )
    SELECT p.first_id, p.second_id, p.shared, f.name AS first_name, s.name AS second_name
    FROM pairs AS p
    JOIN scoring.customers AS f ON f.customer_id = p.first_id
    JOIN scoring.customers AS s ON s.customer_id = p.second_id
    WHERE NOT EXISTS (SELECT 1 FROM scoring.duplicate_dismissals AS d
                      WHERE d.first_id = p.first_id AND d.second_id = p.second_id)
    ORDER BY 1, 2
    LIMIT :n
    """
_AFTER = "AND (a.customer_id, b.customer_id) > (:after_first, :after_second)"


async def likely_pairs(
    engine: AsyncEngine, after: tuple[str, str] | None, limit: int
) -> tuple[list[LikelyPair], tuple[str, str] | None]:
    """Up to ``limit`` pairs of customers sharing an email or a phone, not dismissed, in id
    order after ``after``; and where the page ended when more follow."""
    sql = text(_PAIRS.format(after=_AFTER if after else ""))
    params: dict[str, object] = {"n": limit + 1}
    if after:
        params |= {"after_first": after[0], "after_second": after[1]}
    async with engine.connect() as conn:
        rows = (await conn.execute(sql, params)).all()
    pairs = [
        LikelyPair(
            r.first_id,
            r.second_id,
            r.first_name,
            r.second_name,
            [(kind, value) for kind, value in (item.split(" ", 1) for item in r.shared)],
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return pairs, (pairs[-1].first_id, pairs[-1].second_id) if more else None


_DISMISS = text(
    """
    INSERT INTO scoring.duplicate_dismissals (first_id, second_id, dismissed_at)
    VALUES (:first, :second, now())
    ON CONFLICT DO NOTHING
    """
)


async def dismiss(conn: AsyncConnection, first_id: str, second_id: str) -> bool:
    """Hide the pair (ids in order) from the report; False when it was hidden already."""
    result = await conn.execute(_DISMISS, {"first": first_id, "second": second_id})
    return bool(result.rowcount)
