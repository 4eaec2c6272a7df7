"""kill -9 outreach while it is delivering, then restart it: no action is decided twice, and
the receiver (a webhook endpoint, or an SMS provider) sees every action under one webhook id
(a redelivery carries the same id, so the provider drops it: a text is never sent twice)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import text

from services.outreach.core.templates import SAMPLE_CARD
from shared.auth import Scope, create_key
from shared.changes import change_id_for
from shared.db import make_engine
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.databases import fresh_settings
from tests.support.pipeline import until
from tests.support.receivers import Step, WebhookReceiver
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.integration

CUSTOMERS = 20


def _change(customer_id: str) -> bytes:
    now = datetime.now(UTC).isoformat()
    event_id = str(uuid.uuid4())
    profile = SAMPLE_CARD["profile"]
    card = {
        **SAMPLE_CARD,
        "customer_id": customer_id,
        "complaints": {"open": 0, "total": 0, "last_at": None},
        "profile": {**profile, "consent": {**profile["consent"], "sms": True}},
    }
    return orjson.dumps(
        {
            "change_id": change_id_for("event", event_id),
            "customer_id": customer_id,
            "cause": "event",
            "at": now,
            "stage_change": None,
            "card": card,
            "event": {
                "event_id": event_id,
                "event_type": "visit.recorded",
                "schema_version": 1,
                "customer_id": customer_id,
                "occurred_at": now,
                "received_at": now,
                "source": "test",
                "data": {"visit_id": f"v-{customer_id}", "channel": "store"},
            },
        }
    )


def _outreach(settings: CommonSettings, logs: Path) -> ServiceProcess:
    return ServiceProcess(
        "outreach",
        settings,
        logs,
        extra_env={
            "TEND_OUTREACH_CONSUMER_GROUP": f"{settings.topic_prefix}outreach",
            "TEND_OUTREACH_ALLOW_PRIVATE_WEBHOOKS": "true",
            "TEND_OUTREACH_WEBHOOK_TIMEOUT_SECONDS": "2",
            "TEND_LOG_LEVEL": "WARNING",
        },
    )


@pytest.mark.parametrize("kind", ["webhook", "sms"])
async def test_kill_9_during_delivery_never_decides_twice_and_keeps_one_webhook_id(
    settings: CommonSettings, tmp_path: Path, kind: str
) -> None:
    async with fresh_settings(settings) as own, WebhookReceiver(default=200) as hook:
        engine = make_engine(own, pool_size=2)
        _, key = await create_key(engine, "crash", [Scope.MARKETING_WRITE, Scope.OPS_READ])
        headers = {"Authorization": f"Bearer {key}"}
        proc = _outreach(own, tmp_path)
        await asyncio.to_thread(proc.start)
        async with httpx.AsyncClient(base_url=proc.url, headers=headers) as api:
            # No quiet hours: the test must not depend on the hour it runs at.
            assert (await api.put("/v1/policy", json={"quiet_hours": None})).status_code == 200
            assert (
                await api.post(
                    "/v1/channels",
                    json={
                        "id": "crash",
                        "kind": kind,
                        "config": {"url": hook.url},
                        "secret": hook.secret,
                    },
                )
            ).status_code == 201
            assert (
                await api.post(
                    "/v1/rules",
                    json={
                        "id": "visit-care",
                        "name": "care after a visit",
                        "trigger": {"type": "event", "event": "visit.recorded"},
                        "action": {
                            "kind": "care",
                            "channel": kind,
                            "template": {"subject": "care", "body": "hello"},
                        },
                    },
                )
            ).status_code == 201
        # Every delivery hangs until the receiver is told otherwise: they are all in flight
        # when the process dies.
        hang: list[Step] = ["hang"] * CUSTOMERS
        hook.then(*hang)
        customers = [f"crash-{i}" for i in range(CUSTOMERS)]
        changes = Topics.from_settings(own).changes
        producer = await start_producer(own)
        try:
            await publish_many(
                producer, [Record(changes, c.encode(), _change(c)) for c in customers], timeout=30
            )
        finally:
            await producer.stop()
        await hook.wait_for(CUSTOMERS, timeout=60)
        proc.kill()

        restarted = _outreach(own, tmp_path)
        await asyncio.to_thread(restarted.start)
        try:

            async def all_sent() -> bool:
                async with engine.connect() as conn:
                    n = await conn.scalar(
                        text("SELECT count(*) FROM outreach.actions WHERE status = 'sent'")
                    )
                return bool(n == CUSTOMERS)

            await until(all_sent, timeout=120, what="every action sent after the restart")
        finally:
            restarted.stop()

        async with engine.connect() as conn:
            rows = (
                await conn.execute(text("SELECT id, customer_id, occurrence FROM outreach.actions"))
            ).all()
        await engine.dispose()
        assert sorted(r.customer_id for r in rows) == sorted(customers)  # decided once each
        action_ids = {r.id for r in rows}
        received = {r.webhook_id for r in hook.received}
        assert received == action_ids  # every webhook carried its action's id, no other
        answered = [r.webhook_id or "" for r in hook.received if r.answer == 200]
        assert sorted(answered) == sorted(action_ids)  # redelivered once each, same id
        assert all(r.verified for r in hook.received)
