"""Outcomes: what the actions achieved per rule, strategy, kind, tier or the whole program,
each group's treatment and control arms against its baseline, with the difference's 95%
interval as a chart and a table (outreach's ``GET /v1/outcomes``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request
from starlette.responses import Response

from services.console.formatting import verdict_of
from services.console.pages.web import SignedIn, caller, fetch, render

router = APIRouter()

By = Literal["rule", "strategy", "kind", "tier", "program"]
PERIODS = (7, 30, 90, 365)
BASELINES = {
    "control_group": "control group",
    "model_forecast": "the model's forecast",
    "none": "none",
}


def chart_of(groups: list[dict[str, Any]]) -> str:
    """The chart's figures (percentage points), as the page's script reads them."""
    rows = []
    for g in groups:
        d = g.get("conversion_difference")
        if not d:
            continue
        rows.append(
            {
                "label": str(g.get("key") or "not known"),
                "low": round(d["low"] * 100, 2),
                "high": round(d["high"] * 100, 2),
                "estimate": round(d["estimate"] * 100, 2),
                "verdict": verdict_of(g),
            }
        )
    return json.dumps(rows)


@router.get("/outcomes", include_in_schema=False)
async def outcomes(
    request: Request, session: SignedIn, by: By = "rule", days: int = 90
) -> Response:
    days = days if days in PERIODS else 90
    # Up to outreach's own now (no `until`): whatever was decided a moment ago counts.
    since = datetime.now(UTC) - timedelta(days=days)
    report = await fetch(
        caller(request, session).get(
            "outreach", "/v1/outcomes", {"by": by, "since": since.isoformat()}
        )
    )
    groups: list[dict[str, Any]] = (report.value or {}).get("groups", [])
    return render(
        request,
        "outcomes.html",
        session,
        title="Outcomes · Tend",
        nav="outcomes",
        by=by,
        days=days,
        periods=PERIODS,
        report=report,
        groups=groups,
        baselines=BASELINES,
        chart=chart_of(groups),
    )
