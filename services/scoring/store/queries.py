"""The SQL behind scoring's read API: one customer's facts and what was applied for them, the
listing, the stage history and the overview (the flow and cohorts: :mod:`.flow`).

Apart from the facts themselves, everything here reads the columns the write path keeps beside
each customer's facts (:mod:`services.scoring.store.customers`) and the ``stage_history``
table; nothing rebuilds a card, so a listing or a stats call costs one or two statements
whatever the number of customers. The figures are therefore as of each customer's last write
(an event, a sweep or a refit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.core.state import CustomerState
from services.scoring.store.tables import customer_ids, customers, identifiers

SortKey = float | datetime | str | None


class Sort(StrEnum):
    """The columns a listing can be sorted on."""

    VALUE = "value"
    CLV = "clv"
    P_ALIVE = "p_alive"
    LAST_ORDER = "last_order"
    NAME = "name"


class Order(StrEnum):
    ASC = "asc"
    DESC = "desc"


_c = customers.c
_SORT_COLUMNS: dict[Sort, ColumnElement[Any]] = {
    Sort.VALUE: _c.value_score,
    Sort.CLV: _c.clv,
    Sort.P_ALIVE: _c.p_alive,
    Sort.LAST_ORDER: _c.last_order_at,
    # In any case (an index on lower(name) serves it); customers without a name come last.
    Sort.NAME: func.lower(_c.name),
}


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last row's sort key and its id (the tie-breaker)."""

    key: SortKey
    customer_id: str


@dataclass(frozen=True, slots=True)
class Filters:
    """Each non-empty sequence admits any of its values; ``text`` is a substring of the
    customer's name, email or phone, in any case, or the customer's id (or an id merged into
    them), or, with ``identifiers`` (the values ``text`` may stand for, as compared), one of
    their identifiers; ``tag`` is one of the profile's tags, exactly."""

    stages: Sequence[str] = ()
    tiers: Sequence[str] = ()
    segments: Sequence[str] = ()
    strategies: Sequence[str] = ()
    text: str | None = None
    identifiers: Sequence[str] = ()
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class SummaryRow:
    customer_id: str
    name: str | None
    email: str | None
    stage: str
    stage_since: date | None
    tier: str | None
    segment: str | None
    strategy: str | None
    value_score: float
    lifetime_spend: Decimal
    clv: float | None
    p_alive: float | None
    last_order_at: datetime | None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[SummaryRow]
    next: Position | None  # None on the last page


async def list_customers(
    engine: AsyncEngine,
    filters: Filters,
    sort: Sort,
    order: Order,
    after: Position | None,
    limit: int,
) -> Page:
    """Up to ``limit`` customers matching ``filters``, in ``sort`` order with nulls last and
    ties broken by id, starting after ``after`` (keyset pagination: a page costs the same
    however deep it is, and rows inserted or deleted meanwhile do not shift the pages)."""
    key = _SORT_COLUMNS[sort]
    descending = order is Order.DESC
    query = (
        select(
            _c.customer_id,
            _c.name,
            _c.email,
            _c.stage,
            _c.stage_since,
            _c.tier,
            _c.segment,
            _c.strategy,
            _c.value_score,
            _c.lifetime_spend,
            _c.clv,
            _c.p_alive,
            _c.last_order_at,
            key.label("sort_key"),
        )
        .where(*conditions(filters))
        .order_by(
            (key.desc() if descending else key.asc()).nulls_last(),
            _c.customer_id.desc() if descending else _c.customer_id.asc(),
        )
        .limit(limit + 1)  # one more than asked: tells whether another page exists
    )
    if after is not None:
        query = query.where(_after(key, descending, after))
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    summaries = [
        SummaryRow(**{k: v for k, v in r._asdict().items() if k != "sort_key"}) for r in rows
    ]
    last = rows[-1] if more else None
    return Page(summaries, Position(last.sort_key, last.customer_id) if last else None)


def conditions(f: Filters) -> list[ColumnElement[bool]]:
    """The listing's WHERE clauses for ``f``, all of which must hold."""
    out: list[ColumnElement[bool]] = []
    for column, values in (
        (_c.stage, f.stages),
        (_c.tier, f.tiers),
        (_c.segment, f.segments),
        (_c.strategy, f.strategies),
    ):
        if values:
            out.append(column.in_(list(values)))
    if f.text:
        # ``search`` holds name, email and phone lower-cased by the write path; autoescape
        # makes % and _ in the query literal characters, not wildcards.
        ids, known = customer_ids.c, identifiers.c
        out.append(
            or_(
                _c.search.contains(f.text.lower(), autoescape=True),
                _c.customer_id == f.text,
                _c.customer_id.in_(select(ids.survivor_id).where(ids.customer_id == f.text)),
                _c.customer_id.in_(
                    select(known.customer_id).where(known.value.in_(list(f.identifiers)))
                ),
            )
        )
    if f.tag is not None:
        # Containment, so the GIN index on tags answers it; it holds only the customers who
        # have a tag, and says so in the same words.
        out.append(func.cardinality(_c.tags) > 0)
        out.append(_c.tags.contains([f.tag]))
    return out


def _after(key: ColumnElement[SortKey], descending: bool, p: Position) -> ColumnElement[bool]:
    """Rows strictly after ``p`` in ``ORDER BY key [DESC] NULLS LAST, customer_id [DESC]``."""
    beyond_id = _c.customer_id < p.customer_id if descending else _c.customer_id > p.customer_id
    if p.key is None:
        return and_(key.is_(None), beyond_id)  # already in the trailing nulls
    beyond_key = key < p.key if descending else key > p.key
    return or_(beyond_key, and_(key == p.key, beyond_id), key.is_(None))


_STATE = text("SELECT state FROM scoring.customers WHERE customer_id = :id")
_APPLIED = text(
    """
    SELECT event_id, applied_at FROM scoring.inbox WHERE customer_id = :id
    ORDER BY applied_at, event_id
    """
)


async def customer_state(engine: AsyncEngine, customer_id: str) -> CustomerState | None:
    """The customer's facts; None for a customer never seen (or erased)."""
    async with engine.connect() as conn:
        raw = await conn.scalar(_STATE, {"id": customer_id})
    return None if raw is None else CustomerState.from_json(raw)


@dataclass(frozen=True, slots=True)
class Applied:
    event_id: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class Holdings:
    """What scoring stores on a customer besides their stage history: their facts as stored
    (JSON) and the events applied to them, oldest first."""

    facts: dict[str, Any]
    events: list[Applied]


async def holdings(engine: AsyncEngine, customer_id: str) -> Holdings | None:
    """The customer's facts and applied events, read together; None for a customer never seen
    (or erased)."""
    async with engine.connect() as conn:
        raw = await conn.scalar(_STATE, {"id": customer_id})
        if raw is None:
            return None
        events = (await conn.execute(_APPLIED, {"id": customer_id})).all()
    facts = raw if isinstance(raw, dict) else orjson.loads(raw)
    return Holdings(facts, [Applied(e.event_id, e.applied_at) for e in events])


@dataclass(frozen=True, slots=True)
class StageMove:
    from_stage: str
    to_stage: str
    at: date


@dataclass(frozen=True, slots=True)
class History:
    customer_id: str
    stage: str
    stage_since: date | None
    transitions: list[StageMove]


_HISTORY = text(
    """
    SELECT c.stage, c.stage_since, h.from_stage, h.to_stage, h.at
    FROM scoring.customers AS c
    LEFT JOIN scoring.stage_history AS h ON h.customer_id = c.customer_id
    WHERE c.customer_id = :id
    ORDER BY h.at, h.id
    """
)


async def stage_history(engine: AsyncEngine, customer_id: str) -> History | None:
    """The customer's stage and transitions, oldest first (rows of one day in the order they
    happened); None for a customer never seen. One statement, so the stage and the history
    come from the same write."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_HISTORY, {"id": customer_id})).all()
    if not rows:
        return None
    moves = [StageMove(r.from_stage, r.to_stage, r.at) for r in rows if r.to_stage is not None]
    return History(customer_id, rows[0].stage, rows[0].stage_since, moves)


@dataclass(frozen=True, slots=True)
class OverviewFigures:
    customers: int
    buyers: int
    revenue: Decimal
    top20_share: float | None  # None while there is no revenue to share
    # Per column, the count of each value found; a None key counts customers without one.
    counts: dict[str, dict[str | None, int]]
    erased_customers: int
    erased_revenue: Decimal  # what erased customers had spent, net


# One scan for the four breakdowns and the totals: every customer is counted once into the
# few hundred cells of (stage, tier, segment, strategy) at most, and the cells are rolled up
# (four hashes over a million rows took twice as long as one). The grouping set a row belongs
# to says which column its value comes from. Buyers are customers with a live order; the
# totals row (``all``) carries how many there are and what they spent.
_COUNTS = text(
    """
    WITH cells AS (
        SELECT stage, tier, segment, strategy, count(*) AS n,
               count(*) FILTER (WHERE last_order_at IS NOT NULL) AS buyers,
               sum(lifetime_spend) FILTER (WHERE last_order_at IS NOT NULL) AS revenue
        FROM scoring.customers
        GROUP BY stage, tier, segment, strategy
    )
    SELECT CASE WHEN GROUPING(stage) = 0 THEN 'stage'
                WHEN GROUPING(tier) = 0 THEN 'tier'
                WHEN GROUPING(segment) = 0 THEN 'segment'
                WHEN GROUPING(strategy) = 0 THEN 'strategy'
                ELSE 'all' END AS dimension,
           COALESCE(stage, tier, segment, strategy) AS value,
           CAST(COALESCE(sum(n), 0) AS bigint) AS n,
           CAST(COALESCE(sum(buyers), 0) AS bigint) AS buyers,
           COALESCE(sum(revenue), 0) AS revenue
    FROM cells
    GROUP BY GROUPING SETS ((stage), (tier), (segment), (strategy), ())
    """
)
# The share of ``revenue`` the top 20% of buyers hold: the ceil(n / 5) highest spends (at
# least one buyer as soon as there is one), a bounded top-N sort rather than a rank of every
# buyer (at a million customers 1 s against 7). Which of buyers tied at the cut are counted
# cannot change the sum: they spent the same.
_TOP_SHARE = text(
    """
    SELECT CAST(sum(lifetime_spend) / NULLIF(CAST(:revenue AS numeric), 0) AS float8)
    FROM (
        SELECT lifetime_spend FROM scoring.customers
        WHERE last_order_at IS NOT NULL
        ORDER BY lifetime_spend DESC
        LIMIT :top
    ) AS top
    """
)
# Erased customers are gone, but what they spent is still part of the business's revenue.
_ERASED = text(
    """
    SELECT count(*) AS customers, COALESCE(sum(lifetime_spend), 0) AS revenue,
           COALESCE(sum(orders), 0) AS orders
    FROM scoring.erasures
    """
)


async def overview(engine: AsyncEngine) -> OverviewFigures:
    """Customer counts per stage, tier, segment and strategy, buyers, revenue and the share
    of it held by the top 20% of buyers, all from one snapshot."""
    async with engine.connect() as conn:
        # Two statements, one snapshot: the counts and the revenue describe the same moment.
        await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        counts: dict[str, dict[str | None, int]] = {
            "stage": {},
            "tier": {},
            "segment": {},
            "strategy": {},
            "all": {},
        }
        buyers, revenue = 0, Decimal(0)
        for row in await conn.execute(_COUNTS):
            counts[row.dimension][row.value] = row.n
            if row.dimension == "all":
                buyers, revenue = row.buyers, row.revenue
        share = await conn.scalar(_TOP_SHARE, {"revenue": revenue, "top": -(-buyers // 5)})
        erased = (await conn.execute(_ERASED)).one()
    total = counts.pop("all").get(None, 0)
    return OverviewFigures(
        customers=total,
        buyers=buyers,
        revenue=revenue,
        top20_share=share,
        counts=counts,
        erased_customers=erased.customers,
        erased_revenue=erased.revenue,
    )
