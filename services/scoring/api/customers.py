"""Scoring's read API for one customer, and the operator's levers (refit, sweep)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.scoring.api.deps import NOT_FOUND, Scoring, load_state
from services.scoring.core.card import build_card
from services.scoring.shell.refit import refit
from services.scoring.shell.sweep import sweep_all
from shared.auth import Operator, Reader
from shared.card import Card
from shared.errors import ERROR_RESPONSES
from shared.params import IsoDateTime

router = APIRouter(prefix="/v1")


@router.get(
    "/customers/{customer_id}",
    response_model=Card,
    responses=NOT_FOUND,
    tags=["customers"],
    summary="A customer's score card",
)
async def get_customer(
    scoring: Scoring,
    customer_id: str,
    _: Reader,
    as_of: Annotated[
        IsoDateTime | None,
        Query(
            description="Evaluate time-dependent figures (spend windows, recency, P(alive), "
            "stage) at this instant instead of now; only events up to it count."
        ),
    ] = None,
) -> Card:
    """The customer's card: profile, value, RFM, prediction (P(alive), expected orders, CLV),
    tier, strategy, lifecycle stage, complaints and visits.

    An id merged into another customer answers **301** with `Location` the survivor's card
    (the same query) and a body naming the survivor; a customer never seen is a **404**."""
    state = await load_state(scoring, customer_id)
    when = as_of or scoring.clock.now()
    return build_card(state, when, scoring.population.current, scoring.settings)


class RefitOut(BaseModel):
    customers: int
    buyers: int
    changed: int
    fit_seconds: float
    total_seconds: float
    population: dict[str, Any]
    kept: list[str] = Field(
        description="models (`bg_nbd`, `gamma_gamma`) whose fit did not converge on this "
        "population, so their parameters in force were kept"
    )


@router.post(
    "/ops/refit",
    response_model=RefitOut,
    responses=ERROR_RESPONSES,
    tags=["operations"],
    summary="Refit the population now",
)
async def post_refit(
    scoring: Scoring,
    _: Operator,
    as_of: Annotated[IsoDateTime | None, Query(description="fit at this instant")] = None,
) -> RefitOut:
    """Refit RFM quintiles, 80/20 tier cut points, the median purchase gap and the BG/NBD and
    Gamma-Gamma parameters from every customer, then publish a change (`cause: refresh`) for
    each customer whose tier, strategy or segment moved, or whose card's figures that time
    alone moves (trailing windows, RFM scores, overdue complaints; P(alive) and the chances of
    an order in steps of 0.05) differ from the last card published for them. Runs on a
    schedule too (`TEND_SCORING_REFIT_INTERVAL_SECONDS`)."""
    s = scoring
    report = await refit(s.engine, s.clock, s.population, s.settings, as_of)
    s.relay.nudge()
    return RefitOut(
        customers=report.customers,
        buyers=report.buyers,
        changed=report.changed,
        fit_seconds=report.fit_seconds,
        total_seconds=report.total_seconds,
        population=report.population.model_dump(mode="json"),
        kept=report.kept,
    )


class SweepOut(BaseModel):
    due: int
    moved: int
    at: datetime


@router.post(
    "/ops/sweep",
    response_model=SweepOut,
    responses=ERROR_RESPONSES,
    tags=["operations"],
    summary="Move due stages now",
)
async def post_sweep(scoring: Scoring, _: Operator) -> SweepOut:
    """Find every customer whose stage is due to move with time, or whose membership tier
    time may lower (indexed by the moment it is due), and publish a `cause: time` change for
    each stage or membership tier that moved. Runs on a schedule
    too (`TEND_SCORING_SWEEP_INTERVAL_SECONDS`)."""
    s = scoring
    due, moved = await sweep_all(s.engine, s.clock, s.population, s.settings)
    s.relay.nudge()
    return SweepOut(due=due, moved=moved, at=s.clock.now())
