"""``GET /v1/customers/{id}/schedule``: what outreach will do next for one customer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import Row, text

from services.outreach.api.deps import Outreach
from services.outreach.core.policy import TEAM, standing_refusal
from services.outreach.shell.current import Current
from services.outreach.store import aliases, replica, suppressions
from shared.auth import Reader
from shared.errors import responses
from shared.service_state import Transaction

router = APIRouter(prefix="/v1", tags=["actions"])

# A customer has one schedule row per schedule rule and a few actions waiting; the caps only
# bound the answer should a shop write thousands of rules.
MAX_ROWS = 500


class HeldBack(BaseModel):
    reason: str = Field(
        description="the contact policy's reason: `suppressed`, `no_consent`, `reduce_cost`"
    )
    detail: str = Field(description="for people: which consent is missing, say")


class ScheduledNext(BaseModel):
    rule_id: str
    kind: str | None = Field(description="the rule's action kind; null once the rule is gone")
    due_at: datetime = Field(description="when the rule next fires for the customer")
    waiting_since: datetime | None = Field(
        None,
        description="since when the rule's daily limit has passed the customer over: they "
        "wait in its line for a day with a slot, the most valuable first (null: they do not)",
    )
    conditions_hold: bool | None = Field(
        None,
        description="whether the rule would act for the customer were the row due now: its "
        "conditions (a stage or membership rule's, its episode too) hold on their card as "
        "outreach holds it. A rule that does not hold when the row comes due does nothing "
        "for them then (null: the rule is gone, paused or broken, or there is no card yet)",
    )
    held_back: HeldBack | None = Field(
        None,
        description="what in the customer's own standing would hold the rule's action back "
        "when it is decided (the suppression list, their consent to its channel or to "
        "marketing, a reduce-cost strategy's promotions): it would be recorded as "
        "suppressed, not sent. Null when nothing does, or the conditions do not hold (the "
        "rule's limits, the frequency cap, quiet hours and open complaints are judged then)",
    )


class WaitingAction(BaseModel):
    id: str = Field(description="the action's id (`GET /v1/actions/{id}` shows it whole)")
    rule_id: str
    kind: str
    channel: str
    status: str = Field(
        description="`scheduled` (quiet hours, the frequency cap: goes out at `not_before`), "
        "`held` (an open complaint: decided again when it is resolved) or `pending` (due now, "
        "waiting for delivery or for a retry at `next_attempt_at`)"
    )
    reason: str | None = Field(description="why it waits: quiet_hours, frequency_cap, ...")
    detail: str | None
    decided_at: datetime
    not_before: datetime | None = Field(description="not sent before this instant")
    next_attempt_at: datetime | None = Field(description="pending: the next delivery attempt")


class CustomerSchedule(BaseModel):
    customer_id: str
    scheduled: list[ScheduledNext] = Field(
        description="schedule rules (birthdays, days after an order, calendars, cron), and "
        "stage, membership or broadcast rules whose daily limit left the customer in their "
        "line, soonest first"
    )
    waiting: list[WaitingAction] = Field(
        description="decided actions not yet delivered: due now (pending), then deferred "
        "(scheduled, by `not_before`), then held"
    )


_SCHEDULED = text(
    """
    SELECT s.rule_id, r.definition -> 'action' ->> 'kind' AS kind, s.due_at, s.waiting_since
    FROM outreach.schedule s
    LEFT JOIN outreach.rules r ON r.id = s.rule_id AND r.deleted_at IS NULL
    WHERE s.customer_id = :id AND s.due_at IS NOT NULL  -- null: nothing left to fire
    ORDER BY s.due_at, s.rule_id
    LIMIT :limit
    """
)
# The partial index ix_actions_waiting does not lead with the customer; their own index does.
_WAITING = text(
    """
    SELECT id, rule_id, kind, channel, status, reason, detail, decided_at, not_before,
        next_attempt_at
    FROM outreach.actions
    WHERE customer_id = :id AND status IN ('scheduled', 'held', 'pending')
    -- Due now, then deferred to a known instant, then held until a complaint is resolved.
    ORDER BY CASE status WHEN 'pending' THEN 0 WHEN 'scheduled' THEN 1 ELSE 2 END,
        coalesce(next_attempt_at, not_before, decided_at), id
    LIMIT :limit
    """
)


def _judged(
    row: Row[Any], customer_id: str, card: Any, suppressed: bool, current: Current
) -> ScheduledNext:
    """A schedule row with what the rules and the policy in force make of it for the
    customer's card now (``suppressed``: they are on the suppression list)."""
    scheduled = ScheduledNext.model_validate(row._mapping)
    if card is None:
        return scheduled
    scheduled.conditions_hold = current.ruleset.would_act(row.rule_id, customer_id, card)
    rule = current.rules.get(row.rule_id)
    if not scheduled.conditions_hold or rule is None or rule.action.audience == TEAM:
        return scheduled  # an alert to the shop's people is not held back by their standing
    if suppressed:
        scheduled.held_back = HeldBack(reason="suppressed", detail="customer is suppressed")
        return scheduled
    refused = standing_refusal(card, rule.action.kind, rule.action.channel, current.policy)
    if refused is not None and refused.reason is not None:
        scheduled.held_back = HeldBack(reason=refused.reason, detail=refused.detail)
    return scheduled


@router.get(
    "/customers/{customer_id}/schedule",
    response_model=CustomerSchedule,
    responses=responses(),
    summary="What is scheduled next for a customer",
)
async def customer_schedule(
    customer_id: str, _: Reader, outreach: Outreach, conn: Transaction
) -> CustomerSchedule:
    """When each schedule rule next fires for the customer (in their own time zone, already
    turned into an instant), and when a rule whose daily limit passed them over decides for
    them again (`waiting_since`: in its line since then); and the actions decided for them
    that have not gone out yet: deferred by quiet hours or the frequency cap until
    `not_before`, held while a complaint is open, or due and waiting for delivery. Each
    scheduled row says whether its rule's conditions hold for the customer now
    (`conditions_hold`): every schedule rule keeps a row for every customer, and one whose
    conditions do not hold when it comes due does nothing for them; and what in their own
    standing would hold its action back (`held_back`: suppressed, or no consent to its
    channel, say). An
    unknown customer has nothing scheduled: two empty lists. At most 500 of each. A customer
    id merged into another answers for the customer it was merged into (`customer_id` in the
    answer names that survivor)."""
    customer_id = await aliases.survivor_of(conn, customer_id)
    params = {"id": customer_id, "limit": MAX_ROWS}
    scheduled = (await conn.execute(_SCHEDULED, params)).all()
    waiting = (await conn.execute(_WAITING, params)).all()
    card = await replica.card_of(conn, customer_id) if scheduled else None
    suppressed = card is not None and await suppressions.is_suppressed(conn, customer_id)
    return CustomerSchedule(
        customer_id=customer_id,
        scheduled=[_judged(r, customer_id, card, suppressed, outreach.current) for r in scheduled],
        waiting=[WaitingAction.model_validate(r._mapping) for r in waiting],
    )
