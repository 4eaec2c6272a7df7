"""The events outbox: facts outreach learned about customers, written in the transaction
that learned them, and published to ``crm.customer-events.v1`` by a relay
(:class:`shared.outbox.OutboxRelay`), so scoring learns them the way it learns every fact."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import Envelope

TABLE = "outreach.events_outbox"
_ADD = text(f"INSERT INTO {TABLE} (customer_id, payload, created_at) VALUES (:c, :p, now())")
# In the given order (the relay publishes by id, and a customer's events keep their order).
_ADD_MANY = text(
    f"""
    INSERT INTO {TABLE} (customer_id, payload, created_at)
    SELECT c, p, now()
    FROM unnest(CAST(:c AS text[]), CAST(:p AS bytea[])) WITH ORDINALITY AS t(c, p, n)
    ORDER BY n
    """
)


async def add(conn: AsyncConnection, event: Envelope) -> None:
    """Put ``event`` on the outbox, to be published once ``conn``'s transaction commits."""
    await conn.execute(_ADD, {"c": event.customer_id, "p": event.to_json()})


async def add_many(conn: AsyncConnection, events: Sequence[Envelope]) -> None:
    """Put ``events`` on the outbox in one statement, in their order."""
    if not events:
        return
    await conn.execute(
        _ADD_MANY, {"c": [e.customer_id for e in events], "p": [e.to_json() for e in events]}
    )
