"""Rules: the list with status and outcome figures, and an editor for rules of every trigger
(preview, backtest and the message rendered on a real customer before saving, the API's field
errors next to the field, enable and disable)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from services.console.clients.api import ApiError
from services.console.pages.rule_action import CHANNELS, KINDS, ActionForm
from services.console.pages.rule_expression import FILTER_OPERATORS, OPERATORS
from services.console.pages.rule_form import (
    GOAL_COUNTS,
    GOAL_EVENTS,
    RuleForm,
    editable,
    field_of,
    instant_param,
)
from services.console.pages.rule_trigger import (
    DIRECTIONS,
    EVENTS,
    STAGES,
    TRIGGERS,
    trigger_words,
)
from services.console.pages.web import (
    CheckedPost,
    Fetched,
    Refused,
    SignedIn,
    caller,
    fetch,
    fetch_all,
    need,
    render,
)
from services.console.session import MARKETING_WRITE, Session

router = APIRouter()

# The rules whose last decision the list reads (one small read each).
LAST_FIRED_RULES = 100
# The period of the outcome figures the list shows (the outcomes page has others).
OUTCOME_DAYS = 90
# A broadcast rule's newest launches its page lists.
LAUNCHES_SHOWN = 10


@router.get("/rules", include_in_schema=False)
async def rules(request: Request, session: SignedIn, saved: str = "") -> Response:
    api = caller(request, session)
    since = datetime.now(UTC) - timedelta(days=OUTCOME_DAYS)
    listing, summary, report = await fetch_all(
        api.get("outreach", "/v1/rules"),
        api.get("outreach", "/v1/actions/summary", {"by": "rule"}),
        api.get(
            "outreach",
            "/v1/outcomes",
            {"by": "rule", "since": since.isoformat()},
        ),
    )
    rule_outcomes = {g["key"]: g for g in (report.value or {}).get("groups", []) if g["key"]}
    outcomes: dict[str, dict[str, int]] = {}
    # Why each rule's suppressed actions were held back (the daily limit, consent...).
    held_back: dict[str, dict[str, int]] = {}
    for row in (summary.value or {}).get("rows", []):
        per = outcomes.setdefault(row["rule_id"], {})
        per[row["status"]] = per.get(row["status"], 0) + row["count"]
        if row["status"] == "suppressed" and row["reason"]:
            why = held_back.setdefault(row["rule_id"], {})
            why[row["reason"]] = why.get(row["reason"], 0) + row["count"]
    # When each rule that decided anything last did (its newest action), read at once.
    fired = [r for r in outcomes if r][:LAST_FIRED_RULES]
    newest = await fetch_all(
        *(api.get("outreach", "/v1/actions", {"rule_id": r, "limit": 1}) for r in fired)
    )
    last_fired = {
        rule_id: page.value["items"][0]["decided_at"]
        for rule_id, page in zip(fired, newest, strict=True)
        if page.value and page.value.get("items")
    }
    return render(
        request,
        "rules.html",
        session,
        title="Rules · Tend",
        nav="rules",
        listing=listing,
        summary=summary,
        report=report,
        outcomes=outcomes,
        held_back=held_back,
        last_fired=last_fired,
        rule_outcomes=rule_outcomes,
        trigger_words=trigger_words,
        outcome_days=OUTCOME_DAYS,
        saved=saved,
    )


def _editor(
    request: Request,
    session: Session,
    form: RuleForm,
    *,
    is_new: bool,
    errors: dict[str, list[str]] | None = None,
    general: list[str] | None = None,
    preview: dict[str, Any] | None = None,
    backtest: dict[str, Any] | None = None,
    stored: dict[str, Any] | None = None,
    rendered: dict[str, Any] | None = None,
    launched: dict[str, Any] | None = None,
    launch_error: str | None = None,
    launches: Fetched[Any] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "rule_edit.html",
        session,
        status_code=status_code,
        title=("New rule" if is_new else f"Rule {form.rule_id}") + " · Tend",
        nav="rules",
        form=form,
        is_new=is_new,
        errors=errors or {},
        general=general or [],
        preview=preview,
        backtest=backtest,
        stored=stored,
        rendered=rendered,
        events=EVENTS,
        triggers=TRIGGERS,
        directions=DIRECTIONS,
        stages=STAGES,
        kinds=KINDS,
        channels=CHANNELS,
        operators=OPERATORS,
        filter_operators=FILTER_OPERATORS,
        goal_events=GOAL_EVENTS,
        goal_counts=GOAL_COUNTS,
        kept_json=json.dumps(form.kept) if form.kept else "",
        may_write=session.can(MARKETING_WRITE),
        **_launch_context(launched, launch_error, launches),
    )


def _launch_context(
    launched: dict[str, Any] | None, error: str | None, launches: Fetched[Any] | None
) -> dict[str, Any]:
    """What a broadcast rule's launch section shows: the last launch's answer or why it was
    refused, the id of the next launch (made with the page: the same form sent twice decides
    nobody twice) and the rule's launches so far."""
    return {
        "launched": launched,
        "launch_error": error,
        "launch_id": str(uuid.uuid4()),
        "launches": launches,
    }


async def _launches(request: Request, session: Session, rule: dict[str, Any]) -> Fetched[Any]:
    """A broadcast rule's newest launches (nothing to read for another rule)."""
    if rule["trigger"]["type"] != "broadcast":
        return Fetched()
    return await fetch(
        caller(request, session).get(
            "outreach", "/v1/broadcasts", {"rule_id": rule["id"], "limit": LAUNCHES_SHOWN}
        )
    )


@router.get("/rules/new", include_in_schema=False)
async def new_rule(request: Request, session: SignedIn) -> Response:
    form = RuleForm(action=ActionForm(body="Hello {{ customer.name or 'there' }}"))
    return _editor(request, session, form, is_new=True)


async def _stored(request: Request, session: Session, rule_id: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = await caller(request, session).get(
            "outreach", f"/v1/rules/{quote(rule_id, safe='')}"
        )
    except ApiError as e:
        if e.status == 404:
            raise Refused(404, f"No rule {rule_id!r}.") from None
        raise
    return found


def _json_editor(
    request: Request,
    session: Session,
    stored: dict[str, Any],
    text: str,
    *,
    errors: list[str] | None = None,
    preview: dict[str, Any] | None = None,
    launched: dict[str, Any] | None = None,
    launch_error: str | None = None,
    launches: Fetched[Any] | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "rule_json.html",
        session,
        status_code=status_code,
        title=f"Rule {stored['rule']['id']} · Tend",
        nav="rules",
        stored=stored,
        rule_json=text,
        form_view=editable(stored["rule"]),
        errors={"rule_json": errors} if errors else {},
        preview=preview,
        backtest=None,
        may_write=session.can(MARKETING_WRITE),
        **_launch_context(launched, launch_error, launches),
    )


@router.get("/rules/{rule_id}", include_in_schema=False)
async def edit_rule(
    request: Request, session: SignedIn, rule_id: str, view: Literal["form", "json"] = "form"
) -> Response:
    stored = await _stored(request, session, rule_id)
    return await _rule_page(request, session, stored, as_json=view == "json")


async def _rule_page(
    request: Request,
    session: Session,
    stored: dict[str, Any],
    *,
    as_json: bool = False,
    launched: dict[str, Any] | None = None,
    launch_error: str | None = None,
    status_code: int = 200,
) -> Response:
    """A stored rule's page: the form editor, or the JSON one when asked for or when the form
    cannot hold the rule; a broadcast's with its launches."""
    rule = stored["rule"]
    launches = await _launches(request, session, rule)
    if as_json or not editable(rule):
        return _json_editor(
            request,
            session,
            stored,
            json.dumps(rule, indent=2),
            launched=launched,
            launch_error=launch_error,
            launches=launches,
            status_code=status_code,
        )
    return _editor(
        request,
        session,
        RuleForm.of_rule(rule),
        is_new=False,
        stored=stored,
        launched=launched,
        launch_error=launch_error,
        launches=launches,
        status_code=status_code,
    )


@router.post("/rules/json", include_in_schema=False)
async def submit_rule_json(request: Request, posted: CheckedPost) -> Response:
    """Preview or save a stored rule edited as JSON (the advanced view)."""
    session = posted.session
    rule_id = posted.text("rule_id")
    text = posted.text("rule_json")
    stored = await _stored(request, session, rule_id)
    try:
        doc = json.loads(text)
    except ValueError as e:
        return _json_editor(
            request, session, stored, text, errors=[f"not JSON: {e}"], status_code=422
        )
    api = caller(request, session)
    try:
        if posted.text("intent") == "save":
            need(session, MARKETING_WRITE, "change rules")
            await api.put("outreach", f"/v1/rules/{quote(rule_id, safe='')}", json=doc)
            return RedirectResponse(f"/rules?saved={quote(rule_id, safe='')}", status_code=303)
        preview = await api.post("outreach", "/v1/rules/preview", json=doc)
    except ApiError as e:
        if e.status not in (400, 404, 409, 422):
            raise
        said = [f"{x['field'].removeprefix('body.')}: {x['reason']}" for x in e.errors]
        return _json_editor(
            request, session, stored, text, errors=said or [e.message], status_code=e.status
        )
    return _json_editor(request, session, stored, text, preview=preview)


def _placed(error: ApiError) -> tuple[dict[str, list[str]], list[str]]:
    """The API's field errors by form control; those of no control, and the message when
    there is no field error at all, for the top of the form."""
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    for e in error.errors:
        where = field_of(e["field"], e["reason"])
        if where:
            by_field.setdefault(where, []).append(e["reason"])
        else:
            general.append(f"{e['field']}: {e['reason']}")
    if not error.errors:
        general.append(error.message)
    return by_field, general


def _not_accepted(
    request: Request, session: Session, form: RuleForm, is_new: bool, error: ApiError
) -> Response:
    """The editor again, with the API's errors next to the fields they name."""
    by_field, general = _placed(error)
    return _editor(
        request,
        session,
        form,
        is_new=is_new,
        errors=by_field,
        general=general,
        status_code=error.status,
    )


async def _rendered(request: Request, session: Session, form: RuleForm) -> dict[str, Any]:
    """The form's template (and its offer) rendered on the customer it names."""
    offer, _ = form.action.offer()
    rendered: dict[str, Any] = await caller(request, session).post(
        "outreach",
        "/v1/templates/render",
        json={
            "customer_id": form.render_customer,
            "template": {"subject": form.action.subject, "body": form.action.body},
            "offer": offer,
        },
    )
    return rendered


@router.post("/rules/edit", include_in_schema=False)
async def submit_rule(request: Request, posted: CheckedPost) -> Response:
    """Preview, backtest, render on a customer or save the rule of the editor's form
    (``intent``)."""
    session = posted.session
    form = RuleForm.of_fields(posted.text, posted.texts)
    is_new = posted.text("is_new") == "1"
    intent = posted.text("intent")
    api = caller(request, session)
    if intent == "render":
        # Only the template and the customer matter: the rest of the form may be unfinished.
        if not form.render_customer:
            errors = {"render_customer": ["the id of a customer to render the message for"]}
            return _editor(request, session, form, is_new=is_new, errors=errors, status_code=422)
        try:
            rendered = await _rendered(request, session, form)
        except ApiError as e:
            if e.status == 404:
                errors = {"render_customer": [e.message]}
                return _editor(
                    request, session, form, is_new=is_new, errors=errors, status_code=404
                )
            if e.status not in (400, 422):
                raise
            return _not_accepted(request, session, form, is_new, e)
        return _editor(request, session, form, is_new=is_new, rendered=rendered)
    doc, own_errors = form.document()
    if own_errors:
        errors = {k: [v] for k, v in own_errors.items()}
        return _editor(request, session, form, is_new=is_new, errors=errors, status_code=422)
    try:
        if intent == "save":
            need(session, MARKETING_WRITE, "change rules")
            if is_new:
                await api.post("outreach", "/v1/rules", json=doc)
            else:
                await api.put("outreach", f"/v1/rules/{quote(form.rule_id, safe='')}", json=doc)
            return RedirectResponse(f"/rules?saved={quote(form.rule_id, safe='')}", status_code=303)
        # A dry run: a preview (the default) of who the rule would reach now or at an
        # instant, or a backtest over the recorded past; nothing is saved or sent.
        if intent == "backtest":
            result = await api.post(
                "outreach", "/v1/rules/backtest", json=doc, params={"days": form.backtest_days}
            )
            return _editor(request, session, form, is_new=is_new, backtest=result)
        at = instant_param(form.preview_at)
        result = await api.post(
            "outreach", "/v1/rules/preview", json=doc, params={"at": at} if at else None
        )
    except ApiError as e:
        # A save may also meet a rule that exists (409) or is gone (404).
        if e.status not in ((400, 404, 409, 422) if intent == "save" else (400, 422)):
            raise
        return _not_accepted(request, session, form, is_new, e)
    return _editor(request, session, form, is_new=is_new, preview=result)


@router.post("/rules/{rule_id}/launch", include_in_schema=False)
async def launch_rule(request: Request, posted: CheckedPost, rule_id: str) -> Response:
    """Launch a broadcast rule for its audience now, as the launch its page was rendered
    with: the rule's page again, with what the launch decided (or why it was refused)."""
    session = posted.session
    need(session, MARKETING_WRITE, "launch broadcasts")
    launch_id = posted.text("launch_id") or str(uuid.uuid4())
    launched: dict[str, Any] | None = None
    error: str | None = None
    try:
        launched = await caller(request, session).post(
            "outreach", "/v1/broadcasts", json={"rule_id": rule_id, "launch_id": launch_id}
        )
    except ApiError as e:
        if e.status not in (400, 404, 422):
            raise
        reasons = [x["reason"] for x in e.errors if x["reason"]]
        error = "Not launched: " + ("; ".join(reasons) if reasons else e.message)
    stored = await _stored(request, session, rule_id)
    return await _rule_page(
        request,
        session,
        stored,
        launched=launched,
        launch_error=error,
        status_code=200 if error is None else 422,
    )


@router.post("/rules/{rule_id}/{switch}", include_in_schema=False)
async def switch_rule(request: Request, posted: CheckedPost, rule_id: str, switch: str) -> Response:
    if switch not in ("enable", "disable"):
        raise Refused(404, "Not a page of the console.")
    need(posted.session, MARKETING_WRITE, f"{switch} rules")
    api = caller(request, posted.session)
    await api.post("outreach", f"/v1/rules/{quote(rule_id, safe='')}/{switch}")
    return RedirectResponse(f"/rules?saved={quote(rule_id, safe='')}", status_code=303)
