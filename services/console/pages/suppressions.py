"""Suppressions: the customers who hear nothing from outreach, whatever the rule; add one,
or lift one (a customer's own unsubscribe only with ``ops:write`` and a reason)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from services.console.clients.api import ApiError
from services.console.pages.web import CheckedPost, Refused, SignedIn, caller, fetch, render
from services.console.session import MARKETING_WRITE, OPS_WRITE, Session

router = APIRouter()

PAGE = 50


async def _page(
    request: Request,
    session: Session,
    *,
    cursor: str | None = None,
    form: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    done: str = "",
    status_code: int = 200,
) -> Response:
    params: list[tuple[str, Any]] = [("limit", PAGE)]
    if cursor:
        params.append(("cursor", cursor))
    page = await fetch(caller(request, session).get("outreach", "/v1/suppressions", params))
    return render(
        request,
        "suppressions.html",
        session,
        status_code=status_code,
        title="Suppressions · Tend",
        nav="suppressions",
        page=page,
        next_cursor=(page.value or {}).get("next_cursor"),
        paged=bool(cursor),
        form=form or {"customer_id": "", "reason": ""},
        errors=errors or {},
        done=done,
        may_add=session.can(MARKETING_WRITE),
        may_lift=session.can(MARKETING_WRITE) or session.can(OPS_WRITE),
    )


@router.get("/suppressions", include_in_schema=False)
async def suppressions(
    request: Request,
    session: SignedIn,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    done: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    return await _page(request, session, cursor=cursor, done=done)


def _errors(error: ApiError, names: dict[str, str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for e in error.errors:
        found.setdefault(names.get(e["field"], "general"), []).append(e["reason"])
    if not error.errors:
        found["general"] = [error.message]
    return found


@router.post("/suppressions", include_in_schema=False)
async def add_suppression(request: Request, posted: CheckedPost) -> Response:
    session = posted.session
    if not session.can(MARKETING_WRITE):
        raise Refused(403, "Your API key may not suppress customers: it needs marketing:write.")
    form = {"customer_id": posted.text("customer_id"), "reason": posted.text("reason")}
    try:
        await caller(request, session).post("outreach", "/v1/suppressions", json=form)
    except ApiError as e:
        if e.status not in (400, 422):
            raise
        names = {"body.customer_id": "customer_id", "body.reason": "reason"}
        return await _page(
            request, session, form=form, errors=_errors(e, names), status_code=e.status
        )
    done = f"{form['customer_id']} suppressed"
    return RedirectResponse(f"/suppressions?done={quote(done)}", status_code=303)


@router.post("/suppressions/{customer_id}/lift", include_in_schema=False)
async def lift_suppression(request: Request, posted: CheckedPost, customer_id: str) -> Response:
    session = posted.session
    if not (session.can(MARKETING_WRITE) or session.can(OPS_WRITE)):
        raise Refused(
            403, "Your API key may not lift suppressions: it needs marketing:write or ops:write."
        )
    reason = posted.text("reason")
    try:
        await caller(request, session).delete(
            "outreach",
            f"/v1/suppressions/{quote(customer_id, safe='')}",
            json={"reason": reason} if reason else None,
        )
    except ApiError as e:
        if e.status not in (400, 403, 404, 422):
            raise
        errors = _errors(e, {"body.reason": "general"})
        return await _page(
            request,
            session,
            errors={"lift": [f"{customer_id}: {r}" for r in errors.get("general", [])]},
            status_code=e.status,
        )
    done = f"{customer_id}'s suppression lifted"
    return RedirectResponse(f"/suppressions?done={quote(done)}", status_code=303)
