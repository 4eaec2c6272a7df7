"""Channels: where outreach sends (webhook endpoints, SMS providers, SMTP servers). A webhook's
or an SMS provider's signing secret is shown once, in the page that answers its creation; the
console never keeps it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from services.console.clients.api import ApiError
from services.console.pages.web import (
    CheckedPost,
    Refused,
    SignedIn,
    caller,
    fetch,
    need,
    render,
)
from services.console.session import MARKETING_WRITE, Session

router = APIRouter()

KINDS = ("webhook", "sms", "email")
# The API's field (``body.`` left off: its URL checks name ``config.url``) → the form
# control that shows its error.
FIELDS = {
    "id": "channel_id",
    "kind": "kind",
    "config.url": "url",
    "config.smtp_host": "smtp_host",
    "config.smtp_port": "smtp_port",
    "config.from": "sender",
}
# An SMS provider's sender has a control of its own.
SMS_FIELDS = {**FIELDS, "config.from": "sms_from"}
EMPTY = {
    "channel_id": "",
    "kind": "webhook",
    "url": "",
    "smtp_host": "",
    "smtp_port": "",
    "sender": "",
    "sms_from": "",
    "enabled": "on",
}


async def _page(
    request: Request,
    session: Session,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    general: list[str] | None = None,
    created: dict[str, Any] | None = None,
    switched: str = "",
    status_code: int = 200,
) -> Response:
    listing = await fetch(caller(request, session).get("outreach", "/v1/channels"))
    return render(
        request,
        "channels.html",
        session,
        status_code=status_code,
        title="Channels · Tend",
        nav="channels",
        listing=listing,
        form=form or EMPTY,
        kinds=KINDS,
        errors=errors or {},
        general=general or [],
        created=created,
        switched=switched,
        may_write=session.can(MARKETING_WRITE),
    )


@router.get("/channels", include_in_schema=False)
async def channels(request: Request, session: SignedIn, switched: str = "") -> Response:
    return await _page(request, session, switched=switched)


def config_of(form: dict[str, str]) -> dict[str, Any]:
    if form["kind"] == "webhook":
        return {"url": form["url"]}
    if form["kind"] == "sms":
        return {"url": form["url"], **({"from": form["sms_from"]} if form["sms_from"] else {})}
    config: dict[str, Any] = {}
    if form["smtp_host"]:
        config["smtp_host"] = form["smtp_host"]
    if form["smtp_port"]:
        port = form["smtp_port"]
        config["smtp_port"] = int(port) if port.isdigit() else port
    if form["sender"]:
        config["from"] = form["sender"]
    return config


@router.post("/channels", include_in_schema=False)
async def create_channel(request: Request, posted: CheckedPost) -> Response:
    """Add a channel; a webhook's generated secret is in this answer only."""
    session = posted.session
    need(session, MARKETING_WRITE, "add channels")
    form = {name: posted.text(name) for name in EMPTY}
    body = {
        "id": form["channel_id"],
        "kind": form["kind"],
        "config": config_of(form),
        "enabled": bool(form["enabled"]),
    }
    try:
        created = await caller(request, session).post("outreach", "/v1/channels", json=body)
    except ApiError as e:
        if e.status not in (400, 409, 422):
            raise
        errors: dict[str, list[str]] = {}
        general: list[str] = []
        for x in e.errors:
            fields = SMS_FIELDS if form["kind"] == "sms" else FIELDS
            control = fields.get(x["field"].removeprefix("body."))
            if control:
                errors.setdefault(control, []).append(x["reason"])
            else:
                general.append(f"{x['field'].removeprefix('body.')}: {x['reason']}")
        if e.status == 409:
            errors["channel_id"] = [e.message]
        elif not e.errors:
            general.append(e.message)
        return await _page(
            request, session, form=form, errors=errors, general=general, status_code=e.status
        )
    # Rendered here, not redirected: the secret must not travel in an address, and a later
    # visit to the page never shows it again.
    return await _page(request, session, created=created, status_code=201)


@router.post("/channels/{channel_id}/{switch}", include_in_schema=False)
async def switch_channel(
    request: Request, posted: CheckedPost, channel_id: str, switch: str
) -> Response:
    if switch not in ("enable", "disable"):
        raise Refused(404, "Not a page of the console.")
    need(posted.session, MARKETING_WRITE, f"{switch} channels")
    api = caller(request, posted.session)
    path = f"/v1/channels/{quote(channel_id, safe='')}"
    found = await api.get("outreach", path)
    await api.put("outreach", path, json={"config": found["config"], "enabled": switch == "enable"})
    return RedirectResponse(f"/channels?switched={quote(channel_id, safe='')}", status_code=303)
