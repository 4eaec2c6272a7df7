"""The contact policy: its common fields as form controls, the whole document as JSON (the
advanced view), and outreach's field errors next to the field they name (``GET``/``PUT
/v1/policy``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from services.console.clients.api import ApiError
from services.console.pages.web import CheckedPost, SignedIn, caller, need, render
from services.console.session import MARKETING_WRITE, Session

router = APIRouter()

# The API's field (``body.`` left off) → the form control that shows its error.
FIELDS = {
    "frequency_cap.count": "cap_count",
    "frequency_cap.days": "cap_days",
    "frequency_cap": "cap_count",
    "quiet_hours.start": "quiet_start",
    "quiet_hours.end": "quiet_end",
    "quiet_hours": "quiet_start",
    "default_timezone": "default_timezone",
    "marketing_consent_required": "marketing_consent_required",
    "reduce_cost_no_promotions": "reduce_cost_no_promotions",
    "balance.promotions_per_service": "balance_ratio",
    "balance.days": "balance_days",
    "balance": "balance_ratio",
    "contact_cost.email": "cost_email",
    "contact_cost.webhook": "cost_webhook",
    "contact_cost.sms": "cost_sms",
}


def form_of(policy: dict[str, Any]) -> dict[str, Any]:
    """The form's controls as the stored policy fills them."""
    cap = policy.get("frequency_cap") or {}
    quiet = policy.get("quiet_hours") or {}
    balance = policy.get("balance") or {}
    cost = policy.get("contact_cost") or {}
    return {
        "cap_on": bool(policy.get("frequency_cap")),
        "cap_count": str(cap.get("count", 2)),
        "cap_days": str(cap.get("days", 7)),
        "quiet_on": bool(policy.get("quiet_hours")),
        "quiet_start": str(quiet.get("start", "21:00"))[:5],
        "quiet_end": str(quiet.get("end", "08:00"))[:5],
        "default_timezone": str(policy.get("default_timezone", "UTC")),
        "marketing_consent_required": bool(policy.get("marketing_consent_required", True)),
        "reduce_cost_no_promotions": bool(policy.get("reduce_cost_no_promotions", True)),
        "balance_on": bool(policy.get("balance")),
        "balance_ratio": str(balance.get("promotions_per_service", 2)),
        "balance_days": str(balance.get("days", 30)),
        "cost_email": str(cost.get("email", "0.002")),
        "cost_webhook": str(cost.get("webhook", "0.01")),
        "cost_sms": str(cost.get("sms", "0.05")),
    }


def _number(text: str) -> int | str:
    # Anything but a whole number goes to the API as typed: its reason is the one shown.
    try:
        return int(text)
    except ValueError:
        return text


def posted_form(text: Callable[[str], str]) -> dict[str, Any]:
    form: dict[str, Any] = {name: text(name) for name in form_of({})}
    for box in ("cap_on", "quiet_on", "marketing_consent_required", "reduce_cost_no_promotions"):
        form[box] = bool(text(box))
    form["balance_on"] = bool(text("balance_on"))
    return form


def document(form: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """The policy to put: the stored one with the form's fields in place (the fields the form
    does not show stay as they are)."""
    doc = dict(stored)
    doc["frequency_cap"] = (
        {"count": _number(form["cap_count"]), "days": _number(form["cap_days"])}
        if form["cap_on"]
        else None
    )
    doc["quiet_hours"] = (
        {"start": form["quiet_start"], "end": form["quiet_end"]} if form["quiet_on"] else None
    )
    doc["default_timezone"] = form["default_timezone"]
    doc["marketing_consent_required"] = form["marketing_consent_required"]
    doc["reduce_cost_no_promotions"] = form["reduce_cost_no_promotions"]
    if form["balance_on"]:
        kept = dict(stored.get("balance") or {})
        kept.update(
            promotions_per_service=_number(form["balance_ratio"]),
            days=_number(form["balance_days"]),
        )
        doc["balance"] = kept
    else:
        doc["balance"] = None
    doc["contact_cost"] = {
        **(stored.get("contact_cost") or {}),
        "email": form["cost_email"],
        "webhook": form["cost_webhook"],
        "sms": form["cost_sms"],
    }
    return doc


def placed(error: ApiError) -> tuple[dict[str, list[str]], list[str]]:
    """The API's field errors by form control; the others for the top of the page."""
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    for e in error.errors:
        name = e["field"].removeprefix("body.").removeprefix("body")
        control = FIELDS.get(name)
        if control:
            by_field.setdefault(control, []).append(e["reason"])
        else:
            general.append(f"{name or 'policy'}: {e['reason']}")
    if not error.errors:
        general.append(error.message)
    return by_field, general


def _page(
    request: Request,
    session: Session,
    stored: dict[str, Any],
    form: dict[str, Any],
    *,
    policy_json: str | None = None,
    errors: dict[str, list[str]] | None = None,
    general: list[str] | None = None,
    saved: bool = False,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "policy.html",
        session,
        status_code=status_code,
        title="Contact policy · Tend",
        nav="policy",
        form=form,
        policy_json=policy_json if policy_json is not None else json.dumps(stored, indent=2),
        errors=errors or {},
        general=general or [],
        saved=saved,
        may_write=session.can(MARKETING_WRITE),
    )


@router.get("/policy", include_in_schema=False)
async def policy(request: Request, session: SignedIn, saved: str = "") -> Response:
    stored: dict[str, Any] = await caller(request, session).get("outreach", "/v1/policy")
    return _page(request, session, stored, form_of(stored), saved=bool(saved))


@router.post("/policy", include_in_schema=False)
async def save_policy(request: Request, posted: CheckedPost) -> Response:
    """Save the policy from the form, or from the JSON of the advanced view."""
    session = posted.session
    need(session, MARKETING_WRITE, "change the contact policy")
    api = caller(request, session)
    stored: dict[str, Any] = await api.get("outreach", "/v1/policy")
    if posted.text("view") == "json":
        text = posted.text("policy_json")
        try:
            doc = json.loads(text)
        except ValueError as e:
            return _page(
                request,
                session,
                stored,
                form_of(stored),
                policy_json=text,
                errors={"policy_json": [f"not JSON: {e}"]},
                status_code=422,
            )
        form = form_of(stored)
    else:
        form = posted_form(posted.text)
        doc = document(form, stored)
        text = None
    try:
        await api.put("outreach", "/v1/policy", json=doc)
    except ApiError as e:
        if e.status not in (400, 422):
            raise
        by_field, general = placed(e)
        if text is not None:  # the JSON view: every reason under the JSON
            said = [f"{x['field'].removeprefix('body.')}: {x['reason']}" for x in e.errors]
            by_field, general = {"policy_json": said or [e.message]}, []
        return _page(
            request,
            session,
            stored,
            form,
            policy_json=text,
            errors=by_field,
            general=general,
            status_code=e.status,
        )
    return RedirectResponse("/policy?saved=1", status_code=303)
