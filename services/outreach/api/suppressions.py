"""The suppression list: customers who hear nothing from outreach, whatever the rule. Every
change is written to the audit log in the transaction that makes it: the request's own."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException, Query, Response

from services.outreach.api.deps import Outreach
from services.outreach.schemas import (
    Suppression,
    SuppressionIn,
    SuppressionLift,
    SuppressionPage,
)
from services.outreach.shell import opt_out
from services.outreach.store import aliases, suppressions
from shared import audit
from shared.auth import MarketingWriter, Principal, Reader, RequireScope, Scope
from shared.cursor import CURSOR_RESPONSES, decode_text_cursor, encode_text_cursor
from shared.errors import ERROR_RESPONSES, ErrorBody, invalid, responses
from shared.logging import get_logger
from shared.service_state import Transaction

log = get_logger(__name__)

router = APIRouter(prefix="/v1")

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "the customer is not suppressed"},
}


@router.get(
    "/suppressions",
    response_model=SuppressionPage,
    responses=responses(CURSOR_RESPONSES),
    tags=["suppressions"],
    summary="List suppressed customers",
)
async def list_suppressions(
    _: Reader,
    conn: Transaction,
    limit: Annotated[int, Query(ge=1, le=1000, description="Suppressions per page.")] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=400, description="The `next_cursor` of the previous page; omit at first."),
    ] = None,
) -> SuppressionPage:
    """The customers who hear nothing from outreach, whatever the rule, in customer id order,
    one page at a time."""
    after = decode_text_cursor(cursor) if cursor is not None else None
    rows = await suppressions.page(conn, after, limit + 1)
    more = len(rows) > limit
    items = list(rows[:limit])
    return SuppressionPage(
        items=items, next_cursor=encode_text_cursor(items[-1].customer_id) if more else None
    )


@router.post(
    "/suppressions",
    status_code=201,
    response_model=Suppression,
    responses={**ERROR_RESPONSES, 200: {"model": Suppression, "description": "already there"}},
    tags=["suppressions"],
    summary="Suppress a customer",
)
async def add_suppression(
    outreach: Outreach,
    body: SuppressionIn,
    response: Response,
    principal: MarketingWriter,
    conn: Transaction,
) -> Suppression:
    """Put the customer on the suppression list: from now on every action for them is
    suppressed when decided, and any still waiting is suppressed when it would be delivered.
    201 when added; 200 with the existing entry when the customer already was suppressed.
    A customer id merged into another suppresses the customer it was merged into (the entry
    answered names that survivor)."""
    body = body.model_copy(
        update={"customer_id": await aliases.survivor_of(conn, body.customer_id)}
    )
    added = await suppressions.add(conn, body.customer_id, body.reason, outreach.clock.now())
    if added is None:
        response.status_code = 200
        existing = await suppressions.get(conn, body.customer_id)
        assert existing is not None  # the insert met it, in this very transaction
        entry = existing
    else:
        entry = added
        await audit.record(
            conn,
            actor=audit.Actor.of(principal),
            service="outreach",
            action="suppression.created",
            subject=body.customer_id,
            after=entry,
        )
    log.info("customer_suppressed", customer_id=body.customer_id, actor=principal.name)
    return entry


_LIFT: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    403: {
        "model": ErrorBody,
        "description": "the key lacks `marketing:write` and `ops:write`, or the customer "
        "unsubscribed themselves and the key lacks `ops:write`",
    },
}
# Marketing lifts what marketing added; an operator may lift anything, a customer's own
# unsubscribe only with a reason.
Lifter = Annotated[Principal, RequireScope(Scope.MARKETING_WRITE, Scope.OPS_WRITE)]


@router.delete(
    "/suppressions/{customer_id}",
    status_code=204,
    response_class=Response,
    responses=_LIFT,
    tags=["suppressions"],
    summary="Lift a suppression",
)
async def delete_suppression(
    outreach: Outreach,
    customer_id: str,
    principal: Lifter,
    conn: Transaction,
    body: Annotated[
        SuppressionLift | None,
        Body(
            openapi_examples={
                "a customer's own unsubscribe, lifted by operations": {
                    "value": {"reason": "the customer asked by phone to hear from us (ticket 4211)"}
                }
            }
        ),
    ] = None,
) -> Response:
    """Take the customer off the suppression list; new decisions may reach them again
    (actions already suppressed stay suppressed). The `reason`, when given, is kept in the
    audit log.

    A suppression added here (`source: api`) may be lifted with `marketing:write` or
    `ops:write`. The customer's own unsubscribe (`source: unsubscribe`) is theirs: their
    re-subscribe link lifts it, and otherwise only an `ops:write` key with a `reason` (403
    for any other key, 422 without a reason); scoring's card then no longer shows them
    unsubscribed. A customer id merged into another lifts the suppression of the customer it
    was merged into."""
    customer_id = await aliases.survivor_of(conn, customer_id)
    entry = await suppressions.get(conn, customer_id, for_update=True)
    if entry is None:
        raise HTTPException(404, f"customer {customer_id!r} is not suppressed")
    reason = body.reason if body is not None else None
    how: Literal["operator"] | None = None
    if entry.source == opt_out.SOURCE:
        if Scope.OPS_WRITE.value not in principal.scopes:
            raise HTTPException(
                403,
                f"customer {customer_id!r} unsubscribed through the link in a message: only "
                "their own re-subscribe link, or an 'ops:write' key with a reason, lifts that",
            )
        if reason is None:
            raise invalid(
                "body.reason",
                "lifting a customer's own unsubscribe needs a reason (kept in the audit log)",
            )
        how = "operator"
    await opt_out.lift(
        conn,
        entry,
        outreach.clock.now(),
        actor=audit.Actor.of(principal),
        how=how,
        reason=reason,
    )
    return Response(status_code=204)
