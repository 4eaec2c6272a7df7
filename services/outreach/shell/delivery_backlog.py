"""What waits for delivery: the actions due now (pending, their attempt time passed) and how
long the longest-waiting has been due — answered by ``GET /v1/ops/health`` and read every
``TEND_SIGNALS_INTERVAL_SECONDS`` into two gauges for the alert rules."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.pipeline_health import Backlog, backlog

DELIVERY_DUE = Gauge(
    "tend_delivery_due_actions",
    "Actions due for delivery now and not yet sent (counted up to 100000)",
)
DELIVERY_OLDEST_DUE = Gauge(
    "tend_delivery_oldest_due_age_seconds",
    "How long the longest-waiting due action has been due (0 when none is)",
)

# Due as delivery's own pick finds them, on the index ix_actions_due.
_DUE = "status = 'pending' AND next_attempt_at <= :now"


async def delivery_backlog(conn: AsyncConnection, now: datetime) -> Backlog:
    """The actions due at ``now`` and not yet sent."""
    return await backlog(
        conn,
        "outreach.actions",
        now,
        at="next_attempt_at",
        oldest_first="next_attempt_at",
        where=_DUE,
        params={"now": now},
    )


async def refresh_delivery_backlog(engine: AsyncEngine, now: datetime) -> None:
    """Read the delivery backlog into :data:`DELIVERY_DUE` and :data:`DELIVERY_OLDEST_DUE`."""
    async with engine.connect() as conn:
        due = await delivery_backlog(conn, now)
    DELIVERY_DUE.set(due.rows)
    DELIVERY_OLDEST_DUE.set(due.oldest_age_seconds or 0.0)
