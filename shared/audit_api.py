"""``GET /v1/audit``: the audit log, read one page at a time, on every service.

What is recorded and how is :mod:`shared.audit`; this is the route that reads it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt
from pydantic.config import JsonDict
from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.auth import Reader, audit_log
from shared.cursor import CURSOR_RESPONSES, encode_cursor, newest_first
from shared.errors import responses
from shared.params import IsoDateTime
from shared.service_state import state_of

router = APIRouter(prefix="/v1", tags=["audit"])

_EXAMPLE: JsonDict = {
    "id": 1042,
    "at": "2030-06-14T12:03:51.201Z",
    "actor": "marketing-team",
    "actor_key_id": "0b8f3c1e-3f7a-4c55-9d1e-6a2f54a0c9d7",
    "service": "outreach",
    "action": "rule.updated",
    "subject": "winback-60",
    "before": {"version": 3, "rule": {"id": "winback-60", "enabled": True}},
    "after": {"version": 4, "rule": {"id": "winback-60", "enabled": False}},
}


class AuditEntry(BaseModel):
    """One change: who made it, when, to what, and what it was before and after."""

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_EXAMPLE]})

    id: int
    at: datetime = Field(description="when the change's transaction began")
    actor: str = Field(
        description="the API key's name, `cli:<user>` for the `tend` command, or "
        "`unsubscribe-link` / `resubscribe-link` for a customer's own links"
    )
    actor_key_id: str | None = Field(description="the API key's id; null without a key")
    service: str = Field(description="`ingest`, `scoring`, `outreach` or `cli`")
    action: str = Field(
        description="rule.created/updated/enabled/disabled/deleted, policy.updated, "
        "channel.created/updated/deleted, key.created/revoked, suppression.created/updated/"
        "deleted"
    )
    subject: str = Field(
        description="what changed: a rule, channel or key id, a customer id (suppressions), "
        "`policy`"
    )
    before: dict[str, Any] | None = Field(description="null for a creation; secrets redacted")
    after: dict[str, Any] | None = Field(description="null for a deletion; secrets redacted")


class AuditPage(BaseModel):
    items: list[AuditEntry] = Field(description="newest first")
    next_cursor: str | None = Field(
        description="pass as `cursor` (with the same filters) for the next page; null on the "
        "last page"
    )


# A cursor is base64url JSON of the last entry's (at, id): the listing's order key.
class _Cursor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime
    id: StrictInt


_t = audit_log
# What the log records: a filter names one action (``rule.updated``) or a family (``rule``).
ACTIONS = (
    "rule.created",
    "rule.updated",
    "rule.enabled",
    "rule.disabled",
    "rule.deleted",
    "policy.updated",
    "channel.created",
    "channel.updated",
    "channel.deleted",
    "key.created",
    "key.revoked",
    "suppression.created",
    "suppression.updated",
    "suppression.deleted",
)
ActionName = StrEnum(  # type: ignore[misc]
    "ActionName",
    {n.replace(".", "_"): n for n in (*sorted({a.split(".")[0] for a in ACTIONS}), *ACTIONS)},
)


@router.get(
    "/audit",
    response_model=AuditPage,
    responses=responses(CURSOR_RESPONSES),
    summary="The audit log",
)
async def list_audit(
    request: Request,
    _: Reader,
    action: Annotated[
        list[ActionName] | None,
        Query(
            max_length=20,
            description="Only these actions (`rule.deleted`), or whole families without a "
            "dot (`rule`, `channel`); repeat for several.",
        ),
    ] = None,
    subject: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only changes to this rule, channel, key or customer id.",
        ),
    ] = None,
    actor: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only changes by this API key (its name or its id), or `cli:<user>`.",
        ),
    ] = None,
    since: Annotated[IsoDateTime | None, Query(description="At or after this instant.")] = None,
    until: Annotated[IsoDateTime | None, Query(description="Before this instant.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Entries per page.")] = 50,
    cursor: Annotated[
        str | None,
        Query(
            max_length=1000, description="The `next_cursor` of the previous page; omit at first."
        ),
    ] = None,
) -> AuditPage:
    """Every change to rules, the contact policy, channels, API keys and suppressions, newest
    first, one page at a time: who made it (the API key's name and id, or `cli:<user>`), when,
    through which service, and the thing before and after (secrets are never recorded).
    Different filters must all hold.

    For example `GET /v1/audit?action=rule&subject=winback-60&since=2030-06-01T00:00:00Z`
    is the history of one rule since June; follow `next_cursor` until it is null."""
    query = select(_t)
    if action:
        families = [a for a in action if "." not in a]
        exact = [a for a in action if "." in a]
        query = query.where(
            or_(
                _t.c.action.in_(exact),
                *(_t.c.action.startswith(f"{f}.", autoescape=True) for f in families),
            )
        )
    if subject is not None:
        query = query.where(_t.c.subject == subject)
    if actor is not None:
        query = query.where(or_(_t.c.actor == actor, _t.c.actor_key_id == actor))
    if since is not None:
        query = query.where(_t.c.at >= since)
    if until is not None:
        query = query.where(_t.c.at < until)
    async with state_of(request).engine.connect() as conn:
        return await _page(conn, query, limit, cursor)


async def _page(
    conn: AsyncConnection, query: Select[Any], limit: int, cursor: str | None
) -> AuditPage:
    rows, last = await newest_first(
        conn, query, _t.c.at, _t.c.id, limit=limit, cursor=cursor, shape=_Cursor
    )
    return AuditPage(
        items=[AuditEntry.model_validate(r) for r in rows],
        next_cursor=encode_cursor(last) if last else None,
    )
