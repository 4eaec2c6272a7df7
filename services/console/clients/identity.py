"""Who an API key is and what it may do: ``GET /v1/me``, or, from services older than it,
harmless probes of the routes the console uses."""

from __future__ import annotations

from dataclasses import dataclass

from services.console.clients.api import ApiError, Caller

OPS_READ = "ops:read"
MARKETING_WRITE = "marketing:write"


@dataclass(frozen=True)
class Identity:
    key_id: str | None
    name: str
    scopes: frozenset[str]


class BadKey(Exception):
    """The key is unknown, revoked or holds no scope the console can use."""


async def identify(caller: Caller) -> Identity:
    """The key's identity; :class:`BadKey` when the APIs do not accept it.

    Without ``/v1/me`` (404), the scopes the console needs are probed without changing
    anything: a read of the policy (``ops:read``), and a rule create with an empty body
    (``marketing:write``: refused as invalid, 422, rather than forbidden, 403)."""
    try:
        me = await caller.get("scoring", "/v1/me")
    except ApiError as e:
        if e.status in (401, 403):
            raise BadKey("The APIs do not accept this key.") from None
        if not e.missing:
            raise
    else:
        return Identity(
            key_id=me.get("key_id"),
            name=str(me.get("name") or "API key"),
            scopes=frozenset(str(s) for s in me.get("scopes", [])),
        )
    scopes = set()
    try:
        await caller.get("outreach", "/v1/policy")
        scopes.add(OPS_READ)
    except ApiError as e:
        if e.status == 401:
            raise BadKey("The APIs do not accept this key.") from None
        if e.status != 403:
            raise
    try:
        await caller.post("outreach", "/v1/rules", json={})
    except ApiError as e:
        if e.status == 422:
            scopes.add(MARKETING_WRITE)
        elif e.status not in (401, 403):
            raise
    if not scopes:
        raise BadKey("This key may not read Tend's figures: the console needs ops:read.")
    return Identity(key_id=None, name="API key", scopes=frozenset(scopes))
