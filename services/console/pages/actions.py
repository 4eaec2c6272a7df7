"""Actions: the ledger of every decision outreach made, with its status and reason."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from services.console.pages.web import SignedIn, caller, fetch, render

router = APIRouter()

PAGE = 50
STATUSES = ["scheduled", "held", "pending", "sent", "failed", "suppressed", "unknown", "control"]
KINDS = ["greeting", "follow_up", "recall", "winback", "care", "apology", "announcement"]


@router.get("/actions", include_in_schema=False)
async def actions(
    request: Request,
    session: SignedIn,
    status: Annotated[str, Query(max_length=32)] = "",
    kind: Annotated[str, Query(max_length=32)] = "",
    reason: Annotated[str, Query(max_length=64)] = "",
    rule_id: Annotated[str, Query(max_length=64)] = "",
    customer_id: Annotated[str, Query(max_length=128)] = "",
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    api = caller(request, session)
    chosen = {
        "status": status if status in STATUSES else "",
        "kind": kind if kind in KINDS else "",
        "reason": reason.strip(),
        "rule_id": rule_id.strip(),
        "customer_id": customer_id.strip(),
    }
    params: list[tuple[str, Any]] = [("limit", PAGE)]
    params += [(k, v) for k, v in chosen.items() if v]
    if cursor:
        params.append(("cursor", cursor))
    page, summary = await fetch(api.get("outreach", "/v1/actions", params)), None
    if not cursor:
        summary = await fetch(api.get("outreach", "/v1/actions/summary"))
    reasons = sorted(
        {
            r["reason"]
            for r in ((summary.value or {}).get("rows", []) if summary else [])
            if r["reason"]
        }
    )
    return render(
        request,
        "actions.html",
        session,
        title="Actions · Tend",
        nav="actions",
        chosen=chosen,
        statuses=STATUSES,
        kinds=KINDS,
        reasons=reasons,
        page=page,
        filters=[(k, v) for k, v in chosen.items() if v],
        next_cursor=(page.value or {}).get("next_cursor"),
        paged=bool(cursor),
    )


@router.get("/actions/{action_id}", include_in_schema=False)
async def action(request: Request, session: SignedIn, action_id: str) -> Response:
    """One action: its ledger row, the message as rendered and its delivery attempts (from
    outreach's ``GET /v1/actions/{id}``, where it serves it)."""
    api = caller(request, session)
    detail = await fetch(api.get("outreach", f"/v1/actions/{quote(action_id, safe='')}"))
    return render(
        request,
        "action.html",
        session,
        status_code=404 if detail.error and detail.error.status == 404 else 200,
        title="Action · Tend",
        nav="actions",
        action_id=action_id,
        detail=detail,
    )
