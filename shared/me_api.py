"""``GET /v1/me``: who the calling API key is and what it may do, on every service.

A client (the console, a script checking its setup) learns the key's id, name and scopes
without holding ``tend keys``' rights; what each scope admits is in each route's
documentation.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from shared.auth import Principal, RequireScope, Scope
from shared.errors import responses

router = APIRouter(prefix="/v1", tags=["identity"])

# Any live key holding any scope: a key with none may call nothing, this included.
AnyKey = Annotated[Principal, RequireScope(*Scope)]
_KNOWN = frozenset(s.value for s in Scope)


class RateLimitOut(BaseModel):
    per_second: float = Field(description="requests a second the key's budget refills by")
    burst: int = Field(description="requests the key may make at once")


class Me(BaseModel):
    """The calling key: who it is and which scopes it holds."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key_id": "0b8f3c1e-3f7a-4c55-9d1e-6a2f54a0c9d7",
                    "name": "marketing-team",
                    "scopes": ["marketing:write", "ops:read"],
                    "rate_limit": None,
                }
            ]
        }
    )

    key_id: str = Field(description="the key's id (as `tend keys list` shows it)")
    name: str = Field(description="the name the key was created with")
    scopes: list[Scope] = Field(
        description="sorted; `ops:read` reads, `ops:write` runs the operator's levers, "
        "`marketing:write` changes rules, policy, channels and suppressions, `events:write` "
        "sends events"
    )
    rate_limit: RateLimitOut | None = Field(
        description="the key's own request budget; null: the service's default"
    )


@router.get("/me", response_model=Me, responses=responses(), summary="The calling API key")
async def get_me(principal: AnyKey) -> Me:
    """The API key this request was made with: its id, name, scopes and request budget, so a
    client can show or hide what the key may not do. Any live key with at least one scope
    may ask; without a key (or with an unknown or revoked one) the answer is 401."""
    own = principal.rate_limit
    return Me(
        key_id=principal.key_id,
        name=principal.name,
        scopes=sorted(Scope(s) for s in principal.scopes if s in _KNOWN),
        rate_limit=RateLimitOut(per_second=own.per_second, burst=own.burst) if own else None,
    )
