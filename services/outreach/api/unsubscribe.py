"""One-click unsubscribe (RFC 8058), and the customer's own way back.

Neither needs an API key: the signed token in the link is the credential, and it names the
customer and the day it was minted (links expire after ``unsubscribe_link_days``). ``GET``
only shows a confirmation page (mail scanners fetch links); ``POST`` acts. The unsubscribe
``POST`` is what mail providers send with the body ``List-Unsubscribe=One-Click``
(form-encoded or multipart) and what the confirmation page's button sends too; its page
back offers a re-subscribe link, the one way the customer's unsubscribe is lifted without an
operator. What either does is written to the audit log and the events outbox in the same
transaction: the request's own.

A browser (``Accept: text/html``) gets pages, a bad or expired link included; anything else
gets JSON.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.api.deps import Outreach
from services.outreach.core.unsubscribe import Link, Purpose, resubscribe_url, verify
from services.outreach.schemas import Resubscribed, Unsubscribed
from services.outreach.shell import opt_out
from services.outreach.shell.service import OutreachState
from services.outreach.store import aliases, suppressions
from shared import audit
from shared.errors import beyond_schema, invalid, responses
from shared.service_state import Transaction

router = APIRouter(prefix="/v1")

# Two spellings of one link: `/v1/unsubscribe/{token}` (what `unsubscribe_url` puts in
# messages and List-Unsubscribe headers) and `/v1/unsubscribe?token=...`.

Token = Annotated[
    str, Query(min_length=1, max_length=1000, description="The signed token of the link.")
]
_HTML: dict[str, Any] = {"content": {"text/html": {}}}
_BAD_TOKEN: dict[int | str, dict[str, Any]] = {
    code: spec
    for code, spec in responses(
        beyond_schema(
            {
                "query.token": "a link outreach signed, exactly as sent",
                "path.token": "a link outreach signed, exactly as sent",
            }
        )
    ).items()
    if code not in (401, 403)
}
_BAD_TOKEN[422] = {
    **_BAD_TOKEN[422],
    "description": "the link is not valid or has expired (a page for a browser)",
    "content": {**_BAD_TOKEN[422].get("content", {}), "text/html": {}},
}
_POSTED: dict[int | str, dict[str, Any]] = {**_BAD_TOKEN, 200: _HTML}
_DONE = "<p>You will hear nothing more from us.</p>"


@dataclass(frozen=True, slots=True)
class _BadLink:
    field: str
    reason: str


def _check(outreach: OutreachState, token: str, where: str, purpose: Purpose) -> Link | _BadLink:
    settings = outreach.settings
    link = verify(token, settings.unsubscribe_secret.get_secret_value(), purpose)
    if link is None:
        return _BadLink(
            f"{where}.token",
            f"this {purpose.value} link is not valid (altered or incomplete); use the link "
            "exactly as it is",
        )
    days = settings.unsubscribe_link_days
    if link.expired(outreach.clock.now(), days):
        return _BadLink(
            f"{where}.token",
            f"this {purpose.value} link expired on {link.expires(days):%Y-%m-%d} (links work "
            f"for {days} days); use the link in a more recent message from us",
        )
    return link


def _refused(request: Request, bad: _BadLink) -> HTMLResponse:
    """A browser's page for a bad link; anything else gets the usual 422 (raised)."""
    if not _wants_html(request):
        raise invalid(bad.field, bad.reason)
    return _html("This link does not work", f"<p>{html.escape(bad.reason)}.</p>", 422)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _html(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{title}</title></head>'
        '<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">'
        f"<h1>{title}</h1>{body}</body></html>",
        status_code=status,
    )


def _unsubscribed_page(outreach: OutreachState, customer_id: str) -> HTMLResponse:
    settings = outreach.settings
    back = resubscribe_url(
        settings.public_base_url,
        customer_id,
        settings.unsubscribe_secret.get_secret_value(),
        outreach.clock.now(),
    )
    return _html(
        "You are unsubscribed",
        f'{_DONE}<p>Changed your mind? <a href="{html.escape(back)}">Hear from us again</a>.</p>',
    )


async def _confirmation(
    request: Request, outreach: OutreachState, token: str, where: str
) -> HTMLResponse:
    link = _check(outreach, token, where, Purpose.UNSUBSCRIBE)
    if isinstance(link, _BadLink):
        return _refused(request, link)
    # Its own connection, opened once the token is known good: the page needs no API key.
    async with outreach.engine.connect() as conn:
        # A link sent to a record since merged speaks for the person: the survivor.
        customer_id = await aliases.survivor_of(conn, link.customer_id)
        entry = await suppressions.get(conn, customer_id)
    if entry is not None and entry.source == opt_out.SOURCE:
        return _unsubscribed_page(outreach, customer_id)
    if entry is not None:
        return _html("You are unsubscribed", _DONE)
    # No action attribute: the form posts back to this very URL, token included.
    return _html(
        "Unsubscribe",
        "<p>Stop every message from us?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def _unsubscribe(
    request: Request, outreach: OutreachState, conn: AsyncConnection, token: str, where: str
) -> Unsubscribed | HTMLResponse:
    link = _check(outreach, token, where, Purpose.UNSUBSCRIBE)
    if isinstance(link, _BadLink):
        return _refused(request, link)
    # A link sent to a record since merged unsubscribes the person: the survivor.
    customer_id = await aliases.survivor_of(conn, link.customer_id)
    done = await opt_out.unsubscribe(conn, customer_id, outreach.clock.now())
    if _wants_html(request):
        return _unsubscribed_page(outreach, customer_id)
    return Unsubscribed(suppressed_actions=done.suppressed_actions)


_PAGE_DOC = """A small page that asks the customer to confirm; its button is the one-click
`POST`. Opening the link changes nothing (mail scanners open links too). No API key: the
signed token is the credential. Once the customer is unsubscribed, the page offers their
re-subscribe link. A bad or expired link: 422 (a page for a browser)."""
_POST_DOC = """RFC 8058 one-click unsubscribe, no API key: the signed token names the
customer, and the body (`List-Unsubscribe=One-Click`, form-encoded or multipart) is accepted
but not needed. The customer goes on the suppression list (source `unsubscribe`), every
action still waiting for them (pending, scheduled, held) is suppressed with reason
`unsubscribed`, and scoring learns it (`customer.unsubscribed`: the card shows
`profile.consent.unsubscribed`). Repeating it is harmless. A browser (`Accept: text/html`)
gets a page back, with the customer's re-subscribe link; anything else JSON. A bad or
expired link: 422 (a page for a browser)."""


@router.get(
    "/unsubscribe",
    response_class=HTMLResponse,
    responses=_BAD_TOKEN,
    tags=["unsubscribe"],
    summary="Unsubscribe confirmation page",
    description=_PAGE_DOC,
)
async def unsubscribe_page(request: Request, outreach: Outreach, token: Token) -> HTMLResponse:
    return await _confirmation(request, outreach, token, "query")


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses=_BAD_TOKEN,
    tags=["unsubscribe"],
    summary="Unsubscribe confirmation page (link form)",
    description=_PAGE_DOC,
)
async def unsubscribe_link_page(request: Request, outreach: Outreach, token: str) -> HTMLResponse:
    return await _confirmation(request, outreach, token, "path")


@router.post(
    "/unsubscribe",
    response_model=Unsubscribed,
    responses=_POSTED,
    tags=["unsubscribe"],
    summary="Unsubscribe (one click)",
    description=_POST_DOC,
)
async def unsubscribe(
    request: Request, outreach: Outreach, token: Token, conn: Transaction
) -> Unsubscribed | HTMLResponse:
    return await _unsubscribe(request, outreach, conn, token, "query")


@router.post(
    "/unsubscribe/{token}",
    response_model=Unsubscribed,
    responses=_POSTED,
    tags=["unsubscribe"],
    summary="Unsubscribe (one click, link form)",
    description=_POST_DOC,
)
async def unsubscribe_link(
    request: Request, outreach: Outreach, token: str, conn: Transaction
) -> Unsubscribed | HTMLResponse:
    return await _unsubscribe(request, outreach, conn, token, "path")


# -- the way back ------------------------------------------------------------------------


@router.get(
    "/resubscribe/{token}",
    response_class=HTMLResponse,
    responses=_BAD_TOKEN,
    tags=["unsubscribe"],
    summary="Re-subscribe confirmation page",
)
async def resubscribe_page(request: Request, outreach: Outreach, token: str) -> HTMLResponse:
    """The page of the re-subscribe link the customer was shown when they unsubscribed: it
    asks them to confirm; its button is the `POST`. Opening it changes nothing. A bad or
    expired link: 422 (a page for a browser)."""
    link = _check(outreach, token, "path", Purpose.RESUBSCRIBE)
    if isinstance(link, _BadLink):
        return _refused(request, link)
    return _html(
        "Hear from us again",
        "<p>Lift your unsubscribe and hear from us again?</p>"
        '<form method="post"><button type="submit">Yes, re-subscribe me</button></form>',
    )


@router.post(
    "/resubscribe/{token}",
    response_model=Resubscribed,
    responses=_POSTED,
    tags=["unsubscribe"],
    summary="Re-subscribe",
)
async def resubscribe(
    request: Request, outreach: Outreach, token: str, conn: Transaction
) -> Resubscribed | HTMLResponse:
    """Lift the customer's own unsubscribe, no API key: the signed token names the customer
    and is the credential. It lifts only an unsubscribe made before the link was minted (a
    later one stands), and only the customer's own (not a suppression marketing added).
    Scoring learns it (`customer.resubscribed`). A browser gets a page back, anything else
    JSON. A bad or expired link: 422 (a page for a browser)."""
    link = _check(outreach, token, "path", Purpose.RESUBSCRIBE)
    if isinstance(link, _BadLink):
        return _refused(request, link)
    customer_id = await aliases.survivor_of(conn, link.customer_id)
    entry = await suppressions.get(conn, customer_id, for_update=True)
    lifted = (
        entry is not None
        and entry.source == opt_out.SOURCE
        and int(entry.created_at.timestamp()) <= int(link.issued.timestamp())
    )
    if lifted:
        assert entry is not None
        await opt_out.lift(
            conn,
            entry,
            outreach.clock.now(),
            actor=audit.RESUBSCRIBE_LINK,
            how="link",
            reason="the customer's own re-subscribe link",
        )
    if _wants_html(request):
        if lifted:
            return _html("Welcome back", "<p>You will hear from us again.</p>")
        return _html("Nothing to change", "<p>Your unsubscribe is not lifted by this link.</p>")
    return Resubscribed(resubscribed=lifted)
