"""Complaints, for operations: the open complaints past their response-time target (the
oldest first, each with its customer), and how each tier's complaints are answered."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from services.console.pages.web import SignedIn, caller, fetch_all, render

router = APIRouter()

PAGE = 50


def readable_hours(hours: Any) -> str:
    """A span given in hours (how long a complaint has waited past its target, how long
    complaints took to be resolved), in the unit a person reads it in."""
    if not isinstance(hours, int | float):
        return "—"
    if hours < 48:
        return f"{hours:,.1f} hours"
    return f"{hours / 24:,.0f} days"


@router.get("/complaints", include_in_schema=False)
async def complaints(
    request: Request,
    session: SignedIn,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    as_of: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    api = caller(request, session)
    params: list[tuple[str, Any]] = [("limit", PAGE)]
    if cursor:
        # A later page is judged at the instant the first page was (the cursor's own).
        params.append(("cursor", cursor))
        if as_of:
            params.append(("as_of", as_of))
    page, stats = await fetch_all(
        api.get("scoring", "/v1/complaints/overdue", params),
        api.get("scoring", "/v1/stats/complaints"),
    )
    value = page.value or {}
    return render(
        request,
        "complaints.html",
        session,
        title="Complaints · Tend",
        nav="overview",
        page=page,
        stats=stats,
        readable_hours=readable_hours,
        next_cursor=value.get("next_cursor"),
        page_as_of=value.get("as_of"),
        paged=bool(cursor),
    )
