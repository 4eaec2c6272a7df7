"""Overview, for operations: the base by stage and tier, revenue concentration, the flow in
and out of the active base, complaints, and the pipeline's health where the APIs serve it."""

from __future__ import annotations

import json
from typing import Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.console.pages.web import SignedIn, caller, fetch_all, render

router = APIRouter()


@router.get("/", include_in_schema=False)
async def overview(
    request: Request, session: SignedIn, period: Literal["week", "month"] = "week"
) -> Response:
    api = caller(request, session)
    figures, flow, complaints, scoring_health, outreach_health = await fetch_all(
        api.get("scoring", "/v1/stats/overview"),
        api.get("scoring", "/v1/stats/flow", {"period": period}),
        api.get("scoring", "/v1/stats/complaints"),
        api.get("scoring", "/v1/ops/health"),
        api.get("outreach", "/v1/ops/health"),
    )
    chart = None
    if flow.value is not None:
        periods = flow.value.get("periods", [])
        chart = json.dumps(
            {
                "labels": [p["start"] for p in periods],
                "new": [p["new"] for p in periods],
                "reactivated": [p["reactivated"] for p in periods],
                "churned": [-p["churned"] for p in periods],
                "net": [p["net"] for p in periods],
            }
        )
    return render(
        request,
        "overview.html",
        session,
        title="Overview · Tend",
        nav="overview",
        period=period,
        figures=figures,
        flow=flow,
        chart=chart,
        complaints=complaints,
        scoring_health=scoring_health,
        outreach_health=outreach_health,
    )
