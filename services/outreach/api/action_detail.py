"""``GET /v1/actions/{id}``: one action whole — its ledger row, the message as rendered, the
offer, and every attempt delivery made to send it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from services.outreach.core.unsubscribe import LINK_PLACEHOLDER
from services.outreach.schemas import ActionOut
from services.outreach.store import attempts, tables
from shared.auth import Reader
from shared.errors import ErrorBody, responses
from shared.service_state import Transaction

router = APIRouter(prefix="/v1", tags=["actions"])


class DeliveryAttempt(BaseModel):
    """One attempt to send the action."""

    model_config = ConfigDict(from_attributes=True)

    attempt: int = Field(description="1 for the first")
    at: datetime = Field(description="when the attempt began")
    outcome: str = Field(
        description="`sent`, `retry` (worth trying again: tried later, unless it was the "
        "last the action may have, reason `max_attempts` or `throttled`), `failed` (never "
        "will be), `gone` (the endpoint answered 410: the channel was disabled) or `unknown` "
        "(the receiver may have it; never re-sent). A busy answer (429 or 503 with "
        "Retry-After) is no attempt, and is not kept, unless it gave the action up"
    )
    reason: str | None = Field(description="a short code: http_503, timeout, smtp_550, ...")
    http_status: int | None = Field(description="the receiver's HTTP status (webhooks)")
    error: str | None = Field(description="what went wrong, at most 500 characters")
    duration_ms: int = Field(description="how long the attempt took")


class ActionDetail(ActionOut):
    """An action of the ledger with its message and its delivery."""

    priority: int
    next_attempt_at: datetime | None = Field(description="pending: when delivery tries next")
    last_error: str | None = Field(description="the last attempt's error, as the ledger has it")
    throttled_since: datetime | None = Field(
        None,
        description="since when its receiver has answered it busy (429 or 503 with "
        "Retry-After) every time it was asked; null once any other answer came. Delivery "
        "fails it (reason `throttled`) at a busy answer after the give-up age",
    )
    body: str | None = Field(
        description="the message as rendered when decided. The customer's one-click "
        f"unsubscribe link is minted at each send: the stored text holds `{LINK_PLACEHOLDER}` "
        "where delivery puts it"
    )
    offer: dict[str, Any] | None
    arm: str | None = Field(
        description="`treatment`, `control` (decided but never sent: the rule's hold-out) or "
        "`global_control`; null for an action decided before arms were kept"
    )
    tier: str | None = Field(description="the customer's tier when decided")
    strategy: str | None = Field(description="the customer's strategy when decided")
    goal: dict[str, Any] | None = Field(description="the goal the action is measured against")
    baseline: float | None = Field(
        description="what the model forecast for the goal without the action, when decided"
    )
    delivery_attempts: list[DeliveryAttempt] = Field(description="first first")


_a = tables.actions
_COLUMNS = [_a.c[name] for name in (*ActionDetail.model_fields,) if name in _a.c]


@router.get(
    "/actions/{action_id}",
    response_model=ActionDetail,
    responses=responses({404: {"model": ErrorBody, "description": "no such action"}}),
    summary="One action, its message and its delivery attempts",
)
async def get_action(
    action_id: Annotated[str, Path(max_length=36, description="the action's id")],
    _: Reader,
    conn: Transaction,
) -> ActionDetail:
    """The action's ledger row (status, reason, when decided, deferred or sent), the subject
    and body as rendered when it was decided, its offer, its experiment arm and goal, and
    every delivery attempt: when, how it ended, the receiver's HTTP status or the error, and
    how long it took. An erased customer's actions keep their row under an anonymous id,
    without message or attempts."""
    row = (await conn.execute(select(*_COLUMNS).where(_a.c.id == action_id))).first()
    if row is None:
        raise HTTPException(404, f"no action with id {action_id!r}")
    made = await attempts.of_action(conn, action_id)
    return ActionDetail.model_validate(
        {**row._mapping, "delivery_attempts": [DeliveryAttempt.model_validate(a) for a in made]}
    )
