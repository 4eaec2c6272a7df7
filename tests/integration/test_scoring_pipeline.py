"""Scoring on the real broker and database: changes out for every event, stages moved by
time, poison records set aside, repeats ignored."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.changes import Change
from shared.clock import FixedClock
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.integration.conftest import wait_applied
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _changes_of(
    settings: CommonSettings, customer_id: str, expected: int, timeout: float = 30
) -> list[Change]:
    """The changes for one customer on the changes topic, once there are ``expected``."""
    topic = Topics.from_settings(settings).changes
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [
            Change.from_json(r.value)
            for r in await read_all(settings.kafka_bootstrap_servers, topic)
            if r.key == customer_id.encode()
        ]
        if len(found) >= expected or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.3)


async def _post(ingest: httpx.AsyncClient, key: str, events: list[dict[str, Any]]) -> list[str]:
    resp = await ingest.post("/v1/events", json={"events": events}, headers=_auth(key))
    assert resp.status_code == 200, resp.text
    assert resp.json()["rejected"] == 0, resp.text
    return [r["event_id"] for r in resp.json()["results"]]


async def test_every_event_yields_a_change_with_the_event_and_the_new_card(
    ingest: httpx.AsyncClient,
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
    scoring_clock: FixedClock,
) -> None:
    cid = f"c-{uuid.uuid4().hex[:8]}"
    now = scoring_clock.now()
    events = [
        {
            "type": "customer",
            "customer_id": cid,
            "name": "Grace",
            "timezone": "Europe/Paris",
            "occurred_at": (now - timedelta(days=20)).isoformat(),
        },
        {
            "type": "order",
            "order_id": f"{cid}-1",
            "customer_id": cid,
            "status": "placed",
            "amount": "40.00",
            "currency": "USD",
            "occurred_at": (now - timedelta(days=10)).isoformat(),
        },
        {
            "type": "order",
            "order_id": f"{cid}-1",
            "customer_id": cid,
            "status": "paid",
            "amount": "40.00",
            "currency": "USD",
            "occurred_at": (now - timedelta(days=10, minutes=-5)).isoformat(),
        },
    ]
    ids = await _post(ingest, keys["ingest"], events)
    await wait_applied(engine, ids)
    changes = await _changes_of(settings, cid, 3)
    assert [c.event.event_id for c in changes if c.event] == ids
    assert all(c.cause == "event" for c in changes)
    first, placed, paid = changes
    assert first.card["stage"] == "prospect" and first.stage_change is None
    assert placed.stage_change is not None
    assert (placed.stage_change.from_, placed.stage_change.to) == ("prospect", "new")
    assert paid.card["value"]["orders"] == 1  # placed then paid is one purchase
    assert paid.card["value"]["lifetime_spend"] == "40.00"
    assert paid.card["profile"]["name"] == "Grace"

    client, _ = scoring
    card = (await client.get(f"/v1/customers/{cid}", headers=_auth(keys["ops_read"]))).json()
    assert card["stage"] == "new"
    assert card["value"]["orders"] == 1

    # The same event delivered again (a producer retry, a replay) changes nothing and
    # publishes nothing: a later event on the same partition proves it was consumed.
    topics = Topics.from_settings(settings)
    [original] = [
        r
        for r in await read_all(settings.kafka_bootstrap_servers, topics.events)
        if r.key == cid.encode() and orjson.loads(r.value)["event_id"] == ids[2]
    ]
    producer = await start_producer(settings)
    try:
        await publish_many(
            producer, [Record(topics.events, original.key, original.value)], timeout=10
        )
    finally:
        await producer.stop()
    later = await _post(
        ingest,
        keys["ingest"],
        [
            {
                "type": "visit",
                "visit_id": f"{cid}-v",
                "customer_id": cid,
                "channel": "store",
                "occurred_at": now.isoformat(),
            }
        ],
    )
    await wait_applied(engine, later)
    changes = await _changes_of(settings, cid, 4)
    assert [c.event.event_id for c in changes if c.event] == [*ids, *later]
    card = (await client.get(f"/v1/customers/{cid}", headers=_auth(keys["ops_read"]))).json()
    assert card["value"]["orders"] == 1


async def test_time_alone_moves_a_silent_customer_and_publishes_a_time_change(
    ingest: httpx.AsyncClient,
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
    scoring_clock: FixedClock,
) -> None:
    client, _ = scoring
    cid = f"c-{uuid.uuid4().hex[:8]}"
    now = scoring_clock.now()
    # Three purchases ten days apart: a rhythm of 10 days.
    ids = await _post(
        ingest,
        keys["ingest"],
        [
            {
                "type": "order",
                "order_id": f"{cid}-{i}",
                "customer_id": cid,
                "status": "paid",
                "amount": "10.00",
                "currency": "USD",
                "occurred_at": (now - timedelta(days=25 - 10 * i)).isoformat(),
            }
            for i in range(3)
        ],
    )
    await wait_applied(engine, ids)
    card = (await client.get(f"/v1/customers/{cid}", headers=_auth(keys["ops_read"]))).json()
    assert card["stage"] == "growing"
    due = datetime.fromisoformat(card["next_transition_at"])

    start = scoring_clock.now()
    try:
        scoring_clock.set(due + timedelta(hours=1))
        resp = await client.post("/v1/ops/sweep", headers=_auth(keys["ops"]))
        assert resp.status_code == 200, resp.text
        assert resp.json()["moved"] >= 1
        card = (await client.get(f"/v1/customers/{cid}", headers=_auth(keys["ops_read"]))).json()
        assert card["stage"] == "declining"
        [timed] = [c for c in await _changes_of(settings, cid, 4) if c.cause == "time"]
        assert timed.stage_change is not None
        assert (timed.stage_change.from_, timed.stage_change.to) == ("growing", "declining")
        assert timed.event is None
        # Nothing else is due for this customer now: a second sweep moves nothing of theirs.
        await client.post("/v1/ops/sweep", headers=_auth(keys["ops"]))
        assert (
            len([c for c in await _changes_of(settings, cid, 4, timeout=0) if c.cause == "time"])
            == 1
        )
    finally:
        scoring_clock.set(start)


async def test_a_poison_event_goes_to_the_dlq_and_the_next_one_is_applied(
    ingest: httpx.AsyncClient,
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
) -> None:
    topics = Topics.from_settings(settings)
    cid = f"c-{uuid.uuid4().hex[:8]}"
    poison = orjson.dumps(
        {
            "event_id": f"bad-{cid}",
            "event_type": "order.paid",
            "customer_id": cid,
            "schema_version": 99,
        }
    )
    producer = await start_producer(settings)
    try:
        await publish_many(producer, [Record(topics.events, cid.encode(), poison)], timeout=10)
    finally:
        await producer.stop()
    ids = await _post(
        ingest,
        keys["ingest"],
        [
            {
                "type": "visit",
                "visit_id": f"{cid}-v",
                "customer_id": cid,
                "channel": "web",
                "occurred_at": datetime.now(UTC).isoformat(),
            },
        ],
    )
    await wait_applied(engine, ids)
    dead = [
        r for r in await read_all(settings.kafka_bootstrap_servers, topics.dlq) if r.value == poison
    ]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["dlq.source.topic"] == topics.events.encode()
    assert headers["dlq.consumer.group"] == f"{settings.topic_prefix}scoring".encode()
    assert b"schema_version" in headers["dlq.error"]
    assert headers["dlq.source.offset"].isdigit()
