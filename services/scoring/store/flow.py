"""The SQL behind the leaky bucket: customers and money in and out of the active base per
period and per tier (``GET /v1/stats/flow``), and acquisition cohorts (``GET
/v1/stats/cohorts``).

Everything is read in event time from two tables the write path keeps: ``stage_history`` (every
stage transition, dated by the UTC day it happened) and ``order_facts`` (every live order).

A customer is *active* at an instant when their stage then is neither ``prospect`` nor
``churned``. The instants are period boundaries, UTC midnights: the stage at a boundary is the
one in force at the end of the day before, so a transition on a period's first day belongs to
that period, and ``active at the end of a period`` is ``active at the start of the next``.
Periods are given by their boundaries (``B_0 < B_1 < ... < B_n``: period ``k`` runs from
``B_k`` up to ``B_(k+1)``); ``width_bucket(day, bounds) - 1`` is the period a day falls in
(-1 before the first, ``n`` after the last).

Each figure is per tier as the customer's row says now (null: ``none``; customers erased since
have no row, so theirs count under ``none``); the statements run in one snapshot, so the
figures describe the same moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from itertools import accumulate

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# The tiers figures are broken down by; ``none``: no tier (unscored, or erased since).
TIERS = ("key", "regular", "low", "none")

# For these statements' transaction only. At CDNOW's size their plans cost enough for
# PostgreSQL to compile them (JIT), which takes longer than running them (~370 ms against
# ~100 ms a statement); their sorts by customer (a few MB) spill to disk at the default 4 MB;
# and on tables not yet analysed (a history loaded a moment ago) the planner takes each CTE
# for one row and nests loops over them: 30 s instead of 30 ms on the demo's data.
_TUNE = (
    text("SET LOCAL jit = off"),
    text("SET LOCAL work_mem = '32MB'"),
    text("SET LOCAL enable_nestloop = off"),
)

# A switch in or out of the active base: prospect and churned are the inactive stages.
_SWITCHES = """
    (h.from_stage IN ('prospect', 'churned')) <> (h.to_stage IN ('prospect', 'churned'))
"""

# Gains, reactivations and losses per period and tier, and what each loss took with it: the
# customer's spend over the 365 days up to and including their last order before the churn.
_MOVES = text(
    """
    WITH moves AS (
        SELECT h.id, h.customer_id, h.to_stage, h.at,
            width_bucket(h.at, CAST(:bounds AS date[])) - 1 AS k
        FROM scoring.stage_history AS h
        WHERE h.at >= :first AND h.at < :end
          AND h.to_stage IN ('new', 'reactivated', 'churned')
    ), lost AS (
        SELECT id, sum(net) FILTER (WHERE day > last_day - 365) AS spend
        FROM (SELECT m.id, o.day, o.net, max(o.day) OVER (PARTITION BY m.id) AS last_day
              FROM moves AS m
              JOIN scoring.order_facts AS o
                ON o.customer_id = m.customer_id AND o.day < m.at
              WHERE m.to_stage = 'churned') AS before_churn
        GROUP BY id
    )
    SELECT m.k, coalesce(c.tier, 'none') AS tier,
        count(*) FILTER (WHERE m.to_stage = 'new') AS new,
        count(*) FILTER (WHERE m.to_stage = 'reactivated') AS reactivated,
        count(*) FILTER (WHERE m.to_stage = 'churned') AS churned,
        coalesce(sum(lost.spend), 0) AS lost
    FROM moves AS m
    LEFT JOIN lost ON lost.id = m.id
    LEFT JOIN scoring.customers AS c ON c.customer_id = m.customer_id
    GROUP BY 1, 2
    """
)

# Revenue per period and tier, split by whether the customer's first order falls in the same
# period (a new customer's) or earlier (a returning one's).
_REVENUE = text(
    """
    SELECT o.k, coalesce(c.tier, 'none') AS tier,
        coalesce(sum(o.net) FILTER (WHERE o.first_k = o.k), 0) AS new,
        coalesce(sum(o.net) FILTER (WHERE o.first_k < o.k), 0) AS returning
    FROM (SELECT customer_id, net, day,
              width_bucket(day, CAST(:bounds AS date[])) - 1 AS k,
              width_bucket(min(day) OVER (PARTITION BY customer_id), CAST(:bounds AS date[])) - 1
                  AS first_k
          FROM scoring.order_facts
          WHERE day < :end) AS o
    LEFT JOIN scoring.customers AS c ON c.customer_id = o.customer_id
    WHERE o.day >= :first
    GROUP BY 1, 2
    """
)

# The active base at each boundary and, per period, how many of the base at its start are
# active at its end. Each active spell (from a switch in to the next switch out, or still
# running) covers the boundaries after its first day up to and including its last: indices
# [width_bucket(since), width_bucket(until) - 1], or up to n while it runs. A customer's
# covered ranges that touch (churned and back within one period) merge into one; a customer is
# then active at every boundary of a merged range [f, l] and kept through periods f .. l - 1.
# Rather than a row per boundary, each range yields its steps (+1 active from f, -1 from l + 1;
# +1 kept from f, -1 from l), summed per index here and accumulated by the caller.
_BASE = text(
    f"""
    WITH switches AS (
        SELECT h.customer_id, h.id, h.at, h.to_stage NOT IN ('prospect', 'churned') AS active
        FROM scoring.stage_history AS h
        WHERE h.at < :end AND {_SWITCHES}
    ), spells AS (
        SELECT customer_id, active,
            width_bucket(at, CAST(:bounds AS date[])) AS f,
            coalesce(width_bucket(lead(at) OVER w, CAST(:bounds AS date[])) - 1, :n) AS l
        FROM switches
        WINDOW w AS (PARTITION BY customer_id ORDER BY at, id)
    ), covered AS (
        SELECT customer_id, f, l,
            CASE WHEN f = lag(l) OVER (PARTITION BY customer_id ORDER BY f) + 1 THEN 0 ELSE 1 END
                AS starts
        FROM spells
        WHERE active AND f <= l
    ), ranges AS (
        SELECT customer_id, min(f) AS f, max(l) AS l
        FROM (SELECT customer_id, f, l,
                  sum(starts) OVER (PARTITION BY customer_id ORDER BY f) AS island
              FROM covered) AS islands
        GROUP BY customer_id, island
    ), counted AS (
        SELECT coalesce(c.tier, 'none') AS tier, r.f, r.l, count(*) AS customers
        FROM ranges AS r
        LEFT JOIN scoring.customers AS c ON c.customer_id = r.customer_id
        GROUP BY 1, 2, 3
    )
    SELECT r.tier, s.k, sum(s.active * r.customers) AS active, sum(s.kept * r.customers) AS kept
    FROM counted AS r
    CROSS JOIN LATERAL (VALUES (r.f, 1, CASE WHEN r.l > r.f THEN 1 ELSE 0 END),
                               (r.l + 1, -1, 0),
                               (r.l, 0, CASE WHEN r.l > r.f THEN -1 ELSE 0 END))
        AS s(k, active, kept)
    WHERE s.k <= :n
    GROUP BY 1, 2
    """
)


@dataclass(slots=True)
class Figures:
    """One period's figures for one set of customers (see the flow route for their meaning)."""

    new: int = 0
    reactivated: int = 0
    churned: int = 0
    active_at_start: int = 0
    active_at_end: int = 0
    retained: int = 0
    revenue_new: Decimal = Decimal(0)
    revenue_returning: Decimal = Decimal(0)
    revenue_lost: Decimal = Decimal(0)

    def add(self, other: Figures) -> None:
        self.new += other.new
        self.reactivated += other.reactivated
        self.churned += other.churned
        self.active_at_start += other.active_at_start
        self.active_at_end += other.active_at_end
        self.retained += other.retained
        self.revenue_new += other.revenue_new
        self.revenue_returning += other.revenue_returning
        self.revenue_lost += other.revenue_lost


@dataclass(slots=True)
class FlowBucket:
    start: date
    total: Figures = field(default_factory=Figures)
    by_tier: dict[str, Figures] = field(default_factory=lambda: {t: Figures() for t in TIERS})


async def flow(engine: AsyncEngine, bounds: Sequence[date]) -> list[FlowBucket]:
    """The figures of each period bounded by ``bounds`` (``n + 1`` ascending UTC days for
    ``n`` periods), per tier and in total, oldest first."""
    n = len(bounds) - 1
    params = {"bounds": list(bounds), "first": bounds[0], "end": bounds[-1], "n": n}
    buckets = [FlowBucket(start) for start in bounds[:-1]]
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        for setting in _TUNE:
            await conn.execute(setting)
        for r in await conn.execute(_MOVES, params):
            figures = buckets[r.k].by_tier[r.tier]
            figures.new, figures.reactivated, figures.churned = r.new, r.reactivated, r.churned
            figures.revenue_lost = r.lost
        for r in await conn.execute(_REVENUE, params):
            figures = buckets[r.k].by_tier[r.tier]
            figures.revenue_new, figures.revenue_returning = r.new, r.returning
        await _base(conn, params, buckets)
    for bucket in buckets:
        for figures in bucket.by_tier.values():
            bucket.total.add(figures)
    return buckets


async def _base(
    conn: AsyncConnection, params: dict[str, object], buckets: list[FlowBucket]
) -> None:
    n = len(buckets)
    active = {t: [0] * (n + 1) for t in TIERS}
    kept = {t: [0] * (n + 1) for t in TIERS}
    for r in await conn.execute(_BASE, params):
        active[r.tier][r.k] += r.active
        kept[r.tier][r.k] += r.kept
    for tier in TIERS:
        at = list(accumulate(active[tier]))  # the active base at each boundary
        through = list(accumulate(kept[tier]))  # per period: active at both its ends
        for k, bucket in enumerate(buckets):
            figures = bucket.by_tier[tier]
            figures.active_at_start, figures.active_at_end = at[k], at[k + 1]
            figures.retained = through[k]


@dataclass(frozen=True, slots=True)
class CohortFigures:
    month: date  # the first day of the month of acquisition
    acquired: int
    active: dict[int, int]  # months after -> how many of them were active then


# Customers by the month of their first purchase, and how many of them are active at each
# check: the start of the month following acquisition plus 1, 3, 6 and 12 months.
_ACQUIRED = text(
    """
    SELECT CAST(date_trunc('month', h.at) AS date) AS month, count(*) AS acquired
    FROM scoring.stage_history AS h
    WHERE h.to_stage = 'new' AND h.at >= :first AND h.at < :end
    GROUP BY 1
    """
)
_STILL_ACTIVE = text(
    f"""
    WITH cohort AS (
        SELECT h.customer_id, CAST(date_trunc('month', h.at) AS date) AS month
        FROM scoring.stage_history AS h
        WHERE h.to_stage = 'new' AND h.at >= :first AND h.at < :end
    ), spells AS (
        SELECT customer_id, active, at AS since,
            lead(at) OVER (PARTITION BY customer_id ORDER BY at, id) AS until
        FROM (SELECT h.customer_id, h.id, h.at,
                  h.to_stage NOT IN ('prospect', 'churned') AS active
              FROM scoring.stage_history AS h
              JOIN cohort ON cohort.customer_id = h.customer_id
              WHERE {_SWITCHES}) AS switches
    ), checks AS (
        SELECT cohort.customer_id, cohort.month, m.after,
            CAST(cohort.month + make_interval(months => m.after + 1) AS date) AS at
        FROM cohort CROSS JOIN unnest(CAST(:after AS int[])) AS m(after)
    )
    SELECT checks.month, checks.after, count(*) AS active
    FROM checks
    JOIN spells AS s ON s.customer_id = checks.customer_id AND s.active
        AND s.since < checks.at AND (s.until IS NULL OR s.until >= checks.at)
    GROUP BY 1, 2
    """
)


async def cohorts(
    engine: AsyncEngine, first: date, end: date, after: Sequence[int]
) -> dict[date, CohortFigures]:
    """Per month with acquisitions from ``first`` (a month's first day) up to ``end`` (the
    first day of the month after the last), how many customers made their first purchase
    then and how many of them were active ``after`` months after the month that followed."""
    params = {"first": first, "end": end, "after": list(after)}
    out: dict[date, CohortFigures] = {}
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        for setting in _TUNE:
            await conn.execute(setting)
        for r in await conn.execute(_ACQUIRED, params):
            out[r.month] = CohortFigures(r.month, r.acquired, dict.fromkeys(after, 0))
        for r in await conn.execute(_STILL_ACTIVE, params):
            out[r.month].active[r.after] = r.active
    return out
