"""``GET /v1/me``: every service tells a key who it is and what it may do."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app as create_ingest
from services.outreach.app import create_app as create_outreach
from services.scoring.app import create_app as create_scoring
from shared.auth import KeyStore, Scope, create_key, revoke_key
from shared.http import create_app, no_lifespan
from shared.ratelimit import Limit
from shared.service_state import ServiceState
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

FACTORIES: dict[str, Callable[[CommonSettings], FastAPI]] = {
    "ingest": create_ingest,
    "scoring": create_scoring,
    "outreach": create_outreach,
}


@pytest.mark.parametrize("service", FACTORIES)
def test_every_service_serves_me_to_any_key(settings: CommonSettings, service: str) -> None:
    operation = FACTORIES[service](settings).openapi()["paths"]["/v1/me"]["get"]
    assert operation["security"]  # a key is needed
    assert {"200", "401", "403", "429"} <= set(operation["responses"])


@pytest_asyncio.fixture
async def api(engine: AsyncEngine, settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    # The route as every service includes it (shared.http), on the real key store.
    app = create_app(
        service="me-test",
        title="me",
        description="GET /v1/me under test",
        lifespan=no_lifespan,
        readiness=lambda _: {},
        max_body=settings.max_body_bytes,
    )
    app.state = ServiceState()
    app.state.keys = KeyStore(engine, 0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://me") as client:
        yield client


async def test_me_names_the_calling_key_and_its_scopes(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    key_id, key = await create_key(
        engine,
        "console-marketing",
        [Scope.OPS_READ, Scope.MARKETING_WRITE],
        rate_limit=Limit(5, 10),
    )
    resp = await api.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "key_id": key_id,
        "name": "console-marketing",
        "scopes": ["marketing:write", "ops:read"],
        "rate_limit": {"per_second": 5.0, "burst": 10},
    }

    ingest_id, ingest_key = await create_key(engine, "shop-backend", [Scope.EVENTS_WRITE])
    resp = await api.get("/v1/me", headers={"X-API-Key": ingest_key})
    assert resp.json() == {
        "key_id": ingest_id,
        "name": "shop-backend",
        "scopes": ["events:write"],
        "rate_limit": None,
    }

    assert (await api.get("/v1/me")).status_code == 401
    assert await revoke_key(engine, key_id)
    revoked = await api.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert revoked.status_code == 401
    _, scopeless = await create_key(engine, "no-scopes", [])
    assert (await api.get("/v1/me", headers={"X-API-Key": scopeless})).status_code == 403
