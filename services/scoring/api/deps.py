"""What scoring's routers share: the running service, the answer for an unknown customer, and
loading a customer's facts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException

from services.scoring.core.state import CustomerState
from services.scoring.shell.service import ScoringState
from services.scoring.store import queries
from shared.errors import ERROR_RESPONSES, ErrorBody
from shared.service_state import typed_state

Scoring = Annotated[ScoringState, typed_state(ScoringState)]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "no such customer"},
}


async def load_state(scoring: ScoringState, customer_id: str) -> CustomerState:
    """The customer's facts, or a 404 for a customer never seen."""
    state = await queries.customer_state(scoring.engine, customer_id)
    if state is None:
        raise HTTPException(404, f"no customer with id {customer_id!r} has been seen")
    return state
