"""A rule's versions, oldest first, and a readable difference between any two of them
(outreach's ``GET /v1/rules/{id}/versions``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.console.clients.api import ApiError
from services.console.pages.jsondiff import diff_lines
from services.console.pages.web import Refused, SignedIn, caller, render

router = APIRouter()


@router.get("/rules/{rule_id}/versions", include_in_schema=False)
async def rule_versions(
    request: Request, session: SignedIn, rule_id: str, a: int = 0, b: int = 0
) -> Response:
    """Versions ``a`` and ``b`` compared (by default the one before the newest, and the
    newest)."""
    try:
        found: dict[str, Any] = await caller(request, session).get(
            "outreach", f"/v1/rules/{quote(rule_id, safe='')}/versions"
        )
    except ApiError as e:
        if e.status == 404:
            raise Refused(404, f"No rule {rule_id!r}.") from None
        raise
    versions = {v["version"]: v for v in found["items"]}
    numbers = sorted(versions)
    newest = numbers[-1]
    b = b if b in versions else newest
    a = a if a in versions else (numbers[-2] if len(numbers) > 1 else newest)
    return render(
        request,
        "rule_versions.html",
        session,
        title=f"Rule {rule_id}: versions · Tend",
        nav="rules",
        rule_id=rule_id,
        versions=[versions[n] for n in reversed(numbers)],
        a=a,
        b=b,
        lines=diff_lines(versions[a]["definition"], versions[b]["definition"]),
    )
