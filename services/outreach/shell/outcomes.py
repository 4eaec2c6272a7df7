"""Building the outcomes report: read the period's touches and their customers' goal events,
attribute, and count (:mod:`services.outreach.core.outcomes`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.attribution import ZERO, Touch, orders_of
from services.outreach.core.goals import Goal, goal_of
from services.outreach.core.outcomes import (
    By,
    GroupOutcome,
    OutcomesReport,
    ReduceCost,
    Touched,
    attribute_by_group,
    contact_mix,
    report,
)
from services.outreach.core.policy import Policy
from services.outreach.core.trust import TRUSTED
from services.outreach.store import goal_events, outcomes

# A touch decided this long before the period may still be the one a period's goal event is
# owed to (it went out later: deferred by quiet hours or the cap, at most 90 days).
LOOKBACK = timedelta(days=90)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _before(at: datetime) -> datetime:
    """``at`` less :data:`LOOKBACK`, never before the first representable instant."""
    return at - LOOKBACK if at - _EARLIEST > LOOKBACK else _EARLIEST


class TooManyTouches(Exception):
    """The period holds more touches than one request attributes."""

    def __init__(self, touches: int, limit: int) -> None:
        super().__init__(f"{touches} touches")
        self.touches = touches
        self.limit = limit


def _goal(kind: str, raw: Any) -> Goal:
    """The goal a ledger row recorded; a row from before goals were recorded (or one that no
    longer reads) is measured by its kind's default."""
    if isinstance(raw, Mapping):
        try:
            return goal_of(kind, Goal.model_validate(raw, context=TRUSTED))
        except ValidationError:
            pass
    return goal_of(kind, None)


def contact_costs(policy: Policy) -> dict[str, Decimal] | None:
    """The policy's cost of one contact per channel, if it sets one (read defensively: the
    field may be absent, a mapping, or a model)."""
    raw = getattr(policy, "contact_cost", None)
    if raw is None:
        return None
    if isinstance(raw, BaseModel):
        raw = raw.model_dump()
    if not isinstance(raw, Mapping):
        return None
    out = {}
    for channel, cost in raw.items():
        try:
            out[str(channel)] = Decimal(str(cost)) if cost is not None else ZERO
        except InvalidOperation:
            continue
    return out


async def outcomes_report(
    conn: AsyncConnection,
    *,
    by: By,
    since: datetime,
    until: datetime,
    policy: Policy,
    max_touches: int,
    now: datetime,
    as_of: datetime | None = None,
) -> OutcomesReport:
    """The report for touches decided in [``since``, ``until``) and made by ``now``; raises
    :class:`TooManyTouches` when they are more than ``max_touches``. With ``as_of``, the
    report as it stood at that instant: the touches made and the goal events that occurred by
    then (without, an order a client dated a moment ahead of this clock counts at once)."""
    now = as_of or now
    counted = await outcomes.count_touches(conn, since, until, now)
    if counted > max_touches:
        raise TooManyTouches(counted, max_touches)
    rows = await outcomes.touches(conn, since, until, _before(since), now)
    touches = [Touch(r.id, r.customer_id, r.touched_at, _goal(r.kind, r.goal)) for r in rows]
    first = min((t.at for t in touches), default=since)
    # From a while before the first touch: an order paid after it but placed before is the
    # earlier instant, and no conversion.
    events = await goal_events.of_customers(
        conn, sorted({t.customer_id for t in touches}), _before(first), as_of
    )
    everyone = [
        Touched(t, r.arm, r.rule_id, r.kind, r.tier, r.strategy, r.baseline)
        for t, r in zip(touches, rows, strict=True)
    ]
    touched = [t for t, r in zip(everyone, rows, strict=True) if r.in_period]

    def attributed() -> list[GroupOutcome]:
        return report(touched, attribute_by_group(everyone, touched, events, by), by)

    # Seconds of pure work for a long period: off the event loop, which keeps answering.
    groups = await asyncio.to_thread(attributed)
    sent = [
        (r.tier, r.kind, int(r.sent)) for r in await outcomes.sent_by_tier(conn, since, until, now)
    ]
    return OutcomesReport(
        by=by,
        since=since,
        until=until,
        touches=len(touched),
        groups=groups,
        reduce_cost=await _reduce_cost(conn, policy, since, until, now, as_of),
        contact_mix=contact_mix(sent, frozenset(policy.promotional_kinds)),
    )


async def _reduce_cost(
    conn: AsyncConnection,
    policy: Policy,
    since: datetime,
    until: datetime,
    now: datetime,
    as_of: datetime | None,
) -> ReduceCost | None:
    costs = contact_costs(policy)
    if costs is None:
        return None
    saved = await outcomes.saved_by_reduce_cost(conn, since, until, now)
    customers = sorted({c for r in saved for c in r.customers})
    events = await goal_events.of_customers(conn, customers, _before(since), as_of)
    revenue = sum(
        (
            o.revenue
            for theirs in events.values()
            for o in orders_of(theirs)
            if since <= o.at < until
        ),
        ZERO,
    )
    return ReduceCost(
        contacts_saved=sum(int(r.contacts) for r in saved),
        cost_saved=sum((int(r.contacts) * costs.get(r.channel, ZERO) for r in saved), ZERO),
        customers=len(customers),
        revenue=revenue,
        by_channel={r.channel: int(r.contacts) for r in saved},
    )
