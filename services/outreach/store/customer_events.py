"""The events outbox: facts outreach learned about customers, written in the transaction
that learned them, and published to ``crm.customer-events.v1`` by a relay
(:class:`shared.outbox.OutboxRelay`), so scoring learns them the way it learns every fact."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.events import Envelope

TABLE = "outreach.events_outbox"
_ADD = text(f"INSERT INTO {TABLE} (customer_id, payload, created_at) VALUES (:c, :p, now())")


async def add(conn: AsyncConnection, event: Envelope) -> None:
    """Put ``event`` on the outbox, to be published once ``conn``'s transaction commits."""
    await conn.execute(_ADD, {"c": event.customer_id, "p": event.to_json()})
