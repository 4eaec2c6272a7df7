"""A customer's data as scoring holds it, for the right of access (export).

Erasure itself arrives as a ``customer.erased`` event (see :mod:`services.scoring.shell.consumer`);
this module only reads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.scoring.api.deps import NOT_FOUND, Scoring, not_found
from services.scoring.core.card import build_card
from services.scoring.core.state import CustomerState
from services.scoring.schemas import StageChange
from services.scoring.store import queries
from shared.auth import Reader
from shared.card import Card

router = APIRouter(prefix="/v1", tags=["customers"])


class AppliedEvent(BaseModel):
    event_id: str
    applied_at: datetime


class ScoringExport(BaseModel):
    customer_id: str
    card: Card = Field(description="the card as of now")
    facts: dict[str, Any] = Field(
        description="the facts the card is computed from: orders with their states and "
        "amounts, complaints, visits and the profile, as stored"
    )
    history: list[StageChange] = Field(description="lifecycle stage changes, oldest first")
    events: list[AppliedEvent] = Field(description="the ids of every event applied, oldest first")


@router.get(
    "/customers/{customer_id}/export",
    response_model=ScoringExport,
    responses=NOT_FOUND,
    summary="Everything scoring holds on a customer",
)
async def export_customer(scoring: Scoring, customer_id: str, _: Reader) -> ScoringExport:
    """The customer's card, the stored facts behind it (orders, complaints, visits, profile),
    their lifecycle history and the ids of the events applied: what scoring holds on them,
    for a subject access request. An unknown or erased customer is a **404**; an id merged
    into another customer a **301** to the survivor's export (which holds theirs).

    Ingest's `GET /v1/customers/{id}/export` gathers this with what ingest and outreach hold."""
    engine = scoring.engine
    held = await queries.holdings(engine, customer_id)
    if held is None:
        raise await not_found(scoring, customer_id)
    history = await queries.stage_history(engine, customer_id)
    state = CustomerState.from_json(held.facts)
    card = build_card(
        state,
        scoring.clock.now(),
        scoring.population.current,
        scoring.settings,
    )
    return ScoringExport(
        customer_id=customer_id,
        card=card,
        facts=held.facts,
        history=[StageChange.model_validate(t) for t in history.transitions] if history else [],
        events=[AppliedEvent(event_id=e.event_id, applied_at=e.applied_at) for e in held.events],
    )
