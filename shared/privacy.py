"""What the services share to forget a customer.

An erased customer is remembered only by a digest of their id and the instant of the erasure,
so that events and changes from before it — a replay, a late retry — are dropped rather than
bringing the customer back, while a customer who returns afterwards starts afresh. Records
kept for aggregates (stage transitions, decided actions) are re-labelled with an anonymous id
that cannot be traced back to the customer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.changes import change_id_for


def customer_digest(customer_id: str) -> str:
    """The id an erasure registry keeps instead of the customer's own."""
    return hashlib.sha256(b"tend-erasure:" + customer_id.encode()).hexdigest()


def anonymous_id(erasure_event_id: str) -> str:
    """The label records kept for aggregates carry once their customer is erased: derived
    from the erasure's event id (so a replay labels them alike), not from the customer."""
    return "erased:" + change_id_for("anonymous", erasure_event_id)


async def erased_at(
    conn: AsyncConnection, schema: str, customer_ids: Iterable[str]
) -> dict[str, datetime]:
    """When each of these customers was erased, by the registry ``<schema>.erasures``, for
    those who were."""
    by_digest = {customer_digest(cid): cid for cid in set(customer_ids)}
    rows = await conn.execute(
        text(
            f"SELECT customer_digest, erased_at FROM {schema}.erasures "
            "WHERE customer_digest = ANY(CAST(:digests AS text[]))"
        ),
        {"digests": list(by_digest)},
    )
    return {by_digest[r.customer_digest]: r.erased_at for r in rows}
