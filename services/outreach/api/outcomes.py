"""What acting achieved: conversions per rule, strategy, kind, tier or for the whole program,
each against its baseline (a control group, or the model's forecast), with 95% intervals."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from services.outreach.api.deps import Outreach
from services.outreach.core import lift
from services.outreach.core.outcomes import By, OutcomesReport
from services.outreach.shell.outcomes import TooManyTouches, outcomes_report
from shared.auth import Reader
from shared.errors import beyond_schema, invalid, responses
from shared.params import IsoDateTime
from shared.service_state import Transaction

router = APIRouter(prefix="/v1")

DEFAULT_DAYS = 90

_DOC = f"""What the actions decided in a period achieved, per group (`by`), arm against
baseline. Touches are the ledger rows that reached a customer or stood for one: messages
`sent` (at their `sent_at`) and the control arm's rows (status `control`: decided exactly
like the others, never sent, at the instant they would have gone out, once it has come: a
hold-out waiting out quiet hours touches nobody yet, as a message waiting to go out). The
period is of decision time, `since` to `until` (default: the last {DEFAULT_DAYS} days).
`as_of` gives the report as it stood at an earlier instant: only the touches made and the goal
events that occurred by then count, so a period's table can be read again unchanged later.

**Conversions.** Every rule has a goal (by default an order within its kind's window; or a
visit, a resolved complaint, any event with filters on its data), recorded on each row when
it is decided. Each group is measured on its own touches: a goal event is owed to the
customer's most recent touch of the group before it whose goal it matches and whose window
still covers it (last touch wins), so an order after a win-back and a recall counts for both
rules by rule (each against its own hold-outs, whom another rule's message takes nothing
from), and for the recall alone where both are in one group. An order counts as scoring
counts it: placed or paid, at the earlier of the two, worth its total less its refunds; a
cancelled or fully refunded order is no conversion. With `count: first` a touch converts
once, worth its first order; with `every` each goal event in its window adds its value.
Attribution reads only the ledger and the events outreach kept, so delivering every change
again reaches the same figures.

**Per group and arm** (`treatment`: sent; `control`: held out): `customers` (each customer
once, when touched in the period), `conversions` (those with a converted touch), the
`conversion_rate`, the `revenue` their conversions brought and `revenue_per_customer`.
`by=program` compares the global control group (`control`: customers who receive no
promotional kind at all) with everyone else's treated touches of the kinds it was held out of.

**Baseline.** `control_group` when the group has a control arm (grouped by strategy, kind or
tier, its treated are then only the touches of the rules that held customers out in it):
`conversion_difference` is treatment minus control ({lift.NEWCOMBE}) and `revenue_difference`
the difference of revenue per customer ({lift.BOOTSTRAP}). Without one, `model_forecast`: the
treated customers' rate minus what the model predicted they would do anyway (`forecast_rate`,
the mean over the `forecast_customers` who had a forecast when decided; {lift.FORECAST}).
`none` when neither exists.
`small_sample` when an arm has fewer than {lift.MIN_CUSTOMERS} customers or fewer than
{lift.MIN_CONVERSIONS} conversions; `verdict` is `lift` only when the interval lies above
zero and the sample is not small, `harm` when it lies below zero, `no_difference` when it
holds zero, `too_small` for a small sample, `no_baseline` without one.

**Reduce cost** (when the policy sets `contact_cost`): the contacts the reduce-cost policy
suppressed in the period, their cost, and what those customers still ordered. **Contact mix**:
per tier, promotional against service messages sent (greetings, follow-ups, care).

One request attributes at most `TEND_OUTREACH_OUTCOMES_TOUCH_LIMIT` touches (200,000 by
default): a period holding more answers 422 naming `query.since`."""


@router.get(
    "/outcomes",
    response_model=OutcomesReport,
    responses=responses(
        beyond_schema(
            {
                "query.until": "after `since`",
                "query.as_of": "not in the future",
                "query.since": "a period holding at most the touch limit's touches (a setting)",
            }
        )
    ),
    tags=["outcomes"],
    summary="What acting achieved, against a control group or the model's forecast",
    description=_DOC,
)
async def get_outcomes(
    outreach: Outreach,
    _: Reader,
    conn: Transaction,
    by: Annotated[
        By,
        Query(description="Group by `rule`, `strategy`, `kind`, `tier`, or `program`."),
    ] = "rule",
    since: Annotated[
        IsoDateTime | None,
        Query(description=f"Decided at or after (default: {DEFAULT_DAYS} days before `until`)."),
    ] = None,
    until: Annotated[
        IsoDateTime | None, Query(description="Decided before (default: `as_of`).")
    ] = None,
    as_of: Annotated[
        IsoDateTime | None,
        Query(
            description="The report as it stood at this instant: the touches made and the "
            "goal events that occurred by then (default: now; not later)."
        ),
    ] = None,
) -> OutcomesReport:
    now = outreach.clock.now()
    if as_of is not None and as_of > now:
        raise invalid("query.as_of", "must not be in the future")
    until = until or as_of or now
    if since is None:
        try:
            since = until - timedelta(days=DEFAULT_DAYS)
        except OverflowError:
            raise invalid("query.until", "too early: give since as well") from None
    if until <= since:
        raise invalid("query.until", "must be after since")
    try:
        return await outcomes_report(
            conn,
            by=by,
            since=since,
            until=until,
            policy=outreach.current.policy,
            max_touches=outreach.settings.outcomes_touch_limit,
            now=now,
            as_of=as_of,
        )
    except TooManyTouches as exc:
        raise invalid(
            "query.since",
            f"the period holds {exc.touches} touches, more than the {exc.limit} one request "
            "attributes: choose a later since (or an earlier until)",
        ) from None
