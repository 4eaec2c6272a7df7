"""The cohort table: customers by the month of their first purchase, and how many of them are
still in the active base 1, 3, 6 and 12 months on."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.scoring.api.deps import Scoring
from services.scoring.core.lifecycle import day_of
from services.scoring.core.periods import Period, add_periods, period_start, periods_between
from services.scoring.store import flow as flow_store
from shared.auth import Reader
from shared.errors import beyond_schema, invalid, responses
from shared.params import IsoDate

router = APIRouter(prefix="/v1/stats", tags=["stats"])

DEFAULT_MONTHS = 24
MAX_MONTHS = 600
# How many months after acquisition each cohort is checked.
CHECKS = (1, 3, 6, 12)


class CohortCheck(BaseModel):
    months: int = Field(description="1, 3, 6 or 12")
    at: date = Field(
        description="the day this check looks at: the first day of the month after the "
        "acquisition month, plus `months` months; a customer counts as active when in a stage "
        "other than `prospect` and `churned` at the end of the day before"
    )
    active: int | None = Field(
        description="how many of the cohort were active then; null while `at` is in the future"
    )
    share: float | None = Field(
        description="active / acquired (0-1); null while `at` is in the future or when "
        "nobody was acquired that month"
    )


class Cohort(BaseModel):
    month: date = Field(description="first day of the month of acquisition")
    acquired: int = Field(description="customers whose first purchase was in this month")
    still_active: list[CohortCheck] = Field(description="one check per horizon: 1, 3, 6, 12")


class Cohorts(BaseModel):
    since: date = Field(description="first day of the first month")
    until: date = Field(description="last day of the last month")
    cohorts: list[Cohort] = Field(description="oldest first, one per month, empty ones included")


@router.get(
    "/cohorts",
    response_model=Cohorts,
    responses=responses(
        beyond_schema(
            {
                "query.since": f"not after `until`, and at most {MAX_MONTHS} months before it "
                "(the default range must start after year 1)",
                "query.until": "its month's 12-month check must fall by 9999-12-01",
            }
        )
    ),
    summary="Cohorts: customers acquired per month and the share still active after 1, 3, 6, "
    "12 months",
)
async def get_cohorts(
    scoring: Scoring,
    _: Reader,
    since: Annotated[
        IsoDate | None,
        Query(
            description="A day in the first month to report (its whole month counts). "
            f"Default: {DEFAULT_MONTHS - 1} months before the month of `until`."
        ),
    ] = None,
    until: Annotated[
        IsoDate | None,
        Query(
            description="A day in the last month to report (its whole month counts). "
            "Default: today (UTC)."
        ),
    ] = None,
) -> Cohorts:
    """Customers grouped by the month of their first purchase (`acquired`), and for each
    group how many are still in the active base — in a stage other than `prospect` and
    `churned` — 1, 3, 6 and 12 months on, counted from the start of the month after the one
    they were acquired in: a customer acquired in January is checked on 1 March (1 month),
    1 May (3), 1 August (6) and 1 February of the next year (12). A customer who churned and
    came back before a check counts as active at it.

    Read it down a column to see whether newer customers stay better than older ones, and
    along a row to see how fast a month's customers fall away. A check still in the future
    is null, not zero. Everything is in event time (UTC days), so an imported history shows
    its past; a churn shows once the periodic sweep has reached the customer."""
    now = scoring.clock.now()
    last_day = until or day_of(now)
    if since is not None and since > last_day:
        raise invalid("query.since", f"must not be after until ({last_day.isoformat()})")
    last = period_start(last_day, Period.MONTH)
    try:
        end = add_periods(last, Period.MONTH, 1)
        add_periods(last, Period.MONTH, 1 + max(CHECKS))
    except (OverflowError, ValueError):
        raise invalid("query.until", "its month's 12-month check must fall by 9999-12-01") from None
    if since is not None:
        first = period_start(since, Period.MONTH)
    else:
        try:
            first = add_periods(last, Period.MONTH, -(DEFAULT_MONTHS - 1))
        except (OverflowError, ValueError):
            raise invalid(
                "query.since", "the default range starts before year 1; give since"
            ) from None
    count = periods_between(first, last, Period.MONTH)
    if count > MAX_MONTHS:
        raise invalid(
            "query.since",
            f"the range spans {count} months; at most {MAX_MONTHS} per request: narrow it",
        )
    found = await flow_store.cohorts(scoring.engine, first, end, CHECKS)
    rows: list[Cohort] = []
    for n in range(count):
        month = add_periods(first, Period.MONTH, n)
        figures = found.get(month)
        acquired = figures.acquired if figures else 0
        checks = []
        for months in CHECKS:
            at = add_periods(month, Period.MONTH, 1 + months)
            active: int | None = None
            share: float | None = None
            if datetime(at.year, at.month, at.day, tzinfo=UTC) <= now:
                active = figures.active[months] if figures else 0
                share = active / acquired if acquired else None
            checks.append(CohortCheck(months=months, at=at, active=active, share=share))
        rows.append(Cohort(month=month, acquired=acquired, still_active=checks))
    return Cohorts(since=first, until=add_periods(end, Period.DAY, -1), cohorts=rows)
