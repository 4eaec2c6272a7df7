"""The audit log: who changed which rule, policy, channel, key or suppression, when, and
what it looked like before and after.

An entry is written by :func:`record` on the caller's own connection or session, inside the
transaction that makes the change: a change that rolls back leaves no entry, and a change
that commits always has one. Every service serves the log at ``GET /v1/audit``
(:data:`router`, added by :func:`shared.http.create_app`).

Secrets never reach the log: callers pass what their read APIs show (a channel's
``has_secret``, never its secret; a key's id and name, never the key or its hash), and
:func:`redact` replaces any value filed under a secret-sounding name as a safety net.
"""

from __future__ import annotations

import base64
import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt
from pydantic.config import JsonDict
from sqlalchemy import Select, literal, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.auth import Principal, RequireScope, Scope, audit_log
from shared.http import ERROR_RESPONSES, IsoDateTime

REDACTED = "[redacted]"
# A value under a key like these is replaced whatever it holds (booleans such as `has_secret`
# and nulls say nothing secret and stay).
_SECRET_KEY = re.compile(r"secret|password|passwd|token|key_hash|api_key|credential", re.I)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: an API key (``key_id`` and its name), or someone without one
    (``cli:<user>`` for the ``tend`` command, ``unsubscribe-link`` for a customer's link)."""

    name: str
    key_id: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        return cls(principal.name, principal.key_id)


def cli_actor() -> Actor:
    """The operating-system user running the ``tend`` command."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        user = "unknown"
    return Actor(f"cli:{user}")


UNSUBSCRIBE_LINK = Actor("unsubscribe-link")


def redact(value: Any) -> Any:
    """``value`` with every secret-named entry replaced by ``[redacted]``, however deep."""
    if isinstance(value, Mapping):
        return {
            str(k): (
                REDACTED
                if _SECRET_KEY.search(str(k)) and v is not None and not isinstance(v, bool)
                else redact(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


async def record(
    conn: AsyncConnection | AsyncSession,
    *,
    actor: Actor,
    service: str,
    action: str,
    subject: str,
    before: Mapping[str, Any] | BaseModel | None = None,
    after: Mapping[str, Any] | BaseModel | None = None,
) -> None:
    """Write one entry in the transaction ``conn`` is in (it commits or rolls back with the
    change). ``action`` is ``<thing>.<verb>`` (``rule.updated``); ``subject`` names the thing
    (a rule id, a channel id, a key id, a customer id); ``before`` / ``after`` are the thing
    as the API shows it, None where there is none (before a creation, after a deletion)."""
    await conn.execute(
        text(
            "INSERT INTO auth.audit_log (actor_key_id, actor, service, action, subject, "
            "before, after) VALUES (:key_id, :actor, :service, :action, :subject, "
            "CAST(:before AS jsonb), CAST(:after AS jsonb))"
        ),
        {
            "key_id": actor.key_id,
            "actor": actor.name,
            "service": service,
            "action": action,
            "subject": subject,
            "before": _document(before),
            "after": _document(after),
        },
    )


def _document(value: Mapping[str, Any] | BaseModel | None) -> str | None:
    if value is None:
        return None
    plain = value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value
    return orjson.dumps(redact(plain), default=_plain).decode()


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} cannot be written to the audit log")


# -- reading ------------------------------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["audit"])

Reader = Annotated[Principal, RequireScope(Scope.OPS_READ)]

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
        "`unsubscribe-link` for a customer's own link"
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


def _encode_cursor(at: datetime, entry_id: int) -> str:
    raw = orjson.dumps({"at": at.isoformat(), "id": entry_id})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(token: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return _Cursor.model_validate_json(raw)
    except ValueError:  # bad base64, bad JSON and a bad shape alike
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "cursor"),
                    "msg": "not a cursor returned by this endpoint; start without one",
                    "type": "value_error",
                }
            ]
        ) from None


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
    responses=ERROR_RESPONSES,
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
    return await _page(request, query, limit, cursor)


async def _page(request: Request, query: Select[Any], limit: int, cursor: str | None) -> AuditPage:
    if cursor is not None:
        after = _decode_cursor(cursor)
        query = query.where(tuple_(_t.c.at, _t.c.id) < tuple_(literal(after.at), literal(after.id)))
    query = query.order_by(_t.c.at.desc(), _t.c.id.desc()).limit(limit + 1)
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    return AuditPage(
        items=[AuditEntry.model_validate(r) for r in rows],
        next_cursor=_encode_cursor(last.at, last.id) if more and last else None,
    )
