"""What scoring's routers share: the scopes a route requires, the answer for an unknown
customer, and loading a customer's facts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Request

from services.scoring.core.state import CustomerState
from services.scoring.store import queries
from shared.auth import Principal, RequireScope, Scope
from shared.http import ERROR_RESPONSES, ErrorBody

Reader = Annotated[Principal, RequireScope(Scope.OPS_READ)]
Operator = Annotated[Principal, RequireScope(Scope.OPS_WRITE)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "no such customer"},
}


async def load_state(request: Request, customer_id: str) -> CustomerState:
    """The customer's facts, or a 404 for a customer never seen."""
    state = await queries.customer_state(request.app.state.engine, customer_id)
    if state is None:
        raise HTTPException(404, f"no customer with id {customer_id!r} has been seen")
    return state
