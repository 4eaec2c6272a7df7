"""The broker goes away: nobody is told an event was accepted unless the broker has it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.ingest.app import create_app
from shared.settings import CommonSettings
from shared.topics import Topics, ensure_topics
from tests.support.broker import LocalBroker
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[LocalBroker]:
    b = LocalBroker(tmp_path / "kafka")
    await b.start()
    yield b
    await b.stop()


def _order(i: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{uuid.uuid4().hex[:8]}-{i}",
        "customer_id": f"c-{i % 7}",
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "status": "paid",
        "amount": f"{10 + i}.00",
        "currency": "USD",
    }


async def test_broker_down_means_503_never_2xx_and_every_2xx_event_survives(
    broker: LocalBroker, settings: CommonSettings, keys: dict[str, str]
) -> None:
    own = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap})
    await ensure_topics(own)
    headers = {"Authorization": f"Bearer {keys['ingest']}"}
    acknowledged: set[str] = set()
    app = create_app(own)
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        before = [_order(i) for i in range(5)]
        for body in before:
            resp = await client.post("/v1/orders", json=body, headers=headers)
            assert resp.status_code == 202
            acknowledged.add(resp.json()["event_id"])

        await broker.stop()
        during = [_order(i) for i in range(5, 8)]
        for body in during:
            started = time.monotonic()
            resp = await client.post("/v1/orders", json=body, headers=headers)
            assert resp.status_code == 503, resp.text
            assert time.monotonic() - started < 5.0
            assert resp.headers["retry-after"].isdigit()
            assert resp.json()["error"] == "unavailable"
        batch = {"events": [{"type": "order", **_order(i)} for i in range(8, 10)]}
        resp = await client.post("/v1/events", json=batch, headers=headers)
        assert resp.status_code == 503
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"] is False

        await broker.start()
        # The client retries what failed; retries after the outage are accepted exactly once.
        deadline = time.monotonic() + 90
        pending = list(during)
        while pending:
            assert time.monotonic() < deadline, "broker back, but events still refused"
            resp = await client.post("/v1/orders", json=pending[0], headers=headers)
            if resp.status_code == 202:
                acknowledged.add(resp.json()["event_id"])
                pending.pop(0)
        while True:
            resp = await client.post("/v1/events", json=batch, headers=headers)
            if resp.status_code == 200:
                acknowledged |= {r["event_id"] for r in resp.json()["results"]}
                break
            assert time.monotonic() < deadline
        await client.aclose()

    on_topic = {
        orjson.loads(r.value)["event_id"]
        for r in await read_all(broker.bootstrap, Topics.from_settings(own).events)
    }
    assert len(acknowledged) == 10
    assert acknowledged <= on_topic
