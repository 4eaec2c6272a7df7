"""The ``scoring.complaints`` table: kept from the customers' facts by the consumer, read by
the overdue list and the resolution-time figures.

A complaint's target depends on the tier it is held to (null: regular's) and on the
settings, so it is computed in each query from the targets given, never stored: changing a
target takes effect at once, for old complaints too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring.core.complaints import Complaint
from services.scoring.core.state import from_micros


@dataclass(frozen=True, slots=True)
class Targets:
    """Response-time targets in hours, by tier."""

    key: float
    regular: float
    low: float

    def params(self) -> dict[str, float]:
        return {"t_key": self.key, "t_regular": self.regular, "t_low": self.low}


# The complaint's due instant, from its row (alias c) and the targets given.
_DUE = """c.opened_at + make_interval(secs => 3600 * CASE coalesce(c.tier, 'regular')
    WHEN 'key' THEN CAST(:t_key AS float8) WHEN 'low' THEN CAST(:t_low AS float8)
    ELSE CAST(:t_regular AS float8) END)"""
# Open at :now: raised by then and not resolved by then.
_OPEN_AT = "c.opened_at <= :now AND (c.resolved_at IS NULL OR c.resolved_at > :now)"

_UPSERT = text(
    """
    INSERT INTO scoring.complaints AS c (customer_id, complaint_id, severity, category, tier,
        opened_at, resolved_at)
    SELECT * FROM unnest(CAST(:customers AS text[]), CAST(:ids AS text[]),
        CAST(:severities AS text[]), CAST(:categories AS text[]), CAST(:tiers AS text[]),
        CAST(:opened AS timestamptz[]), CAST(:resolved AS timestamptz[]))
    ON CONFLICT (customer_id, complaint_id) DO UPDATE SET
        severity = EXCLUDED.severity, category = EXCLUDED.category, tier = EXCLUDED.tier,
        opened_at = EXCLUDED.opened_at, resolved_at = EXCLUDED.resolved_at
    WHERE (c.severity, c.category, c.tier, c.opened_at, c.resolved_at)
        IS DISTINCT FROM (EXCLUDED.severity, EXCLUDED.category, EXCLUDED.tier,
            EXCLUDED.opened_at, EXCLUDED.resolved_at)
    """
)


async def sync(conn: AsyncConnection, complaints: Iterable[tuple[str, Complaint]]) -> None:
    """Write these ``(customer, complaint)`` as they now are (a complaint never leaves a
    customer's facts, so rows are only added or updated here)."""
    rows = list(complaints)
    if not rows:
        return
    await conn.execute(
        _UPSERT,
        {
            "customers": [cid for cid, _ in rows],
            "ids": [c.complaint_id for _, c in rows],
            "severities": [c.severity for _, c in rows],
            "categories": [c.category for _, c in rows],
            "tiers": [c.tier for _, c in rows],
            "opened": [from_micros(c.opened_at) for _, c in rows],
            "resolved": [
                None if c.resolved_at is None else from_micros(c.resolved_at) for _, c in rows
            ],
        },
    )


@dataclass(frozen=True, slots=True)
class OverdueRow:
    customer_id: str
    complaint_id: str
    severity: str | None
    category: str | None
    tier: str | None
    opened_at: datetime
    due_at: datetime


@dataclass(frozen=True, slots=True)
class After:
    """Where a page of the overdue list ended: the last row's keys."""

    opened_at: datetime
    customer_id: str
    complaint_id: str


_OVERDUE = f"""
    SELECT c.customer_id, c.complaint_id, c.severity, c.category, c.tier, c.opened_at,
        {_DUE} AS due_at
    FROM scoring.complaints AS c
    WHERE {_OPEN_AT} AND {_DUE} < :now
    """
_AFTER = " AND (c.opened_at, c.customer_id, c.complaint_id) > (:a_at, :a_cid, :a_id)"
_ORDER = " ORDER BY c.opened_at, c.customer_id, c.complaint_id LIMIT :n"


async def overdue(
    engine: AsyncEngine, now: datetime, targets: Targets, after: After | None, limit: int
) -> tuple[list[OverdueRow], After | None]:
    """Up to ``limit`` complaints open at ``now`` and past their due instant, oldest first
    (by when raised, then customer and complaint id), after ``after``; and where the page
    ended when more follow."""
    sql = _OVERDUE + (_AFTER if after else "") + _ORDER
    params: dict[str, object] = {"now": now, "n": limit + 1, **targets.params()}
    if after:
        params |= {"a_at": after.opened_at, "a_cid": after.customer_id, "a_id": after.complaint_id}
    async with engine.connect() as conn:
        rows = [OverdueRow(*r) for r in (await conn.execute(text(sql), params)).tuples()]
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], After(last.opened_at, last.customer_id, last.complaint_id)


@dataclass(frozen=True, slots=True)
class TierFigures:
    open: int = 0
    overdue: int = 0
    resolved: int = 0
    median_hours: float | None = None
    p90_hours: float | None = None


_STANDING = text(
    f"""
    SELECT coalesce(c.tier, 'regular') AS tier, count(*) AS open,
        count(*) FILTER (WHERE {_DUE} < :now) AS overdue
    FROM scoring.complaints AS c WHERE {_OPEN_AT}
    GROUP BY 1
    """
)
_RESOLUTION = text(
    """
    SELECT coalesce(tier, 'regular') AS tier, count(*) AS resolved,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY hours) AS median,
        percentile_cont(0.9) WITHIN GROUP (ORDER BY hours) AS p90
    FROM (SELECT tier, extract(epoch FROM resolved_at - opened_at) / 3600 AS hours
          FROM scoring.complaints
          WHERE resolved_at >= :since AND resolved_at < :until) AS r
    GROUP BY 1
    """
)


async def figures(
    engine: AsyncEngine, now: datetime, since: datetime, until: datetime, targets: Targets
) -> dict[str, TierFigures]:
    """Per tier held to (none counts as regular): complaints open and overdue at ``now``,
    and how many were resolved in ``[since, until)`` with the median and 90th percentile of
    their hours from raised to resolved (linear interpolation between the nearest two)."""
    out: dict[str, TierFigures] = {}
    async with engine.connect() as conn:
        standing = await conn.execute(_STANDING, {"now": now, **targets.params()})
        for tier, open_, late in standing.tuples():
            out[tier] = replace(out.get(tier, TierFigures()), open=open_, overdue=late)
        resolved = await conn.execute(_RESOLUTION, {"since": since, "until": until})
        for tier, count, median, p90 in resolved.tuples():
            out[tier] = replace(
                out.get(tier, TierFigures()),
                resolved=count,
                median_hours=float(median),
                p90_hours=float(p90),
            )
    return out
