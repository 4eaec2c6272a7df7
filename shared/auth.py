"""API keys with scopes, shared by every service's HTTP API.

Keys are random tokens shown once at creation; only their SHA-256 is stored (a key has 256
bits of entropy, so a fast hash is safe and keeps verification cheap). The keys live in their
own ``auth`` schema: every service reads it, only the ``tend keys`` command writes it. The
schema also holds what every service shares about who does what: the audit log
(:mod:`shared.audit`) and each key's request budget (:mod:`shared.ratelimit`), which
:func:`require` spends one request at a time.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    String,
    Table,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import audit
from shared.audit import Actor
from shared.db import schema_metadata, unreachable
from shared.errors import unavailable_error
from shared.ratelimit import Limit, RateLimiter

KEY_MISSES = Counter(
    "tend_api_key_misses_total",
    "Requests refused 401 for their API key: none given (missing), or unknown or revoked (unknown)",
    ["service", "reason"],
)

SCHEMA = "auth"
metadata = schema_metadata(SCHEMA)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("scopes", ARRAY(String(32)), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # The key's own request budget; both null: the services' default (TEND_RATE_LIMIT_*).
    Column("rate_per_second", Float, nullable=True),
    Column("rate_burst", Integer, nullable=True),
    CheckConstraint(
        "(rate_per_second IS NULL) = (rate_burst IS NULL) "
        "AND (rate_per_second IS NULL OR rate_per_second >= 0) "
        "AND (rate_burst IS NULL OR rate_burst >= 1)",
        name="rate_limit",
    ),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("actor_key_id", String(36), nullable=True),
    Column("actor", String(200), nullable=False),
    Column("service", String(32), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("before", JSONB, nullable=True),
    Column("after", JSONB, nullable=True),
    Index("ix_audit_log_at_id", "at", "id"),
    Index("ix_audit_log_subject_at", "subject", "at", "id"),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("tat", DateTime(timezone=True), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("allowed", Boolean, nullable=False),
    prefixes=["UNLOGGED"],
)


class Scope(StrEnum):
    EVENTS_WRITE = "events:write"
    OPS_READ = "ops:read"
    OPS_WRITE = "ops:write"
    MARKETING_WRITE = "marketing:write"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    # The key's own budget; None: the service's default.
    rate_limit: Limit | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(
    engine: AsyncEngine,
    name: str,
    scopes: Sequence[Scope],
    *,
    rate_limit: Limit | None = None,
    actor: Actor | None = None,
    service: str = "cli",
) -> tuple[str, str]:
    """Store a new key and return ``(key_id, key)``; the key itself is never stored.

    ``rate_limit`` gives the key a budget of its own (``Limit(0, 1)``: none at all) instead
    of the services' default. The creation is audited in the same transaction, as ``actor``
    (the ``tend`` command's user, ``cli:<user>``, when not given)."""
    key = "tend_" + secrets.token_urlsafe(32)
    key_id = str(uuid.uuid4())
    row = {
        "id": key_id,
        "name": name,
        "scopes": sorted({s.value for s in scopes}),
        "created_at": datetime.now(UTC),
        "rate_per_second": rate_limit.per_second if rate_limit else None,
        "rate_burst": rate_limit.burst if rate_limit else None,
    }
    async with engine.begin() as conn:
        await conn.execute(api_keys.insert().values(key_hash=hash_key(key), **row))
        await audit.record(
            conn,
            actor=actor or audit.cli_actor(),
            service=service,
            action="key.created",
            subject=key_id,
            after=row,
        )
    return key_id, key


async def revoke_key(
    engine: AsyncEngine, key_id: str, *, actor: Actor | None = None, service: str = "cli"
) -> bool:
    """Revoke the key; False when there is no live key ``key_id``. Audited like
    :func:`create_key`."""
    shown = (
        api_keys.c.id,
        api_keys.c.name,
        api_keys.c.scopes,
        api_keys.c.created_at,
        api_keys.c.revoked_at,
    )
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
                .returning(*shown)
            )
        ).first()
        if row is None:
            return False
        after = row._asdict()
        await audit.record(
            conn,
            actor=actor or audit.cli_actor(),
            service=service,
            action="key.revoked",
            subject=key_id,
            before={**after, "revoked_at": None},
            after=after,
        )
    return True


async def key_is_active(engine: AsyncEngine, key: str) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(api_keys.c.id).where(
                api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None)
            )
        )
    return found is not None


class KeyStore:
    """Verifies keys against the database, remembering answers for a few seconds so a
    busy endpoint does not pay a query per request."""

    def __init__(self, engine: AsyncEngine, cache_seconds: float) -> None:
        self._engine = engine
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def verify(self, key: str) -> Principal | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        api_keys.c.id,
                        api_keys.c.name,
                        api_keys.c.scopes,
                        api_keys.c.rate_per_second,
                        api_keys.c.rate_burst,
                    ).where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
                )
            ).first()
        principal = None
        if row is not None:
            own = None
            if row.rate_per_second is not None and row.rate_burst is not None:
                own = Limit(row.rate_per_second, row.rate_burst)
            principal = Principal(row.id, row.name, frozenset(row.scopes), own)
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: a flood of random keys cannot grow memory
        self._cache[digest] = (now + self._ttl, principal)
        return principal


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <API key>`")


def require(scope: Scope, *alternatives: Scope) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that admits a request only with a live key holding ``scope`` (or one of
    the ``alternatives``: a route that two kinds of key may call, each for its own part)."""
    admitted = {s.value for s in (scope, *alternatives)}
    needed = " or ".join(f"'{s.value}'" for s in (scope, *alternatives))

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        header: Annotated[str | None, Security(_header)],
    ) -> Principal:
        key = bearer.credentials if bearer else header
        if not key:
            KEY_MISSES.labels(_service(request), "missing").inc()
            raise HTTPException(
                401,
                "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        store: KeyStore = request.app.state.keys
        try:
            principal = await store.verify(key)
        except Exception as exc:
            if not unreachable(exc):
                raise
            raise unavailable_error("the database") from exc
        if principal is None:
            KEY_MISSES.labels(_service(request), "unknown").inc()
            raise HTTPException(
                401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
            )
        await _spend(request, principal)
        if not admitted & principal.scopes:
            raise HTTPException(403, f"the API key lacks the {needed} scope")
        return principal

    return dependency


def _service(request: Request) -> str:
    return str(getattr(request.app.state, "service", "unknown"))


async def _spend(request: Request, principal: Principal) -> None:
    """Spend one request of the key's budget, or answer 429 with ``Retry-After``. Every
    request of a live key counts, whatever its scope, once however many scopes the route
    requires."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None or getattr(request.state, "rate_spent", False):
        return
    request.state.rate_spent = True
    verdict = await limiter.admit(principal.key_id, principal.rate_limit)
    if not verdict.allowed:
        limit = principal.rate_limit or limiter.default
        raise HTTPException(
            429,
            f"this API key is over its rate limit ({limit.per_second:g} requests a second, "
            f"bursts of {limit.burst}); retry after {verdict.retry_after} s",
            headers={"Retry-After": str(verdict.retry_after)},
        )


def RequireScope(scope: Scope, *alternatives: Scope) -> Any:
    return Depends(require(scope, *alternatives))


# The principal a route admits, by the scope it needs: one name per scope for every service.
EventsWriter = Annotated[Principal, RequireScope(Scope.EVENTS_WRITE)]
Reader = Annotated[Principal, RequireScope(Scope.OPS_READ)]
Operator = Annotated[Principal, RequireScope(Scope.OPS_WRITE)]
MarketingWriter = Annotated[Principal, RequireScope(Scope.MARKETING_WRITE)]
