"""The audit log: who changed which rule, policy, channel, key or suppression, when, and
what it looked like before and after.

An entry is written by :func:`record` on the caller's own connection or session, inside the
transaction that makes the change: a change that rolls back leaves no entry, and a change
that commits always has one. Every service serves the log at ``GET /v1/audit``
(:mod:`shared.audit_api`, added by :func:`shared.http.create_app`).

Secrets never reach the log: callers pass what their read APIs show (a channel's
``has_secret``, never its secret; a key's id and name, never the key or its hash), and
:func:`redact` replaces any value filed under a secret-sounding name as a safety net.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import orjson
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

REDACTED = "[redacted]"
# A value under a key like these is replaced whatever it holds (booleans such as `has_secret`
# and nulls say nothing secret and stay).
_SECRET_KEY = re.compile(r"secret|password|passwd|token|key_hash|api_key|credential", re.I)


class _KeyHolder(Protocol):
    """What an actor is told apart by: an API key's principal (:class:`shared.auth.Principal`)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: an API key (``key_id`` and its name), or someone without one
    (``cli:<user>`` for the ``tend`` command, ``unsubscribe-link`` and ``resubscribe-link``
    for a customer's own links)."""

    name: str
    key_id: str | None = None

    @classmethod
    def of(cls, principal: _KeyHolder) -> Actor:
        return cls(principal.name, principal.key_id)


def cli_actor() -> Actor:
    """The operating-system user running the ``tend`` command."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        user = "unknown"
    return Actor(f"cli:{user}")


UNSUBSCRIBE_LINK = Actor("unsubscribe-link")
RESUBSCRIBE_LINK = Actor("resubscribe-link")


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
