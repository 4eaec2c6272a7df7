"""``GET /v1/customers/{id}/schedule``: what outreach will do next for one customer — the
schedule rules' next instants and the decided actions still waiting — from the real ledger."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.api.schedule import router
from services.outreach.shell.service import OutreachState
from shared.auth import KeyStore
from shared.http import create_app, no_lifespan
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)


@pytest_asyncio.fixture
async def api(engine: AsyncEngine, settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        service="schedule-test",
        title="schedule",
        description="the customer schedule under test",
        lifespan=no_lifespan,
        readiness=lambda _: {},
        max_body=settings.max_body_bytes,
    )
    app.include_router(router)
    app.state = OutreachState()
    app.state.engine = engine
    app.state.keys = KeyStore(engine, 0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
        yield client


async def test_a_customers_schedule_and_waiting_actions_soonest_first(
    api: httpx.AsyncClient, engine: AsyncEngine, keys: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    customer, other = f"sch-{tag}", f"sch-{tag}-other"
    rule = f"sch-{tag}-birthday"
    definition = {"id": rule, "action": {"kind": "greeting", "channel": "email"}}
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outreach.rules (id, version, definition, enabled, created_at, "
                "updated_at) VALUES (:id, 1, CAST(:d AS jsonb), true, :at, :at)"
            ),
            {"id": rule, "d": orjson.dumps(definition).decode(), "at": NOW},
        )
        # The customer waits in the birthday rule's line since yesterday (its daily limit
        # passed them over).
        for rule_id, who, due, waiting_since in (
            (rule, customer, NOW + timedelta(days=30), NOW - timedelta(days=1)),
            (f"sch-{tag}-gone", customer, NOW + timedelta(days=2), None),  # its rule is no more
            (rule, other, NOW + timedelta(days=1), None),
        ):
            await conn.execute(
                text(
                    "INSERT INTO outreach.schedule (rule_id, customer_id, due_at, waiting_since) "
                    "VALUES (:r, :c, :due, :w)"
                ),
                {"r": rule_id, "c": who, "due": due, "w": waiting_since},
            )
        ids = {}
        for name, who, status, reason, not_before, next_at in (
            ("quiet", customer, "scheduled", "quiet_hours", NOW + timedelta(hours=8), None),
            ("held", customer, "held", "open_complaint", None, None),
            ("due", customer, "pending", None, None, NOW - timedelta(minutes=1)),
            ("sent", customer, "sent", None, None, None),
            ("theirs", other, "scheduled", "quiet_hours", NOW, None),
        ):
            ids[name] = str(uuid.uuid4())
            await conn.execute(
                text(
                    "INSERT INTO outreach.actions (id, rule_id, customer_id, occurrence, kind, "
                    "channel, priority, status, reason, decided_at, not_before, next_attempt_at) "
                    "VALUES (:id, :rule, :c, :id, 'recall', 'email', 50, :status, :reason, "
                    ":decided, :nb, :next)"
                ),
                {
                    "id": ids[name],
                    "rule": rule,
                    "c": who,
                    "status": status,
                    "reason": reason,
                    "decided": NOW - timedelta(hours=2),
                    "nb": not_before,
                    "next": next_at,
                },
            )
    try:
        resp = await api.get(
            f"/v1/customers/{customer}/schedule", headers={"X-API-Key": keys["ops_read"]}
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["customer_id"] == customer
        assert [(s["rule_id"], s["kind"]) for s in body["scheduled"]] == [
            (f"sch-{tag}-gone", None),
            (rule, "greeting"),
        ]
        assert body["scheduled"][1]["due_at"] == "2030-07-14T12:00:00Z"
        assert [s["waiting_since"] for s in body["scheduled"]] == [None, "2030-06-13T12:00:00Z"]
        waiting = body["waiting"]
        assert [w["id"] for w in waiting] == [ids["due"], ids["quiet"], ids["held"]]
        assert [(w["status"], w["reason"]) for w in waiting] == [
            ("pending", None),
            ("scheduled", "quiet_hours"),
            ("held", "open_complaint"),
        ]
        assert waiting[1]["not_before"] == "2030-06-14T20:00:00Z"

        nobody = await api.get(
            f"/v1/customers/nobody-{tag}/schedule", headers={"X-API-Key": keys["ops_read"]}
        )
        assert nobody.json() == {"customer_id": f"nobody-{tag}", "scheduled": [], "waiting": []}
        assert (await api.get(f"/v1/customers/{customer}/schedule")).status_code == 401
        ingest_only = await api.get(
            f"/v1/customers/{customer}/schedule", headers={"X-API-Key": keys["ingest"]}
        )
        assert ingest_only.status_code == 403
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM outreach.actions WHERE id = ANY(CAST(:ids AS text[]))"),
                {"ids": list(ids.values())},
            )
            await conn.execute(
                text("DELETE FROM outreach.schedule WHERE customer_id IN (:a, :b)"),
                {"a": customer, "b": other},
            )
            await conn.execute(text("DELETE FROM outreach.rules WHERE id = :id"), {"id": rule})
