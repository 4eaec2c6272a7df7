"""The ledger reads of the outcomes report: the touches of a period (and, for attribution,
their customers' other touches around it), the contacts the reduce-cost policy saved, and the
contacts sent by tier and kind."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# A touch: a message sent (at sent_at) or a control row held out (at the instant it would
# have gone out, once that instant has come: a hold-out waiting out quiet hours has touched
# nobody yet, as a message waiting to be sent has not). A team alert touches its customer
# through the people it alerts.
_TOUCH = (
    "arm IS NOT NULL AND ((status = 'sent' AND coalesce(sent_at, decided_at) <= :now) "
    "OR (status = 'control' AND coalesce(not_before, decided_at) <= :now))"
)
_TOUCHED_AT = (
    "CASE WHEN status = 'sent' THEN coalesce(sent_at, decided_at) "
    "ELSE coalesce(not_before, decided_at) END"
)

_COUNT = text(
    f"SELECT count(*) FROM outreach.actions "
    f"WHERE decided_at >= :since AND decided_at < :until AND {_TOUCH}"
)

_TOUCHES = text(
    f"""
    WITH period AS (
        SELECT DISTINCT customer_id FROM outreach.actions
        WHERE decided_at >= :since AND decided_at < :until AND {_TOUCH}
    )
    SELECT a.id, a.customer_id, a.rule_id, a.kind, a.tier, a.strategy, a.arm, a.baseline,
        a.goal, a.decided_at, {_TOUCHED_AT} AS touched_at,
        (a.decided_at >= :since AND a.decided_at < :until) AS in_period
    FROM outreach.actions a JOIN period p ON p.customer_id = a.customer_id
    WHERE a.decided_at >= :lookback AND {_TOUCH}
    """
)

_SAVED = text(
    """
    SELECT channel, count(*) AS contacts, array_agg(DISTINCT customer_id) AS customers
    FROM outreach.actions
    WHERE decided_at >= :since AND decided_at < :until AND decided_at <= :now
      AND status = 'suppressed' AND reason = 'reduce_cost'
    GROUP BY channel ORDER BY channel
    """
)

_SENT_BY_TIER = text(
    """
    SELECT tier, kind, count(*) AS sent FROM outreach.actions
    WHERE decided_at >= :since AND decided_at < :until
      AND status = 'sent' AND audience = 'customer' AND coalesce(sent_at, decided_at) <= :now
    GROUP BY tier, kind ORDER BY tier, kind
    """
)


async def count_touches(
    conn: AsyncConnection, since: datetime, until: datetime, now: datetime
) -> int:
    """How many touches were decided in [``since``, ``until``) and made by ``now``."""
    return int(await conn.scalar(_COUNT, {"since": since, "until": until, "now": now}) or 0)


async def touches(
    conn: AsyncConnection, since: datetime, until: datetime, lookback: datetime, now: datetime
) -> Sequence[Any]:
    """Every touch of the customers touched in [``since``, ``until``), decided from
    ``lookback`` on (one outside the period may take a goal event from a touch of the
    period's group: the last touch of a group wins); ``in_period`` says which are the
    period's."""
    params = {"since": since, "until": until, "lookback": lookback, "now": now}
    return list(await conn.execute(_TOUCHES, params))


async def saved_by_reduce_cost(
    conn: AsyncConnection, since: datetime, until: datetime, now: datetime
) -> Sequence[Any]:
    """Per channel: the contacts the reduce-cost policy suppressed in the period (by
    ``now``), and whose."""
    return list(await conn.execute(_SAVED, {"since": since, "until": until, "now": now}))


async def sent_by_tier(
    conn: AsyncConnection, since: datetime, until: datetime, now: datetime
) -> Sequence[Any]:
    """Messages decided in the period and sent to customers by ``now``, by tier (at
    decision) and kind."""
    params = {"since": since, "until": until, "now": now}
    return list(await conn.execute(_SENT_BY_TIER, params))
