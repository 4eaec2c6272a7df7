"""API keys with scopes, shared by every service's HTTP API.

Keys are random tokens shown once at creation; only their SHA-256 is stored (a key has 256
bits of entropy, so a fast hash is safe and keeps verification cheap). The keys live in their
own ``auth`` schema: every service reads it, only the ``tend keys`` command writes it.
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
from sqlalchemy import Column, DateTime, String, Table, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import schema_metadata

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


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(engine: AsyncEngine, name: str, scopes: Sequence[Scope]) -> tuple[str, str]:
    """Store a new key and return ``(key_id, key)``; the key itself is never stored."""
    key = "tend_" + secrets.token_urlsafe(32)
    key_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            api_keys.insert().values(
                id=key_id,
                name=name,
                key_hash=hash_key(key),
                scopes=sorted({s.value for s in scopes}),
                created_at=datetime.now(UTC),
            )
        )
    return key_id, key


async def revoke_key(engine: AsyncEngine, key_id: str) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    return bool(result.rowcount)


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
                    select(api_keys.c.id, api_keys.c.name, api_keys.c.scopes).where(
                        api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        principal = Principal(row.id, row.name, frozenset(row.scopes)) if row else None
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: a flood of random keys cannot grow memory
        self._cache[digest] = (now + self._ttl, principal)
        return principal


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <API key>`")


def require(scope: Scope) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that admits a request only with a live key holding ``scope``."""

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        header: Annotated[str | None, Security(_header)],
    ) -> Principal:
        key = bearer.credentials if bearer else header
        if not key:
            raise HTTPException(
                401,
                "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        store: KeyStore = request.app.state.keys
        principal = await store.verify(key)
        if principal is None:
            raise HTTPException(
                401, "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"}
            )
        if scope.value not in principal.scopes:
            raise HTTPException(403, f"the API key lacks the '{scope.value}' scope")
        return principal

    return dependency


def RequireScope(scope: Scope) -> Any:
    return Depends(require(scope))
