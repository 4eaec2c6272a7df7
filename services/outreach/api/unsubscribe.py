"""One-click unsubscribe (RFC 8058).

Unsubscribing needs no API key: the signed token in the link is the credential, and it names
the customer. ``GET`` only shows a confirmation page (mail scanners fetch links); ``POST`` is
the one-click unsubscribe that mail providers send with the body ``List-Unsubscribe=One-Click``
and that the confirmation page's button sends too. The suppression it makes is written to the
audit log in the same transaction: the request's own.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.api.deps import Outreach
from services.outreach.core.unsubscribe import verify
from services.outreach.schemas import Unsubscribed
from services.outreach.shell.service import OutreachState
from services.outreach.store import suppressions
from services.outreach.store.ledger import suppress_unsubscribed
from services.outreach.store.replica import lock_customers
from shared import audit
from shared.errors import beyond_schema, invalid, responses
from shared.logging import get_logger
from shared.service_state import Transaction

log = get_logger(__name__)

router = APIRouter(prefix="/v1")

# Two spellings of one link: `/v1/unsubscribe/{token}` (what `unsubscribe_url` puts in
# messages and List-Unsubscribe headers) and `/v1/unsubscribe?token=...`.

Token = Annotated[
    str, Query(min_length=1, max_length=1000, description="The signed token of the link.")
]
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
_POSTED: dict[int | str, dict[str, Any]] = {**_BAD_TOKEN, 200: {"content": {"text/html": {}}}}
_DONE = "<p>You will hear nothing more from us.</p>"
_UNSUBSCRIBED = "unsubscribed through the link in a message"


def _customer_of(outreach: OutreachState, token: str, where: str) -> str:
    secret = outreach.settings.unsubscribe_secret.get_secret_value()
    customer_id = verify(token, secret)
    if customer_id is None:
        raise invalid(
            f"{where}.token",
            "this unsubscribe link is not valid (altered or incomplete); use the link from "
            "the message exactly as it is",
        )
    return customer_id


def _html(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="robots" content="noindex"><title>{title}</title></head>'
        '<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">'
        f"<h1>{title}</h1>{body}</body></html>"
    )


async def _confirmation(outreach: OutreachState, customer_id: str) -> HTMLResponse:
    # Its own connection, opened once the token is known good: the page needs no API key.
    async with outreach.engine.connect() as conn:
        done = await suppressions.is_suppressed(conn, customer_id)
    if done:
        return _html("You are unsubscribed", _DONE)
    # No action attribute: the form posts back to this very URL, token included.
    return _html(
        "Unsubscribe",
        "<p>Stop every message from us?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def _unsubscribe(
    request: Request, outreach: OutreachState, conn: AsyncConnection, customer_id: str
) -> Unsubscribed | HTMLResponse:
    now = outreach.clock.now()
    # The decision path's lock: a decision for this customer either finished before (and its
    # action is suppressed below) or runs after and sees the suppression.
    await lock_customers(conn, [customer_id])
    before = await suppressions.get(conn, customer_id, for_update=True)
    suppression = await suppressions.unsubscribed(conn, customer_id, _UNSUBSCRIBED, now)
    if suppression != before:  # a repeated click changes nothing and records nothing
        await audit.record(
            conn,
            actor=audit.UNSUBSCRIBE_LINK,
            service="outreach",
            action="suppression.created" if before is None else "suppression.updated",
            subject=customer_id,
            before=before,
            after=suppression,
        )
    suppressed = await suppress_unsubscribed(conn, customer_id)
    log.info("customer_unsubscribed", customer_id=customer_id, suppressed=suppressed)
    if "text/html" in request.headers.get("accept", ""):
        return _html("You are unsubscribed", _DONE)
    return Unsubscribed(suppressed_actions=suppressed)


_PAGE_DOC = """A small page that asks the customer to confirm; its button is the one-click
`POST`. Opening the link changes nothing (mail scanners open links too). No API key: the
signed token is the credential."""
_POST_DOC = """RFC 8058 one-click unsubscribe, no API key: the signed token names the
customer, and the body (`List-Unsubscribe=One-Click`, form-encoded) is accepted but not
needed. The customer goes on the suppression list (source `unsubscribe`) and every action
still waiting for them (pending, scheduled, held) is suppressed with reason `unsubscribed`.
Repeating it is harmless. A browser (`Accept: text/html`) gets a page back, anything else
JSON."""


@router.get(
    "/unsubscribe",
    response_class=HTMLResponse,
    responses=_BAD_TOKEN,
    tags=["unsubscribe"],
    summary="Unsubscribe confirmation page",
    description=_PAGE_DOC,
)
async def unsubscribe_page(outreach: Outreach, token: Token) -> HTMLResponse:
    return await _confirmation(outreach, _customer_of(outreach, token, "query"))


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses=_BAD_TOKEN,
    tags=["unsubscribe"],
    summary="Unsubscribe confirmation page (link form)",
    description=_PAGE_DOC,
)
async def unsubscribe_link_page(outreach: Outreach, token: str) -> HTMLResponse:
    return await _confirmation(outreach, _customer_of(outreach, token, "path"))


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
    return await _unsubscribe(request, outreach, conn, _customer_of(outreach, token, "query"))


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
    return await _unsubscribe(request, outreach, conn, _customer_of(outreach, token, "path"))
