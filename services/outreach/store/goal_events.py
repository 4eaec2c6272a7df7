"""The events a goal can be reached by (``outreach.goal_events``), written by the change
consumer in its batch's transaction and read by the outcomes report.

Keyed by the event's id: a change delivered again, or a replay of the whole stream, writes
nothing new, so the table a rebuild reaches is the one it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.goals import GoalEvent

_INSERT = text(
    """
    INSERT INTO outreach.goal_events (event_id, customer_id, event_type, occurred_at, revenue,
        data)
    SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(id text, customer text,
        type text, at timestamptz, revenue numeric, data jsonb)
    ON CONFLICT (event_id) DO NOTHING
    """
)

_OF_CUSTOMERS = text(
    """
    SELECT event_id, customer_id, event_type, occurred_at, revenue, data
    FROM outreach.goal_events
    WHERE customer_id = ANY(CAST(:ids AS text[])) AND occurred_at > :since
      AND (CAST(:until AS timestamptz) IS NULL OR occurred_at <= :until)
    ORDER BY customer_id, occurred_at, event_id
    """
)


async def record(conn: AsyncConnection, events: Sequence[GoalEvent]) -> None:
    """Keep ``events`` (those already kept are left as they are), in one statement."""
    if not events:
        return
    unique = {e.event_id: e for e in events}.values()
    # One JSON document for the batch (revenue as its exact decimal text), one parameter.
    rows = [
        {
            "id": e.event_id,
            "customer": e.customer_id,
            "type": e.event_type,
            "at": e.occurred_at,
            "revenue": str(e.revenue) if e.revenue is not None else None,
            "data": e.data,
        }
        for e in unique
    ]
    await conn.execute(_INSERT, {"rows": orjson.dumps(rows).decode()})


async def of_customers(
    conn: AsyncConnection,
    customer_ids: Sequence[str],
    since: datetime,
    until: datetime | None = None,
) -> dict[str, list[GoalEvent]]:
    """These customers' goal events after ``since`` (and by ``until``, when given), each
    customer's in time order."""
    out: dict[str, list[GoalEvent]] = {}
    if not customer_ids:
        return out
    params = {"ids": list(customer_ids), "since": since, "until": until}
    rows = await conn.execute(_OF_CUSTOMERS, params)
    for r in rows:
        out.setdefault(r.customer_id, []).append(
            GoalEvent(r.event_id, r.customer_id, r.event_type, r.occurred_at, r.revenue, r.data)
        )
    return out
