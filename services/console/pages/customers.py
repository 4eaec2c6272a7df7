"""Customers: search and filters over scoring's listing, and one customer's page (the card
explained, their timeline, touchpoints and what is scheduled next)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from services.console.clients.api import ApiError
from services.console.pages.web import Refused, SignedIn, caller, fetch, fetch_all, render
from shared.card import Segment, Stage, Strategy, Tier

router = APIRouter()

PAGE = 25
Many = Annotated[list[str] | None, Query()]


def _kept(values: list[str] | None, allowed: type[Any]) -> list[str]:
    known = {v.value for v in allowed}
    return [v for v in values or [] if v in known]


@router.get("/customers", include_in_schema=False)
async def customers(
    request: Request,
    session: SignedIn,
    q: Annotated[str, Query(max_length=200)] = "",
    stage: Many = None,
    tier: Many = None,
    segment: Many = None,
    strategy: Many = None,
    tag: Annotated[str, Query(max_length=64)] = "",
    sort: Literal["value", "clv", "p_alive", "last_order", "name"] = "value",
    order: Literal["desc", "asc"] = "desc",
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    api = caller(request, session)
    chosen = {
        "stage": _kept(stage, Stage),
        "tier": _kept(tier, Tier),
        "segment": _kept(segment, Segment),
        "strategy": _kept(strategy, Strategy),
    }
    q, tag = q.strip(), tag.strip()
    params: list[tuple[str, Any]] = [("limit", PAGE), ("sort", sort), ("order", order)]
    params += [(name, v) for name, values in chosen.items() for v in values]
    if q:
        params.append(("q", q))
    if tag:
        params.append(("tag", tag))
    if cursor:
        params.append(("cursor", cursor))
    page = await fetch(api.get("scoring", "/v1/customers", params))
    # An id is found by id as well (the listing's text search reads name, email and phone).
    exact = None
    if q and not cursor:
        found = await fetch(api.get("scoring", f"/v1/customers/{quote(q, safe='')}"))
        exact = found.value
    items = (page.value or {}).get("items", [])
    if exact is not None:
        items = [i for i in items if i["customer_id"] != exact["customer_id"]]
    # Every choice travels with the next page's link, so paging keeps the filter and sort.
    filters = [(k, v) for k, vs in chosen.items() for v in vs] + ([("q", q)] if q else [])
    filters += ([("tag", tag)] if tag else []) + [("sort", sort), ("order", order)]
    return render(
        request,
        "customers.html",
        session,
        title="Customers · Tend",
        nav="customers",
        q=q,
        tag=tag,
        chosen=chosen,
        sort=sort,
        order=order,
        sorts={
            "value": "value score",
            "clv": "predicted value",
            "p_alive": "still active",
            "last_order": "last order",
            "name": "name",
        },
        options={"stage": Stage, "tier": Tier, "segment": Segment, "strategy": Strategy},
        page=page,
        items=items,
        exact=exact,
        filters=filters,
        next_cursor=(page.value or {}).get("next_cursor"),
        paged=bool(cursor),
    )


@router.get("/customers/{customer_id}", include_in_schema=False)
async def customer(
    request: Request,
    session: SignedIn,
    customer_id: str,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    api = caller(request, session)
    cid = quote(customer_id, safe="")
    try:
        card = await api.get("scoring", f"/v1/customers/{cid}")
    except ApiError as e:
        if e.status == 404:
            raise Refused(404, f"No customer {customer_id!r}.") from None
        if e.survivor is not None:
            # Merged into another record: the person's page is the survivor's.
            return RedirectResponse(f"/customers/{quote(e.survivor, safe='')}", status_code=303)
        raise
    timeline_params: dict[str, Any] = {"limit": 50}
    if cursor:
        timeline_params["cursor"] = cursor
    explanation, history, timeline, touchpoints, schedule = await fetch_all(
        api.get("scoring", f"/v1/customers/{cid}/explanation"),
        api.get("scoring", f"/v1/customers/{cid}/history"),
        api.get("scoring", f"/v1/customers/{cid}/timeline", timeline_params),
        api.get("outreach", f"/v1/customers/{cid}/touchpoints", {"limit": 50}),
        api.get("outreach", f"/v1/customers/{cid}/schedule"),
    )
    return render(
        request,
        "customer.html",
        session,
        title=f"{card['profile'].get('name') or customer_id} · Tend",
        nav="customers",
        card=card,
        explanation=explanation,
        history=history,
        timeline=timeline,
        touchpoints=touchpoints,
        schedule=schedule,
    )
