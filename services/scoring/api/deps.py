"""What scoring's routers share: the running service, the answers for an unknown and for a
merged customer, and loading a customer's facts."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.scoring.core.state import CustomerState
from services.scoring.shell.service import ScoringState
from services.scoring.store import identities, queries
from shared.errors import ERROR_RESPONSES, ErrorBody
from shared.service_state import typed_state

Scoring = Annotated[ScoringState, typed_state(ScoringState)]


class MergedBody(BaseModel):
    """The answer for a customer id merged into another: the survivor holds their card."""

    error: str = "merged"
    message: str
    customer_id: str = Field(description="the id asked for, now an alias")
    survivor_id: str = Field(description="the customer it was merged into")
    location: str = Field(description="the same request for the survivor (also `Location`)")


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    301: {
        "model": MergedBody,
        "description": "the id was merged into another customer: `Location` is the same "
        "request for the survivor",
    },
    404: {"model": ErrorBody, "description": "no such customer"},
}


class Merged(Exception):
    """Raised by a per-customer route for an alias: answered 301 (:func:`merged_response`)."""

    def __init__(self, customer_id: str, survivor_id: str) -> None:
        super().__init__(customer_id, survivor_id)
        self.customer_id = customer_id
        self.survivor_id = survivor_id


async def merged_response(request: Request, exc: Exception) -> JSONResponse:
    """301 to the same path and query with the survivor in the alias's place."""
    assert isinstance(exc, Merged)
    path = request.url.path.replace(
        f"/customers/{quote(exc.customer_id, safe='')}",
        f"/customers/{quote(exc.survivor_id, safe='')}",
        1,
    )
    location = path + (f"?{request.url.query}" if request.url.query else "")
    body = MergedBody(
        message=f"customer {exc.customer_id!r} was merged into {exc.survivor_id!r}",
        customer_id=exc.customer_id,
        survivor_id=exc.survivor_id,
        location=location,
    )
    return JSONResponse(body.model_dump(), status_code=301, headers={"Location": location})


async def not_found(scoring: ScoringState, customer_id: str) -> HTTPException:
    """The answer for a customer id without a card: a 301 to its survivor when it was merged
    (raised here), else a 404 for the caller to raise."""
    survivor = await identities.survivor_of(scoring.engine, customer_id)
    if survivor is not None:
        raise Merged(customer_id, survivor)
    return HTTPException(404, f"no customer with id {customer_id!r} has been seen")


async def load_state(scoring: ScoringState, customer_id: str) -> CustomerState:
    """The customer's facts; a 301 for a merged id, a 404 for a customer never seen."""
    state = await queries.customer_state(scoring.engine, customer_id)
    if state is None:
        raise await not_found(scoring, customer_id)
    return state
