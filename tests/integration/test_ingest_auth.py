"""Who may post events: the endpoint × key matrix."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import Scope, create_key, revoke_key

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).isoformat()
BODIES = {
    "/v1/orders": {
        "order_id": "o-auth",
        "customer_id": "c-auth",
        "occurred_at": NOW,
        "status": "placed",
        "amount": "1",
        "currency": "USD",
    },
    "/v1/complaints": {
        "complaint_id": "k-auth",
        "customer_id": "c-auth",
        "occurred_at": NOW,
        "status": "opened",
    },
    "/v1/visits": {
        "visit_id": "v-auth",
        "customer_id": "c-auth",
        "occurred_at": NOW,
        "channel": "web",
    },
    "/v1/customers": {"customer_id": "c-auth", "name": "Auth Test"},
    "/v1/events": {
        "events": [
            {
                "type": "visit",
                "visit_id": "v-auth-b",
                "customer_id": "c-auth",
                "occurred_at": NOW,
                "channel": "app",
            }
        ]
    },
}


@pytest.fixture
async def revoked_key(engine: AsyncEngine) -> str:
    key_id, key = await create_key(engine, f"revoked-{uuid.uuid4().hex[:6]}", [Scope.EVENTS_WRITE])
    assert await revoke_key(engine, key_id)
    return key


@pytest.mark.parametrize("path", sorted(BODIES))
async def test_every_ingest_endpoint_needs_a_live_key_with_events_write(
    path: str, ingest: httpx.AsyncClient, keys: dict[str, str], revoked_key: str
) -> None:
    body = BODIES[path]
    cases = {
        "no key": ({}, 401),
        "unknown key": ({"Authorization": "Bearer tend_not-a-real-key"}, 401),
        "revoked key": ({"Authorization": f"Bearer {revoked_key}"}, 401),
        "ops key": ({"Authorization": f"Bearer {keys['ops']}"}, 403),
        "marketing key": ({"X-API-Key": keys["marketing"]}, 403),
        "ingest key (bearer)": ({"Authorization": f"Bearer {keys['ingest']}"}, (200, 202)),
        "ingest key (header)": ({"X-API-Key": keys["ingest"]}, (200, 202)),
    }
    for name, (headers, expected) in cases.items():
        resp = await ingest.post(path, json=body, headers=headers)
        allowed = expected if isinstance(expected, tuple) else (expected,)
        assert resp.status_code in allowed, f"{name}: {resp.status_code} {resp.text}"
        if resp.status_code == 401:
            assert resp.json()["error"] == "unauthorized"
            assert resp.headers["www-authenticate"] == "Bearer"
        if resp.status_code == 403:
            assert "events:write" in resp.json()["message"]


async def test_health_and_metrics_need_no_key(ingest: httpx.AsyncClient) -> None:
    assert (await ingest.get("/healthz")).status_code == 200
    ready = await ingest.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True}
    metrics = await ingest.get("/metrics")
    assert "tend_http_requests_total" in metrics.text
