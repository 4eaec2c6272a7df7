"""Scoring's aggregate read API: the customer base at a glance, and the flow of customers and
money in and out of the active base over time (the leaky bucket)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.scoring.api.deps import Scoring
from services.scoring.core.lifecycle import day_of
from services.scoring.core.periods import (
    Period,
    add_periods,
    boundaries,
    period_end,
    period_start,
    periods_between,
)
from services.scoring.store import flow as flow_store
from services.scoring.store import queries
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


FlowTier = Literal["key", "regular", "low", "none"]


class FlowFigures(BaseModel):
    """One period's figures for a set of customers. Counts are customers (a customer lost
    twice in one period counts twice in `churned`); money is net of refunds."""

    new: int = Field(description="customers gained: first purchases made in the period")
    reactivated: int = Field(
        description="customers who came back: bought again in the period after churning (a "
        "declining customer who buys again was never out of the active base)"
    )
    churned: int = Field(description="customers lost: became `churned` in the period")
    net: int = Field(description="new + reactivated - churned: below zero, the active base shrank")
    active_at_start: int = Field(
        description="the active base as the period began: customers in a stage other than "
        "`prospect` and `churned` at the end of the day before its first day"
    )
    active_at_end: int = Field(
        description="the active base at the end of its last day (for the period under way: "
        "now); the next period's `active_at_start`"
    )
    retained: int = Field(
        description="customers of `active_at_start` who are in `active_at_end` too (one who "
        "churned and came back within the period counts)"
    )
    churn_rate: float | None = Field(
        description="churned / active_at_start (0-1, above 1 only when customers gained in "
        "the period are lost in it too); null when the base at the start was empty"
    )
    retention_rate: float | None = Field(
        description="retained / active_at_start (0-1): the share of the base at the start "
        "still active at the end; null when the base at the start was empty"
    )
    revenue_new: Money = Field(
        description="what customers gained in the period spent in it: orders of the period "
        "by customers whose first order is in the period"
    )
    revenue_returning: Money = Field(
        description="what customers who had bought before the period spent in it: every "
        "other order of the period"
    )
    revenue_lost: Money = Field(
        description="the yearly spend that left with the customers lost in the period: for "
        "each loss, what the customer spent in the 365 days up to and including their last "
        "order before the churn (a customer churns only after a long silence, so the year "
        "before the churn itself would often hold nothing)"
    )


class _Span(BaseModel):
    start: date = Field(description="first day of the period")
    end: date = Field(description="last day of the period")


class FlowPeriod(FlowFigures, _Span):
    under_way: bool = Field(
        description="the period has not ended: it holds today (UTC), so its figures count up "
        "to now — fewer days of churn and revenue than a whole period, and `active_at_end` "
        "is the base now. Compare it with whole periods only for what it has so far"
    )
    by_tier: dict[FlowTier, FlowFigures] = Field(
        description="the same figures per value tier (`key`, `regular`, `low`; `none`: "
        "customers without a tier, not yet scored or erased since), by the customer's tier "
        "now: a churned customer's tier is judged on their spend up to their last purchase, "
        "so it is the tier they had as they left. The four add up to the period's figures."
    )


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
    summary="The leaky bucket: customers and money in and out of the active base, per period",
)
async def get_flow(
    scoring: Scoring,
    _: Reader,
    period: Annotated[
        Period,
        Query(
            description="`day`, `week` (Monday to Sunday), `month`, `quarter` (from January, "
            "April, July, October) or `year`."
        ),
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
    """Per period, whether the customer base grew or leaked, in customers and in money, in
    total and per value tier (`by_tier`). Periods without any movement are listed with zeros.

    **Customers.** The *active base* is every customer in a stage other than `prospect` (no
    purchase yet) and `churned`. Each period says how large it was at the start
    (`active_at_start`) and at the end (`active_at_end`); how many customers it gained with a
    first purchase (`new`), won back (`reactivated`: bought again after churning) and lost
    (`churned`); `churn_rate`, the customers lost for each one in the base
    at the start; and `retention_rate`, the share of the base at the start still in it at
    the end.

    **Money** (net of refunds). `revenue_new` is what the customers gained in the period
    spent in it; `revenue_returning` is what everyone else spent in it (together: the
    period's revenue); `revenue_lost` is the yearly spend that left with the customers lost:
    each one's spend over the 365 days up to their last purchase before the churn.

    **Time.** Everything is dated in event time (UTC days), so an imported history shows its
    past: a first purchase in the month it was made, a churn on the day the customer's
    silence became too long. Late events correct past periods. A churn shows once the
    periodic sweep has reached the customer; a tier is the customer's tier now. The period
    holding today is `under_way`: its figures are so far."""
    today = day_of(scoring.clock.now())
    last_day = until or today
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
    buckets = await flow_store.flow(scoring.engine, boundaries(first, count, period))
    return Flow(
        period=period,
        since=first,
        until=end,
        periods=[
            FlowPeriod(
                start=b.start,
                end=period_end(b.start, period),
                under_way=b.start <= today <= period_end(b.start, period),
                **_figures(b.total).model_dump(),
                by_tier={tier: _figures(f) for tier, f in b.by_tier.items()},
            )
            for b in buckets
        ],
    )


def _figures(f: flow_store.Figures) -> FlowFigures:
    base = f.active_at_start
    return FlowFigures(
        new=f.new,
        reactivated=f.reactivated,
        churned=f.churned,
        net=f.new + f.reactivated - f.churned,
        active_at_start=base,
        active_at_end=f.active_at_end,
        retained=f.retained,
        churn_rate=f.churned / base if base else None,
        retention_rate=f.retained / base if base else None,
        revenue_new=f.revenue_new,
        revenue_returning=f.revenue_returning,
        revenue_lost=f.revenue_lost,
    )
