"""The contact policy, the suppression list, and one-click unsubscribe (RFC 8058).

Unsubscribing needs no API key: the signed token in the link is the credential, and it names
the customer. ``GET`` only shows a confirmation page (mail scanners fetch links); ``POST`` is
the one-click unsubscribe that mail providers send with the body ``List-Unsubscribe=One-Click``
and that the confirmation page's button sends too.

Every change to the policy and the suppression list is written to the audit log in the
transaction that makes it.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import text

from services.outreach.api.rules import Reader, Writer, invalid
from services.outreach.core.policy import Policy
from services.outreach.core.unsubscribe import verify
from services.outreach.shell.current import Current, load_policy, save_policy
from services.outreach.shell.decide import lock_customers
from shared import audit
from shared.events import Identifier
from shared.http import ERROR_RESPONSES, ErrorBody
from shared.logging import get_logger

log = get_logger(__name__)

router = APIRouter(prefix="/v1")


@router.get(
    "/policy",
    response_model=Policy,
    responses=ERROR_RESPONSES,
    tags=["policy"],
    summary="The contact policy",
)
async def get_policy(request: Request, _: Reader) -> Policy:
    """The global contact policy: the frequency cap, quiet hours, which kinds are
    transactional (exempt from marketing consent, the cap and quiet hours) and which are
    promotional (held while a complaint is open), and the default time zone."""
    async with request.app.state.engine.connect() as conn:
        return await load_policy(conn)


@router.put(
    "/policy",
    response_model=Policy,
    responses=ERROR_RESPONSES,
    tags=["policy"],
    summary="Replace the contact policy",
)
async def put_policy(request: Request, policy: Policy, principal: Writer) -> Policy:
    """Replace the whole policy; omitted fields take their defaults, and `null` turns the
    frequency cap or quiet hours off. It applies to every decision from now on."""
    s = request.app.state
    async with s.engine.begin() as conn:
        # Serialises replacements, so each entry's `before` is what that change replaced.
        await conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended('outreach.policy', 0))")
        )
        before = await load_policy(conn)
        await save_policy(conn, policy, s.clock.now())
        await audit.record(
            conn,
            actor=audit.Actor.of(principal),
            service="outreach",
            action="policy.updated",
            subject="policy",
            before=before,
            after=policy,
        )
    current: Current = s.current
    await current.reload(s.engine)
    log.info("policy_replaced", actor=principal.name)
    return policy


# -- suppressions -------------------------------------------------------------------------------

CustomerId = Identifier


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: CustomerId
    # Printable text: PostgreSQL cannot store NUL, and a reason is read by people.
    reason: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    ]


class Suppression(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    customer_id: str
    reason: str
    source: str = Field(description="`api` (added here) or `unsubscribe` (the customer's link)")
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[Suppression] = Field(description="in customer id order")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "the customer is not suppressed"},
}
_COLUMNS = "customer_id, reason, source, created_at"


@router.get(
    "/suppressions",
    response_model=SuppressionPage,
    responses=ERROR_RESPONSES,
    tags=["suppressions"],
    summary="List suppressed customers",
)
async def list_suppressions(
    request: Request,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=1000, description="Suppressions per page.")] = 100,
    cursor: Annotated[
        str | None,
        Query(max_length=400, description="The `next_cursor` of the previous page; omit at first."),
    ] = None,
) -> SuppressionPage:
    """The customers who hear nothing from outreach, whatever the rule, in customer id order,
    one page at a time."""
    after = _decode_cursor(cursor) if cursor is not None else None
    where = "WHERE customer_id > :after" if after is not None else ""
    query = text(
        f"SELECT {_COLUMNS} FROM outreach.suppressions {where} ORDER BY customer_id LIMIT :n"
    )
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(query, {"after": after, "n": limit + 1})).all()
    more = len(rows) > limit
    items = [Suppression.model_validate(r) for r in rows[:limit]]
    return SuppressionPage(
        items=items, next_cursor=_encode_cursor(items[-1].customer_id) if more else None
    )


def _encode_cursor(customer_id: str) -> str:
    return base64.urlsafe_b64encode(customer_id.encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> str:
    try:
        after = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError:  # bad base64 and bad UTF-8 alike
        after = ""
    if not after:
        raise invalid("query.cursor", "not a cursor returned by this endpoint; start without one")
    return after


@router.post(
    "/suppressions",
    status_code=201,
    response_model=Suppression,
    responses={**ERROR_RESPONSES, 200: {"model": Suppression, "description": "already there"}},
    tags=["suppressions"],
    summary="Suppress a customer",
)
async def add_suppression(
    request: Request, body: SuppressionIn, response: Response, principal: Writer
) -> Suppression:
    """Put the customer on the suppression list: from now on every action for them is
    suppressed when decided, and any still waiting is suppressed when it would be delivered.
    201 when added; 200 with the existing entry when the customer already was suppressed."""
    s = request.app.state
    async with s.engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    f"""
                INSERT INTO outreach.suppressions ({_COLUMNS})
                VALUES (:customer_id, :reason, 'api', :now)
                ON CONFLICT (customer_id) DO NOTHING
                RETURNING {_COLUMNS}
                """
                ),
                {"customer_id": body.customer_id, "reason": body.reason, "now": s.clock.now()},
            )
        ).first()
        if row is None:
            response.status_code = 200
            row = (
                await conn.execute(
                    text(f"SELECT {_COLUMNS} FROM outreach.suppressions WHERE customer_id = :c"),
                    {"c": body.customer_id},
                )
            ).one()
        else:
            await audit.record(
                conn,
                actor=audit.Actor.of(principal),
                service="outreach",
                action="suppression.created",
                subject=body.customer_id,
                after=Suppression.model_validate(row),
            )
    log.info("customer_suppressed", customer_id=body.customer_id, actor=principal.name)
    return Suppression.model_validate(row)


@router.delete(
    "/suppressions/{customer_id}",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
    tags=["suppressions"],
    summary="Lift a suppression",
)
async def delete_suppression(request: Request, customer_id: str, principal: Writer) -> Response:
    """Take the customer off the suppression list (whatever put them there, including their
    own unsubscribe: do this only on their renewed request). Actions already suppressed stay
    suppressed; new decisions may reach them again."""
    async with request.app.state.engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    f"DELETE FROM outreach.suppressions WHERE customer_id = :c RETURNING {_COLUMNS}"
                ),
                {"c": customer_id},
            )
        ).first()
        if row is None:
            raise HTTPException(404, f"customer {customer_id!r} is not suppressed")
        await audit.record(
            conn,
            actor=audit.Actor.of(principal),
            service="outreach",
            action="suppression.deleted",
            subject=customer_id,
            before=Suppression.model_validate(row),
        )
    log.info("suppression_lifted", customer_id=customer_id, actor=principal.name)
    return Response(status_code=204)


# -- unsubscribe --------------------------------------------------------------------------------
#
# Two spellings of one link: `/v1/unsubscribe/{token}` (what `unsubscribe_url` puts in
# messages and List-Unsubscribe headers) and `/v1/unsubscribe?token=...`.

Token = Annotated[
    str, Query(min_length=1, max_length=1000, description="The signed token of the link.")
]
_BAD_TOKEN: dict[int | str, dict[str, Any]] = {
    code: spec for code, spec in ERROR_RESPONSES.items() if code not in (401, 403)
}
_POSTED: dict[int | str, dict[str, Any]] = {**_BAD_TOKEN, 200: {"content": {"text/html": {}}}}
_QUEUED = ("pending", "scheduled", "held")
_DONE = "<p>You will hear nothing more from us.</p>"
_UNSUBSCRIBED = "unsubscribed through the link in a message"


class Unsubscribed(BaseModel):
    unsubscribed: bool = True
    suppressed_actions: int = Field(description="waiting actions that will not go out now")


def _customer_of(request: Request, token: str, where: str) -> str:
    secret = request.app.state.outreach_settings.unsubscribe_secret.get_secret_value()
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


async def _confirmation(request: Request, customer_id: str) -> HTMLResponse:
    async with request.app.state.engine.connect() as conn:
        done = await conn.scalar(
            text("SELECT 1 FROM outreach.suppressions WHERE customer_id = :c"), {"c": customer_id}
        )
    if done is not None:
        return _html("You are unsubscribed", _DONE)
    # No action attribute: the form posts back to this very URL, token included.
    return _html(
        "Unsubscribe",
        "<p>Stop every message from us?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


async def _unsubscribe(request: Request, customer_id: str) -> Unsubscribed | HTMLResponse:
    s = request.app.state
    now = s.clock.now()
    async with s.engine.begin() as conn:
        # The decision path's lock: a decision for this customer either finished before
        # (and its action is suppressed below) or runs after and sees the suppression.
        await lock_customers(conn, [customer_id])
        found = (
            await conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM outreach.suppressions WHERE customer_id = :c "
                    "FOR UPDATE"
                ),
                {"c": customer_id},
            )
        ).first()
        before = Suppression.model_validate(found) if found is not None else None
        after = (
            await conn.execute(
                text(
                    f"""
                    INSERT INTO outreach.suppressions ({_COLUMNS})
                    VALUES (:c, :reason, 'unsubscribe', :now)
                    ON CONFLICT (customer_id) DO UPDATE SET reason = EXCLUDED.reason,
                        source = EXCLUDED.source
                    RETURNING {_COLUMNS}
                    """
                ),
                {"c": customer_id, "reason": _UNSUBSCRIBED, "now": now},
            )
        ).one()
        suppression = Suppression.model_validate(after)
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
        result = await conn.execute(
            text(
                """
                UPDATE outreach.actions SET status = 'suppressed', reason = 'unsubscribed',
                    detail = 'the customer unsubscribed', next_attempt_at = NULL
                WHERE customer_id = :c AND status = ANY(CAST(:queued AS text[]))
                """
            ),
            {"c": customer_id, "queued": list(_QUEUED)},
        )
    log.info("customer_unsubscribed", customer_id=customer_id, suppressed=result.rowcount)
    if "text/html" in request.headers.get("accept", ""):
        return _html("You are unsubscribed", _DONE)
    return Unsubscribed(suppressed_actions=result.rowcount)


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
async def unsubscribe_page(request: Request, token: Token) -> HTMLResponse:
    return await _confirmation(request, _customer_of(request, token, "query"))


@router.get(
    "/unsubscribe/{token}",
    response_class=HTMLResponse,
    responses=_BAD_TOKEN,
    tags=["unsubscribe"],
    summary="Unsubscribe confirmation page (link form)",
    description=_PAGE_DOC,
)
async def unsubscribe_link_page(request: Request, token: str) -> HTMLResponse:
    return await _confirmation(request, _customer_of(request, token, "path"))


@router.post(
    "/unsubscribe",
    response_model=Unsubscribed,
    responses=_POSTED,
    tags=["unsubscribe"],
    summary="Unsubscribe (one click)",
    description=_POST_DOC,
)
async def unsubscribe(request: Request, token: Token) -> Unsubscribed | HTMLResponse:
    return await _unsubscribe(request, _customer_of(request, token, "query"))


@router.post(
    "/unsubscribe/{token}",
    response_model=Unsubscribed,
    responses=_POSTED,
    tags=["unsubscribe"],
    summary="Unsubscribe (one click, link form)",
    description=_POST_DOC,
)
async def unsubscribe_link(request: Request, token: str) -> Unsubscribed | HTMLResponse:
    return await _unsubscribe(request, _customer_of(request, token, "path"))
