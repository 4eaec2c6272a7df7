"""Scoring's aggregate read API: the customer base at a glance and the flow through the
lifecycle over time."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.scoring.api.deps import Scoring
from services.scoring.core.lifecycle import day_of
from services.scoring.store import queries
from services.scoring.store.queries import Period
from shared.auth import Reader
from shared.card import Money, Segment, Stage, Strategy, Tier
from shared.errors import ERROR_RESPONSES, beyond_schema, invalid, responses
from shared.params import IsoDate

router = APIRouter(prefix="/v1/stats", tags=["stats"])

DEFAULT_PERIODS = 12
# Enough for three years of days; a longer range is asked for in weeks or months.
MAX_PERIODS = 1100


class Unscored(BaseModel):
    """Customers without a tier, segment or strategy: prospects have no segment or strategy,
    and nobody has any of them before the first population refit."""

    tier: int
    segment: int
    strategy: int


class Overview(BaseModel):
    customers: int
    buyers: int = Field(description="customers with at least one live (not cancelled) order")
    lifetime_revenue: Money = Field(
        description="lifetime spend of all customers, net of refunds, including what erased "
        "customers spent"
    )
    top20_revenue_share: float | None = Field(
        description="share (0-1) of lifetime revenue spent by the top 20% of buyers by "
        "lifetime spend (the ceil(buyers / 5) highest); null while there is no revenue"
    )
    by_stage: dict[Stage, int]
    by_tier: dict[Tier, int]
    by_segment: dict[Segment, int]
    by_strategy: dict[Strategy, int]
    unscored: Unscored
    erased: int = Field(
        description="customers erased on request: no longer counted above, but their spend "
        "stays in `lifetime_revenue`"
    )


class FlowPeriod(BaseModel):
    start: date = Field(description="first day of the period")
    end: date = Field(description="last day of the period")
    new: int = Field(description="first purchases (transitions to `new`)")
    reactivated: int = Field(description="transitions to `reactivated`")
    churned: int = Field(description="transitions to `churned`")
    net: int = Field(description="new + reactivated - churned: below zero, the active base shrank")


class Flow(BaseModel):
    period: Period
    since: date = Field(description="first day of the first period")
    until: date = Field(description="last day of the last period")
    periods: list[FlowPeriod] = Field(description="oldest first, one per period, zeros included")


E = TypeVar("E", bound=StrEnum)


def _every(values: type[E], found: dict[str | None, int]) -> dict[E, int]:
    return {v: found.get(v.value, 0) for v in values}


@router.get(
    "/overview",
    response_model=Overview,
    responses=ERROR_RESPONSES,
    summary="The customer base at a glance",
)
async def get_overview(scoring: Scoring, _: Reader) -> Overview:
    """How many customers are in each lifecycle stage, tier, RFM segment and strategy (every
    value listed, 0 when none), how many have bought, their lifetime revenue and how
    concentrated it is: the share held by the top 20% of buyers (0.8 is the classic 80/20).
    Figures are as of each customer's last update, taken from one consistent snapshot."""
    figures = await queries.overview(scoring.engine)
    counts = figures.counts
    return Overview(
        customers=figures.customers,
        buyers=figures.buyers,
        lifetime_revenue=figures.revenue + figures.erased_revenue,
        top20_revenue_share=figures.top20_share,
        by_stage=_every(Stage, counts["stage"]),
        by_tier=_every(Tier, counts["tier"]),
        by_segment=_every(Segment, counts["segment"]),
        by_strategy=_every(Strategy, counts["strategy"]),
        unscored=Unscored(
            tier=counts["tier"].get(None, 0),
            segment=counts["segment"].get(None, 0),
            strategy=counts["strategy"].get(None, 0),
        ),
        erased=figures.erased_customers,
    )


@router.get(
    "/flow",
    response_model=Flow,
    responses=responses(
        beyond_schema(
            {
                "query.since": f"not after `until`, and at most {MAX_PERIODS} periods before "
                "it (the default range must start after year 1)",
                "query.until": "its period must end by 9999-12-31",
            }
        )
    ),
    summary="Customers in and out of the active base, per period",
)
async def get_flow(
    scoring: Scoring,
    _: Reader,
    period: Annotated[
        Period, Query(description="`day`, `week` (Monday to Sunday) or `month`.")
    ] = Period.WEEK,
    since: Annotated[
        IsoDate | None,
        Query(
            description="First day to report; the whole period containing it is counted. "
            f"Default: {DEFAULT_PERIODS - 1} periods before the one containing `until`."
        ),
    ] = None,
    until: Annotated[
        IsoDate | None,
        Query(
            description="Last day to report; the whole period containing it is counted. "
            "Default: today (UTC)."
        ),
    ] = None,
) -> Flow:
    """Per period, how many customers made their first purchase (`new`), came back after
    declining or churning (`reactivated`) and churned, and the net of the three: whether the
    active base grew or leaked. Periods without any transition are listed with zeros.

    Transitions are dated in event time (UTC days) and follow late events, so a past period
    can still change; a churn shows once the periodic sweep has reached the customer."""
    last_day = until or day_of(scoring.clock.now())
    if since is not None and since > last_day:
        raise invalid("query.since", f"must not be after until ({last_day.isoformat()})")
    last = period_start(last_day, period)
    # Python's calendar ends at years 1 and 9999; PostgreSQL's does not, so check here.
    try:
        end = period_end(last, period)
    except (OverflowError, ValueError):
        raise invalid("query.until", "the last period must end by 9999-12-31") from None
    if since is not None:
        first = period_start(since, period)
    else:
        try:
            first = add_periods(last, period, -(DEFAULT_PERIODS - 1))
        except (OverflowError, ValueError):
            raise invalid(
                "query.since", "the default range starts before year 1; give since"
            ) from None
    count = periods_between(first, last, period)
    if count > MAX_PERIODS:
        raise invalid(
            "query.since",
            f"the range spans {count} {period.value}s; at most {MAX_PERIODS} "
            "periods per request: narrow it or use a longer period",
        )
    buckets = await queries.flow(scoring.engine, period, first, last)
    return Flow(
        period=period,
        since=first,
        until=end,
        periods=[
            FlowPeriod(
                start=b.start,
                end=period_end(b.start, period),
                new=b.new,
                reactivated=b.reactivated,
                churned=b.churned,
                net=b.new + b.reactivated - b.churned,
            )
            for b in buckets
        ],
    )


def period_start(day: date, period: Period) -> date:
    """The first day of the period containing ``day`` (as PostgreSQL's ``date_trunc``)."""
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def add_periods(start: date, period: Period, n: int) -> date:
    """The start of the period ``n`` periods after the one starting on ``start``."""
    if period is Period.DAY:
        return start + timedelta(days=n)
    if period is Period.WEEK:
        return start + timedelta(weeks=n)
    months = start.year * 12 + start.month - 1 + n
    return date(months // 12, months % 12 + 1, 1)


def period_end(start: date, period: Period) -> date:
    """The last day of the period starting on ``start``."""
    return add_periods(start, period, 1) - timedelta(days=1)


def periods_between(first: date, last: date, period: Period) -> int:
    """How many periods from the one starting on ``first`` to the one starting on ``last``."""
    if period is Period.MONTH:
        return (last.year - first.year) * 12 + last.month - first.month + 1
    days = (last - first).days
    return (days // 7 if period is Period.WEEK else days) + 1
