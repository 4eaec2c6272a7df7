"""Dry runs of a rule: a preview over the card replica now, and a backtest over the recorded
change stream. Nothing is sent or recorded."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from services.outreach.api.deps import RULE_NOT_FOUND, Outreach, no_such_rule
from services.outreach.core.preview import PreviewResult
from services.outreach.core.rules import Rule
from services.outreach.schemas import RULE_CHECKS, BacktestCoverage, BacktestOut, RuleDefinition
from services.outreach.shell.backtest import backtest
from services.outreach.shell.preview import preview
from services.outreach.shell.service import OutreachState
from services.outreach.shell.template_check import check_template
from services.outreach.store.ledger import all_suppressed
from services.outreach.store.rules import stored_rule
from shared.auth import Principal, RequireScope, Scope
from shared.errors import responses
from shared.params import IsoDateTime

router = APIRouter(prefix="/v1")


# The saved rule is read on a connection of its own, closed before the scans (which read the
# replica a chunk at a time) and the backtest's reading of the change stream.


# A dry run changes nothing: operations read it, and marketing runs it on the rules it writes.
DryRunner = Annotated[Principal, RequireScope(Scope.OPS_READ, Scope.MARKETING_WRITE)]
At = Annotated[
    IsoDateTime | None,
    Query(
        description="Run the preview as at this instant (the policy's quiet hours, cap and "
        "limits then; the cards as they are now). Default: now."
    ),
]
WithinDays = Annotated[
    int,
    Query(ge=1, le=366, description="For a schedule rule: who is due within this many days."),
]


async def _preview(
    outreach: OutreachState, rule: Rule, at: datetime | None, within_days: int
) -> PreviewResult:
    """Run ``rule`` over the replica (as far as the budgets allow) at ``at`` (default: the
    app's now), under the policy in force."""
    return await preview(
        outreach.engine,
        rule,
        outreach.current.policy,
        at or outreach.clock.now(),
        budget=outreach.read_budget,
        within_days=within_days,
        global_control_percent=outreach.settings.global_control_percent,
    )


_PREVIEW_DOC = """The audience is every customer of the card replica (the latest card scoring
published) for whom the rule's conditions hold now and, for a stage trigger with `to` stages,
who is in one of those stages now; a schedule rule's audience is who is due within
`within_days` (listed in `upcoming` with their dates, earliest first); event triggers are
judged by their conditions only. For each, the contact policy in force decides as it would at
`at` (default now; a schedule: at each one's date) — consent, suppression, the rule's limits
against the customer's contact history, open complaints, the frequency cap, quiet hours:
`outcomes` counts the decisions and `reasons` says why the others are held back; `held_out`
says how many of those let through fall in a control arm (the rule's `control_percent`, or the
global control group), recorded `control` and never sent, as the live decision draws them.
Nothing is sent or recorded; `ops:read` or `marketing:write` may run it.

The replica is read in customer id order within a row budget and a time budget (settings),
never fewer than the first 200,000 customers; `coverage` says how many customers were
examined and which budget, if any, stopped the scan."""


@router.post(
    "/rules/preview",
    response_model=PreviewResult,
    responses=responses(RULE_CHECKS),
    tags=["rules"],
    summary="Preview an unsaved rule",
    description="How many customers this rule would reach now, and who.\n\n" + _PREVIEW_DOC,
)
async def preview_unsaved(
    outreach: Outreach,
    rule: RuleDefinition,
    _: DryRunner,
    at: At = None,
    within_days: WithinDays = 30,
) -> PreviewResult:
    await check_template(rule, outreach.settings)  # off the event loop, within the limits
    return await _preview(outreach, rule, at, within_days)


@router.post(
    "/rules/{rule_id}/preview",
    response_model=PreviewResult,
    responses=RULE_NOT_FOUND,
    tags=["rules"],
    summary="Preview a saved rule",
    description="How many customers the saved rule would reach now, and who.\n\n" + _PREVIEW_DOC,
)
async def preview_saved(
    outreach: Outreach,
    rule_id: str,
    _: DryRunner,
    at: At = None,
    within_days: WithinDays = 30,
) -> PreviewResult:
    async with outreach.engine.connect() as conn:
        out = await stored_rule(conn, rule_id)
    if out is None:
        raise no_such_rule(rule_id)
    return await _preview(outreach, out.rule, at, within_days)


_BACKTEST_DOC = """What this rule would have sent over the last `days` days of recorded changes,
after the contact policy in force: the change stream is replayed with this rule as the only
live rule, each customer's changes in the order they were recorded (schedules firing between
them, each customer's simulated contact history, today's suppression list). Each decision is
placed at the instant it would have happened — an event rule's at the event's own time, a
stage rule's at the move into the stage, a schedule's at its instant within the span the
stream covers — so an imported history is judged at the times its events happened;
`decisions_from`/`decisions_to` and `time_basis` say so. Nothing is sent or recorded.

A backtest is bounded by a row budget and a time budget (settings); when one of them cuts the
window, the newest changes are the ones replayed, and never fewer than those of the last 30
days or the newest 200,000, whichever are fewer. `coverage` says what was replayed and which
budget, if any, cut it. Backtests run one at a time (a setting): a request waits for the one
before it; `ops:read` or `marketing:write` may run them."""

Days = Annotated[int, Query(ge=1, le=35, description="how far back to replay")]


async def _backtest(outreach: OutreachState, rule: Rule, days: int) -> BacktestOut:
    async with outreach.engine.connect() as conn:
        suppressed = await all_suppressed(conn)
    now = outreach.clock.now()
    async with outreach.backtests:
        done = await backtest(
            outreach.common,
            outreach.topics.changes,
            rule,
            policy=outreach.current.policy,
            suppressed=suppressed,
            now=now,
            days=days,
            budget=outreach.read_budget,
            global_control_percent=outreach.settings.global_control_percent,
        )
    result = done.result
    return BacktestOut(
        rule_id=rule.id,
        days=days,
        since=now - timedelta(days=days),
        changes=result.changes,
        customers=result.customers,
        decided=result.decided,
        outcomes=dict(result.outcomes),
        reasons=dict(result.reasons),
        held_out=result.held_out,
        decisions_from=result.first_decision_at,
        decisions_to=result.last_decision_at,
        coverage=BacktestCoverage(
            from_=result.first_at,
            to=result.last_at,
            changes=result.changes,
            customers=result.customers,
            complete=done.complete,
            cut_by=done.cut_by,
        ),
    )


@router.post(
    "/rules/backtest",
    response_model=BacktestOut,
    responses=responses(RULE_CHECKS),
    tags=["rules"],
    summary="Backtest an unsaved rule",
    description=_BACKTEST_DOC,
)
async def backtest_unsaved(
    outreach: Outreach, rule: RuleDefinition, _: DryRunner, days: Days = 30
) -> BacktestOut:
    await check_template(rule, outreach.settings)  # off the event loop, within the limits
    return await _backtest(outreach, rule, days)


@router.post(
    "/rules/{rule_id}/backtest",
    response_model=BacktestOut,
    responses=RULE_NOT_FOUND,
    tags=["rules"],
    summary="Backtest a saved rule",
    description=_BACKTEST_DOC,
)
async def backtest_saved(
    outreach: Outreach, rule_id: str, _: DryRunner, days: Days = 30
) -> BacktestOut:
    async with outreach.engine.connect() as conn:
        out = await stored_rule(conn, rule_id)
    if out is None:
        raise no_such_rule(rule_id)
    return await _backtest(outreach, out.rule, days)
