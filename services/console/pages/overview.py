"""Overview, for operations: the base by stage and tier, revenue concentration, the flow in
and out of the active base, complaints, and the pipeline's health where the APIs serve it."""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.console.pages.web import SignedIn, caller, fetch_all, render

router = APIRouter()


Period = Literal["week", "month", "quarter"]
TierPick = Literal["all", "key", "regular", "low", "none"]


def _money(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


@router.get("/", include_in_schema=False)
async def overview(
    request: Request, session: SignedIn, period: Period = "week", tier: TierPick = "all"
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
    rows: list[dict[str, Any]] = []
    if flow.value is not None:
        # The whole base, or one tier's share of it (where the API gives figures by tier).
        for p in flow.value.get("periods", []):
            shown = p if tier == "all" else (p.get("by_tier") or {}).get(tier, {})
            rows.append(
                {"start": p["start"], "end": p["end"], "under_way": p.get("under_way"), **shown}
            )
        chart = json.dumps(
            {
                "labels": [r["start"] for r in rows],
                "new": [r.get("new", 0) for r in rows],
                "reactivated": [r.get("reactivated", 0) for r in rows],
                "churned": [-r.get("churned", 0) for r in rows],
                "net": [r.get("net", 0) for r in rows],
                "revenue_new": [_money(r.get("revenue_new")) for r in rows],
                "revenue_returning": [_money(r.get("revenue_returning")) for r in rows],
                "revenue_lost": [-_money(r.get("revenue_lost")) for r in rows],
                "money": any("revenue_new" in r for r in rows),
            }
        )
    return render(
        request,
        "overview.html",
        session,
        title="Overview · Tend",
        nav="overview",
        period=period,
        tier=tier,
        rows=rows,
        figures=figures,
        flow=flow,
        chart=chart,
        complaints=complaints,
        scoring_health=scoring_health,
        outreach_health=outreach_health,
    )
