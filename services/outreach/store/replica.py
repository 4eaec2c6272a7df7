"""The card replica: each customer's latest card as scoring published it, the row a decision
for the customer locks, and the audience previews and broadcasts scan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.rules import Episode
from shared.changes import Change

# Replica rows per fetch of the server-side cursor.
CHUNK = 500

# Newer changes win; an older change arriving late never overwrites a newer card.
_SAVE = text(
    """
    INSERT INTO outreach.cards AS k (customer_id, card, complaint_open, change_at)
    SELECT c, d, o, a
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(c text, d jsonb, o boolean, a timestamptz)
    ON CONFLICT (customer_id) DO UPDATE SET card = EXCLUDED.card,
        complaint_open = EXCLUDED.complaint_open, change_at = EXCLUDED.change_at
    WHERE k.change_at <= EXCLUDED.change_at
    """
)
_LOCK = text(
    "SELECT customer_id FROM outreach.cards WHERE customer_id = ANY(CAST(:ids AS text[])) "
    "ORDER BY customer_id FOR UPDATE"
)
_CARD = text("SELECT card FROM outreach.cards WHERE customer_id = :c")
_EPISODES = text(
    "SELECT customer_id, card->>'stage' AS stage, card->>'stage_since' AS stage_since, "
    "card->>'previous_stage' AS previous_stage "
    "FROM outreach.cards WHERE customer_id = ANY(CAST(:ids AS text[]))"
)
_CARDS = text(
    "SELECT customer_id, card FROM outreach.cards WHERE customer_id = ANY(CAST(:ids AS text[]))"
)
# What the contact policy is judged on again just before delivery, for a whole pick at once:
# each customer's card (NULL when the replica has none) and whether they are suppressed.
_POLICY_STATE = text(
    """
    SELECT t.c AS customer_id, k.card,
        EXISTS (SELECT 1 FROM outreach.suppressions AS s WHERE s.customer_id = t.c)
            AS suppressed
    FROM unnest(CAST(:ids AS text[])) AS t(c)
    LEFT JOIN outreach.cards AS k ON k.customer_id = t.c
    """
)
# Share-locked, not waited for: a row a consumer batch is writing now is left out.
_STILL_COMPLAINING = text(
    "SELECT customer_id FROM outreach.cards WHERE customer_id = ANY(CAST(:ids AS text[])) "
    "AND complaint_open ORDER BY customer_id FOR SHARE SKIP LOCKED"
)
_AFTER = text(
    "SELECT customer_id, card FROM outreach.cards WHERE customer_id > :after "
    "ORDER BY customer_id LIMIT :n"
)


async def save_cards(conn: AsyncConnection, latest: Mapping[str, Change]) -> None:
    """Write each customer's card from their latest change (by customer id). The rows are
    written, and so row-locked until the transaction ends, in key order, like
    :func:`lock_customers`: two transactions saving the same customers never deadlock."""
    # The batch's rows as one JSON document (the cards inside it as they are), one parameter
    # for the driver rather than four arrays it walks item by item.
    rows = [
        {
            "c": cid,
            "d": (change := latest[cid]).card,
            "o": bool((change.card.get("complaints") or {}).get("open")),
            "a": change.at,
        }
        for cid in sorted(latest)
    ]
    await conn.execute(_SAVE, {"rows": orjson.dumps(rows).decode()})


async def episodes_of(conn: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, Episode]:
    """The stage episode each of these customers' stored card is in (those the replica has)."""
    rows = await conn.execute(_EPISODES, {"ids": sorted(set(customer_ids))})
    return {r.customer_id: Episode.of(dict(r._mapping)) for r in rows}


async def lock_customers(conn: AsyncConnection, customer_ids: Sequence[str]) -> None:
    """Lock the customers' replica rows, in key order: the decision path's lock."""
    await conn.execute(_LOCK, {"ids": sorted(set(customer_ids))})


async def card_of(conn: AsyncConnection, customer_id: str) -> Any:
    """The customer's card, or None when the replica has none."""
    return await conn.scalar(_CARD, {"c": customer_id})


async def cards_of(conn: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, Any]:
    """The card of each of these customers that the replica has."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = await conn.execute(_CARDS, {"ids": ids})
    return {r.customer_id: r.card for r in rows}


async def policy_state(
    conn: AsyncConnection, customer_ids: Sequence[str]
) -> dict[str, tuple[Any, bool]]:
    """For each customer, in one statement: (card or None, on the suppression list)."""
    rows = await conn.execute(_POLICY_STATE, {"ids": sorted(set(customer_ids))})
    return {r.customer_id: (r.card, bool(r.suppressed)) for r in rows}


async def complaints_still_open(conn: AsyncConnection, customer_ids: Sequence[str]) -> set[str]:
    """Which of these customers' cards, as last committed, show an open complaint, their
    replica rows share-locked until the transaction ends (so a batch that closes the complaint
    waits for it, and then sees what it wrote). A row being written by a batch right now is
    skipped, not waited for: its customer is not in the answer."""
    rows = await conn.execute(_STILL_COMPLAINING, {"ids": sorted(set(customer_ids))})
    return set(rows.scalars())


async def cards_after(conn: AsyncConnection, after: str, limit: int) -> Sequence[Row[Any]]:
    """Up to ``limit`` replica rows (``customer_id``, ``card``) after customer id ``after``."""
    return (await conn.execute(_AFTER, {"after": after, "n": limit})).all()


async def replica_chunks(
    conn: AsyncConnection, *, stages: Sequence[str] | None = None, size: int = CHUNK
) -> AsyncIterator[Sequence[Row[Any]]]:
    """The card replica in customer id order, ``size`` rows at a time through a server-side
    cursor (rows have ``customer_id`` and ``card``); only ``stages`` when given."""
    where = "WHERE card->>'stage' = ANY(CAST(:stages AS text[]))" if stages else ""
    query = text(f"SELECT customer_id, card FROM outreach.cards {where} ORDER BY customer_id")
    result = await conn.stream(
        query.execution_options(yield_per=size), {"stages": list(stages or ())}
    )
    async for rows in result.partitions(size):
        yield rows
