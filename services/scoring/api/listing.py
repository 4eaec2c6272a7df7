"""Scoring's read API over many customers: the filtered, sorted listing and a customer's
stage history."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from services.scoring.api.deps import NOT_FOUND, Scoring, not_found
from services.scoring.core.identities import search_values
from services.scoring.schemas import StageChange
from services.scoring.store import queries
from services.scoring.store.queries import Filters, Order, Position, Sort, SortKey
from shared.auth import Reader
from shared.card import Money, Segment, Stage, Strategy, Tier
from shared.cursor import CURSOR_RESPONSES, NOT_A_CURSOR, decode_cursor, encode_cursor
from shared.errors import invalid, responses

router = APIRouter(prefix="/v1", tags=["customers"])


class CustomerSummary(BaseModel):
    """One customer in a listing: the figures operations filter and sort on."""

    model_config = ConfigDict(from_attributes=True)

    customer_id: str
    name: str | None
    email: str | None
    stage: Stage
    stage_since: date | None = Field(description="the day the customer entered the stage")
    tier: Tier | None = Field(description="null until the population has been fitted")
    segment: Segment | None = Field(
        description="RFM segment; null for prospects and until the population has been fitted"
    )
    strategy: Strategy | None
    value_score: float = Field(description="the composite that tiers rank on")
    lifetime_spend: Money = Field(description="net of refunds")
    clv: float | None = Field(description="predicted value over the next 365 days")
    p_alive: float | None = Field(
        description="probability the customer is still active (BG/NBD); null until they have "
        "bought on a second day, since the model judges that a customer has left from the "
        "gaps between repeat purchases (as their card's `prediction.p_alive`)"
    )
    last_order_at: datetime | None


class CustomerPage(BaseModel):
    items: list[CustomerSummary]
    next_cursor: str | None = Field(
        description="pass as `cursor` (with the same filters, `sort` and `order`) for the next "
        "page; null on the last page"
    )


class StageHistory(BaseModel):
    customer_id: str
    stage: Stage
    stage_since: date | None
    transitions: list[StageChange] = Field(description="oldest first")


@router.get(
    "/customers",
    response_model=CustomerPage,
    responses=responses(CURSOR_RESPONSES),
    summary="List customers",
)
async def list_customers(
    scoring: Scoring,
    _: Reader,
    stage: Annotated[
        list[Stage] | None, Query(description="Only these stages; repeat for any of several.")
    ] = None,
    tier: Annotated[
        list[Tier] | None, Query(description="Only these tiers; repeat for any of several.")
    ] = None,
    segment: Annotated[
        list[Segment] | None,
        Query(description="Only these RFM segments; repeat for any of several."),
    ] = None,
    strategy: Annotated[
        list[Strategy] | None,
        Query(description="Only these strategies; repeat for any of several."),
    ] = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Text found anywhere in the name, email or phone, in any case; or "
            "a customer id (an id merged into a customer finds the survivor); or any "
            "identifier the customer is known by: an email in any case, a phone in any "
            "format (read in `TEND_PHONE_REGION` without a country code), an external id.",
        ),
    ] = None,
    tag: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            description="Only customers whose profile has this tag (exactly, case included).",
        ),
    ] = None,
    sort: Annotated[
        Sort,
        Query(
            description="`value` (value score), `clv`, `p_alive`, `last_order` or `name` "
            "(alphabetical in any case); customers without the figure come last either way."
        ),
    ] = Sort.VALUE,
    order: Annotated[Order, Query(description="`desc` (highest first) or `asc`.")] = Order.DESC,
    limit: Annotated[int, Query(ge=1, le=500, description="Customers per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=1000,
            description="The `next_cursor` of the previous page; omit for the first page.",
        ),
    ] = None,
) -> CustomerPage:
    """Customers matching every filter given, one page at a time. Values within one filter
    are alternatives (`stage=declining&stage=churned`); different filters must all hold.

    Follow `next_cursor` until it is null to walk the whole result. A page starts after the
    previous page's last customer, so customers added or removed meanwhile never shift the
    next page; only a customer whose sorted figure changes while you page can show up twice
    or be missed. Figures are as of each customer's last update (event, stage sweep or
    population refit)."""
    after = _decode_cursor(cursor, sort, order) if cursor is not None else None
    filters = Filters(
        stages=stage or (),
        tiers=tier or (),
        segments=segment or (),
        strategies=strategy or (),
        text=q,
        identifiers=search_values(q, scoring.common.phone_region) if q else (),
        tag=tag,
    )
    page = await queries.list_customers(scoring.engine, filters, sort, order, after, limit)
    return CustomerPage(
        items=[CustomerSummary.model_validate(row) for row in page.rows],
        next_cursor=_encode_cursor(sort, order, page.next) if page.next else None,
    )


@router.get(
    "/customers/{customer_id}/history",
    response_model=StageHistory,
    responses=NOT_FOUND,
    summary="A customer's lifecycle stage history",
)
async def get_history(scoring: Scoring, customer_id: str, _: Reader) -> StageHistory:
    """Every lifecycle stage change of the customer in event time, oldest first (the first is
    out of `prospect`, on the day of the first purchase), and the stage they are in now.

    Late events rewrite the past: the history is recomputed from all of the customer's
    purchases whenever they change, and a stage that time alone moves (`declining`,
    `churned`) appears once the periodic sweep has reached the customer. **404** for a
    customer never seen; **301** to the survivor's history for an id merged into another."""
    history = await queries.stage_history(scoring.engine, customer_id)
    if history is None:
        raise await not_found(scoring, customer_id)
    return StageHistory(
        customer_id=history.customer_id,
        stage=Stage(history.stage),
        stage_since=history.stage_since,
        transitions=[StageChange.model_validate(t) for t in history.transitions],
    )


# -- cursors -----------------------------------------------------------------------------------
#
# A cursor is base64url JSON of the last row's sort key and id, plus the sort it belongs to,
# so a cursor replayed under another sort is refused rather than silently skipping rows.


class _Cursor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    s: Sort
    o: Order
    k: StrictFloat | StrictInt | StrictStr | None
    id: StrictStr = Field(min_length=1, max_length=128)


def _encode_cursor(sort: Sort, order: Order, position: Position) -> str:
    key = position.key.isoformat() if isinstance(position.key, datetime) else position.key
    return encode_cursor(_Cursor(s=sort, o=order, k=key, id=position.customer_id))


def _decode_cursor(token: str, sort: Sort, order: Order) -> Position:
    cursor = decode_cursor(token, _Cursor)
    if (cursor.s, cursor.o) != (sort, order):
        raise invalid(
            "query.cursor",
            f"the cursor continues sort={cursor.s.value}&order={cursor.o.value}; "
            "repeat those or start without a cursor",
        )
    return Position(_key(cursor.k, sort), cursor.id)


def _key(raw: float | str | None, sort: Sort) -> SortKey:
    if raw is None:
        return None
    if sort is Sort.NAME:
        if not isinstance(raw, str):
            raise invalid("query.cursor", NOT_A_CURSOR)
        return raw
    if sort is Sort.LAST_ORDER:
        try:
            moment = datetime.fromisoformat(raw) if isinstance(raw, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise invalid("query.cursor", NOT_A_CURSOR)
        return moment
    if isinstance(raw, str) or not math.isfinite(raw):
        raise invalid("query.cursor", NOT_A_CURSOR)
    return float(raw)
