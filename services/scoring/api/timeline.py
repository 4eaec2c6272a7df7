"""A customer's timeline and their card explained: the reads a person's page of one customer
needs beside the card itself."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.scoring.api.deps import NOT_FOUND, Scoring, load_state
from services.scoring.core.explain import Explanation, explain
from services.scoring.core.timeline import Entry, EntryType, timeline
from services.scoring.store import queries
from shared.auth import Reader
from shared.cursor import CURSOR_RESPONSES, decode_cursor, encode_cursor
from shared.errors import responses
from shared.params import IsoDateTime

router = APIRouter(prefix="/v1", tags=["customers"])


class TimelinePage(BaseModel):
    customer_id: str
    items: list[Entry] = Field(description="newest first")
    next_cursor: str | None = Field(
        description="pass as `cursor` (with the same `type` filter) for the next page; null on "
        "the last page"
    )
    older_visits: int = Field(
        description="visits older than the retention window, kept only as a count: not listed"
    )


# The position after a page's last entry: its time and id (the timeline's order).
class _Cursor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime
    id: str = Field(min_length=1, max_length=600)


@router.get(
    "/customers/{customer_id}/timeline",
    response_model=TimelinePage,
    responses=responses(NOT_FOUND, CURSOR_RESPONSES),
    summary="A customer's timeline",
)
async def get_timeline(
    scoring: Scoring,
    customer_id: str,
    _: Reader,
    types: Annotated[
        list[EntryType] | None,
        Query(
            alias="type",
            description="Only entries of these types; repeat for several.",
            max_length=10,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Entries per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=1000, description="The `next_cursor` of the previous page; omit at first."
        ),
    ] = None,
) -> TimelinePage:
    """What the customer did and what became of them, newest first, one page at a time:
    orders placed and paid (amount, outstanding), refunds, cancellations, complaints opened,
    updated and resolved (severity, category), visits, profile updates (the field names, not
    their values) and lifecycle stage moves. Each entry has a `type`, the instant `at` it
    happened (its event's own time; a stage move at the UTC midnight it happened) and a small
    typed `data`.

    Built from the facts scoring holds: visits older than the retention window are only
    counted (`older_visits`), and a profile update whose fields were all overwritten since
    no longer appears. Actions decided for the customer are outreach's:
    `GET /v1/customers/{id}/touchpoints` there. **404** for a customer never seen; **301** to
    the survivor's timeline for an id merged into another."""
    after = decode_cursor(cursor, _Cursor) if cursor is not None else None
    state = await load_state(scoring, customer_id)
    history = await queries.stage_history(scoring.engine, customer_id)
    moves = [(m.from_stage, m.to_stage, m.at) for m in history.transitions] if history else []
    wanted = set(types or ())
    entries = [
        e
        for e in timeline(state, moves)
        if (not wanted or e.type in wanted)
        and (after is None or (e.at, e.id) < (after.at, after.id))
    ]
    page = entries[:limit]
    last = page[-1] if len(entries) > limit else None
    return TimelinePage(
        customer_id=customer_id,
        items=page,
        next_cursor=encode_cursor(_Cursor(at=last.at, id=last.id)) if last else None,
        older_visits=state.visits_older,
    )


@router.get(
    "/customers/{customer_id}/explanation",
    response_model=Explanation,
    responses=NOT_FOUND,
    summary="A customer's card explained",
)
async def get_explanation(
    scoring: Scoring,
    customer_id: str,
    _: Reader,
    as_of: Annotated[
        IsoDateTime | None,
        Query(description="Explain the card at this instant instead of now."),
    ] = None,
) -> Explanation:
    """Why the card says what it says, in words and figures: which purchase days, silence
    and rhythm put the customer in their stage (and what would move them next); their value
    score against the tier cut-offs and what it is made of; their R, F and M scores (with the
    population's quintile cuts) and the segment they give; their value and predicted value
    against the medians that choose the strategy. Each verdict is the card's own, with
    reasons that carry a stable `code`, the `facts` they rest on and a `text`.

    **404** for a customer never seen; **301** to the survivor's for an id merged into
    another."""
    state = await load_state(scoring, customer_id)
    when = as_of or scoring.clock.now()
    return explain(state, when, scoring.population.current, scoring.settings)
