"""Orders posted one by one at the same time go to the broker and the database together: a
group of requests costs one claim, one resolve and one mark, and a retry racing its original
is still published once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka.partitioner import DefaultPartitioner
from fastapi import FastAPI
from sqlalchemy import event

from services.ingest.app import create_app
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def own_ingest(settings: CommonSettings) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An ingest of this test's own, so its statements can be counted."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client, app


def _order(customer_id: str) -> dict[str, Any]:
    return {
        "order_id": f"o-{uuid.uuid4().hex[:10]}",
        "customer_id": customer_id,
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "status": "paid",
        "amount": "12.50",
        "currency": "USD",
    }


async def _published(settings: CommonSettings, event_ids: set[str]) -> list[str]:
    records = await read_all(settings, Topics.from_settings(settings).events)
    ids = [orjson.loads(r.value)["event_id"] for r in records]
    return [i for i in ids if i in event_ids]


async def test_orders_posted_at_the_same_time_share_their_statements(
    own_ingest: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str], settings: CommonSettings
) -> None:
    client, app = own_ingest
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "ingest.idempotency_keys" in statement or "ingest.identities" in statement:
            statements.append(statement)

    sync_engine = app.state.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        n = 30
        answers = await asyncio.gather(
            *(
                client.post(
                    "/v1/orders",
                    json=_order(f"c-{uuid.uuid4().hex[:8]}"),
                    headers={"Authorization": f"Bearer {keys['ingest']}"},
                )
                for _ in range(n)
            )
        )
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)

    assert [a.status_code for a in answers] == [202] * n, [a.text for a in answers]
    event_ids = {a.json()["event_id"] for a in answers}
    assert len(event_ids) == n
    # Alone, each order would claim, resolve and mark: three statements each.
    assert len(statements) < 3 * n, len(statements)
    assert sorted(await _published(settings, event_ids)) == sorted(event_ids)


async def test_a_retry_racing_its_original_is_published_once(
    own_ingest: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str], settings: CommonSettings
) -> None:
    client, _ = own_ingest
    body = _order(f"c-{uuid.uuid4().hex[:8]}")
    headers = {"Authorization": f"Bearer {keys['ingest']}", "Idempotency-Key": uuid.uuid4().hex}
    first, retry = await asyncio.gather(
        client.post("/v1/orders", json=body, headers=headers),
        client.post("/v1/orders", json=body, headers=headers),
    )
    assert sorted([first.status_code, retry.status_code]) == [200, 202], (first.text, retry.text)
    assert {first.json()["status"], retry.json()["status"]} == {"accepted", "duplicate"}
    event_id = first.json()["event_id"]
    assert retry.json()["event_id"] == event_id
    assert await _published(settings, {event_id}) == [event_id]


async def test_batches_posted_together_reach_each_customers_partition_in_order(
    own_ingest: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str], settings: CommonSettings
) -> None:
    """Requests of many events, grouped and published as whole record batches: every event
    once, each customer's events on the partition its key hashes to (where the producer's own
    partitioner puts a lone record), in the order its request listed them."""
    client, _ = own_ingest
    run = uuid.uuid4().hex[:8]
    customers = [f"c-{run}-{k}" for k in range(17)]
    bodies = [
        [
            {"type": "order", **_order(customers[i % len(customers)]), "event_id": f"{run}-{r}-{i}"}
            for i in range(300)
        ]
        for r in range(4)
    ]
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/events",
                json={"events": events},
                headers={"Authorization": f"Bearer {keys['ingest']}"},
            )
            for events in bodies
        )
    )
    assert [a.status_code for a in answers] == [200] * 4, [a.text[:300] for a in answers]
    assert [a.json()["accepted"] for a in answers] == [300] * 4

    records = await read_all(settings, Topics.from_settings(settings).events)
    ours = [r for r in records if r.key is not None and r.key.decode() in customers]
    assert sorted(orjson.loads(r.value)["event_id"] for r in ours) == sorted(
        e["event_id"] for events in bodies for e in events
    )
    partitions = list(range(settings.topic_partitions))
    for customer in customers:
        mine = [r for r in ours if r.key == customer.encode()]
        assert {r.partition for r in mine} == {
            DefaultPartitioner()(customer.encode(), partitions, partitions)
        }
        for r in range(4):
            sent = [e["event_id"] for e in bodies[r] if e["customer_id"] == customer]
            got = [
                orjson.loads(rec.value)["event_id"]
                for rec in sorted(mine, key=lambda rec: rec.offset)
                if orjson.loads(rec.value)["event_id"].startswith(f"{run}-{r}-")
            ]
            assert got == sent


async def test_many_retries_racing_across_groups_publish_each_event_once(
    own_ingest: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str], settings: CommonSettings
) -> None:
    """The same batch posted twelve times at once, in groups one after the other: each event
    is published once and accepted once, every other answer for it a duplicate."""
    client, _ = own_ingest
    run = uuid.uuid4().hex[:8]
    events = [
        {"type": "order", **_order(f"c-{run}-{k % 3}"), "event_id": f"{run}-{k}"} for k in range(10)
    ]
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/events",
                json={"events": events},
                headers={"Authorization": f"Bearer {keys['ingest']}"},
            )
            for _ in range(12)
        )
    )
    assert [a.status_code for a in answers] == [200] * 12, [a.text[:300] for a in answers]
    assert sum(a.json()["accepted"] for a in answers) == len(events)
    assert sum(a.json()["duplicates"] for a in answers) == len(events) * 11
    ids = [e["event_id"] for e in events]
    assert sorted(await _published(settings, set(ids))) == sorted(ids)
