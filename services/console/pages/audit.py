"""The audit log: every change to rules, the policy, channels, keys and suppressions, newest
first, one page at a time, with what changed (``GET /v1/audit``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from services.console.pages.jsondiff import diff_lines
from services.console.pages.web import SignedIn, caller, fetch, render

router = APIRouter()

PAGE = 50
FAMILIES = ("rule", "policy", "channel", "key", "suppression")


@router.get("/audit", include_in_schema=False)
async def audit(
    request: Request,
    session: SignedIn,
    # Not ``action``: a form control of that name would shadow its form's own action.
    change: Annotated[str, Query(max_length=32)] = "",
    subject: Annotated[str, Query(max_length=200)] = "",
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    chosen = {"change": change if change in FAMILIES else "", "subject": subject.strip()}
    params: list[tuple[str, Any]] = [("limit", PAGE)]
    if chosen["change"]:
        params.append(("action", chosen["change"]))
    if chosen["subject"]:
        params.append(("subject", chosen["subject"]))
    if cursor:
        params.append(("cursor", cursor))
    page = await fetch(caller(request, session).get("outreach", "/v1/audit", params))
    entries = [
        {**e, "diff": diff_lines(e.get("before"), e.get("after"))}
        for e in (page.value or {}).get("items", [])
    ]
    return render(
        request,
        "audit.html",
        session,
        title="Audit log · Tend",
        nav="audit",
        page=page,
        entries=entries,
        chosen=chosen,
        families=FAMILIES,
        filters=[(k, v) for k, v in chosen.items() if v],
        next_cursor=(page.value or {}).get("next_cursor"),
        paged=bool(cursor),
    )
