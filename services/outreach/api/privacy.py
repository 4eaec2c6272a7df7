"""What outreach holds on a customer, for the right of access (export).

Erasure arrives as an ``erasure`` change (see :mod:`services.outreach.store.erasure`).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import text

from services.outreach.schemas import (
    ExportedAction,
    ExportedGoalEvent,
    ExportedSuppression,
    OutreachExport,
    ScheduledRule,
)
from services.outreach.store import aliases
from shared.auth import Reader
from shared.errors import ERROR_RESPONSES, ErrorBody
from shared.service_state import Transaction

router = APIRouter(prefix="/v1", tags=["customers"])


@router.get(
    "/customers/{customer_id}/export",
    response_model=OutreachExport,
    responses={**ERROR_RESPONSES, 404: {"model": ErrorBody, "description": "nothing held"}},
    summary="Everything outreach holds on a customer",
)
async def export_customer(customer_id: str, _: Reader, conn: Transaction) -> OutreachExport:
    """The card replica, the suppression, the schedule, every action decided for the
    customer with the message as rendered, and the events kept to measure outcomes: what
    outreach holds on them, for a subject access request. **404** when outreach holds
    nothing (never seen, or erased).

    A customer id merged into another answers the export of the customer it was merged into
    (the survivor, which holds its actions and events), with every id merged into it.

    Ingest's `GET /v1/customers/{id}/export` gathers this with what ingest and scoring hold."""
    customer_id = await aliases.survivor_of(conn, customer_id)
    merged_ids = await aliases.aliases_of(conn, customer_id)
    params = {"id": customer_id}
    card = await conn.scalar(
        text("SELECT card FROM outreach.cards WHERE customer_id = :id"), params
    )
    suppression = (
        await conn.execute(
            text(
                "SELECT reason, source, created_at FROM outreach.suppressions "
                "WHERE customer_id = :id"
            ),
            params,
        )
    ).first()
    schedule = (
        await conn.execute(
            text(
                "SELECT rule_id, due_at FROM outreach.schedule WHERE customer_id = :id "
                "AND due_at IS NOT NULL ORDER BY due_at, rule_id"
            ),
            params,
        )
    ).all()
    actions = (
        await conn.execute(
            text("SELECT * FROM outreach.actions WHERE customer_id = :id ORDER BY decided_at, id"),
            params,
        )
    ).all()
    goal_events = (
        await conn.execute(
            text(
                "SELECT event_id, event_type, occurred_at, revenue, data "
                "FROM outreach.goal_events WHERE customer_id = :id ORDER BY occurred_at, event_id"
            ),
            params,
        )
    ).all()
    if card is None and suppression is None and not actions and not goal_events:
        raise HTTPException(404, f"outreach holds nothing on customer {customer_id!r}")
    return OutreachExport(
        customer_id=customer_id,
        merged_ids=merged_ids,
        card=card,
        suppression=ExportedSuppression.model_validate(suppression._mapping)
        if suppression
        else None,
        schedule=[ScheduledRule(rule_id=r.rule_id, due_at=r.due_at) for r in schedule],
        actions=[ExportedAction.model_validate(a._mapping) for a in actions],
        goal_events=[ExportedGoalEvent.model_validate(e._mapping) for e in goal_events],
    )
