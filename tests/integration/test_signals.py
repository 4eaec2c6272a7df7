"""The signals an operator watches, from a scoring service running in-process on a database
and topics of this module's own (real Kafka and PostgreSQL): a killed consumer is named by
``/readyz`` and started again, a poison record moves the dead-letter counter, the records a
consumer handles are counted, a stalled relay moves the outbox's age, and every 401 for a key
is counted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from services.scoring.app import OUTBOX_LOCK
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.db import make_engine
from shared.events import Envelope
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.databases import fresh_settings
from tests.support.events import paid_order

pytestmark = pytest.mark.integration

# Long enough that /readyz, asked right after the kill, finds the task still down.
RESTART_SECONDS = 5.0


@pytest_asyncio.fixture(scope="module")
async def own(settings: CommonSettings) -> AsyncIterator[CommonSettings]:
    async with fresh_settings(settings) as fresh:
        yield fresh.model_copy(
            update={"task_restart_seconds": RESTART_SECONDS, "signals_interval_seconds": 0.2}
        )


@asynccontextmanager
async def scoring(settings: CommonSettings) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    group = f"{settings.topic_prefix}scoring-{uuid.uuid4().hex[:6]}"
    app = create_scoring(settings, ScoringSettings(consumer_group=group), periodic=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scoring") as client:
            yield client, app


def order(customer_id: str) -> Envelope:
    return paid_order(customer_id, datetime.now(UTC), "20")


async def publish(settings: CommonSettings, key: bytes, value: bytes) -> None:
    producer = await start_producer(settings)
    try:
        await publish_many(
            producer, [Record(Topics.from_settings(settings).events, key, value)], timeout=10
        )
    finally:
        await producer.stop()


async def sample(client: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    """The value ``/metrics`` serves for ``name`` with ``labels`` (None: not served)."""
    served = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(served):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def until(condition: object, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():  # type: ignore[operator]
            await asyncio.sleep(0.1)


async def test_a_killed_consumer_is_named_by_readyz_and_started_again(
    own: CommonSettings,
) -> None:
    async with scoring(own) as (client, app):
        assert (await client.get("/readyz")).status_code == 200
        supervisor = app.state.supervisor
        restarts = (
            await sample(client, "tend_task_restarts_total", service="scoring", task="consumer")
            or 0.0
        )
        consumer = supervisor.task("consumer")
        assert consumer is not None
        consumer.cancel()
        await asyncio.wait({consumer})

        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["task:consumer"] is False
        assert ready.json()["checks"]["database"] is True

        async def back() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await until(back, timeout=RESTART_SECONDS + 30)
        assert supervisor.task("consumer") is not consumer
        after = await sample(client, "tend_task_restarts_total", service="scoring", task="consumer")
        assert after == restarts + 1

        # Back for real: an event published now is scored.
        customer = f"c-{uuid.uuid4().hex[:8]}"
        event = order(customer)
        await publish(own, customer.encode(), event.to_json())
        engine = make_engine(own, pool_size=1)
        try:

            async def scored() -> bool:
                async with engine.connect() as conn:
                    found = await conn.scalar(
                        text("SELECT count(*) FROM scoring.inbox WHERE event_id = :id"),
                        {"id": event.event_id},
                    )
                return bool(found)

            await until(scored)
        finally:
            await engine.dispose()


async def test_a_poison_record_raises_the_dead_letter_metric(own: CommonSettings) -> None:
    async with scoring(own) as (client, app):
        group = app.state.settings.consumer_group
        topic = Topics.from_settings(own).events
        await publish(own, b"c-poison", b'{"event_type": "order.paid", "amount": "lots"')

        async def counted() -> bool:
            dead = await sample(
                client,
                "tend_dead_letters_total",
                group=group,
                source_topic=topic,
                reason="ValidationError",
            )
            return dead == 1.0

        await until(counted)


async def test_the_records_a_consumer_handles_are_counted_by_group_and_topic(
    own: CommonSettings,
) -> None:
    # Topics of the test's own: the module's hold the other tests' records.
    async with fresh_settings(own) as alone, scoring(alone) as (client, app):
        group = app.state.settings.consumer_group
        topic = Topics.from_settings(alone).events
        for n in range(3):
            event = order(f"c-counted-{n}")
            await publish(alone, event.customer_id.encode(), event.to_json())
        await publish(alone, b"c-poison-counted", b"not an event")

        async def counted() -> bool:
            handled = await sample(client, "tend_consumer_records_total", group=group, topic=topic)
            dead = await sample(client, "tend_dead_letters_total", group=group, source_topic=topic)
            return (handled, dead) == (3.0, 1.0)

        await until(counted)


async def test_a_stalled_relay_raises_the_outbox_age_metric(own: CommonSettings) -> None:
    engine = make_engine(own, pool_size=1)
    try:
        async with engine.connect() as holder:
            # Another instance leads the relay and publishes nothing: this one stands by.
            assert await holder.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": OUTBOX_LOCK})
            async with scoring(own) as (client, _):
                customer = f"c-{uuid.uuid4().hex[:8]}"
                await publish(own, customer.encode(), order(customer).to_json())

                async def stalled() -> bool:
                    rows = await sample(client, "tend_outbox_backlog_rows", table="scoring.outbox")
                    age = await sample(
                        client, "tend_outbox_oldest_age_seconds", table="scoring.outbox"
                    )
                    return bool(rows and rows >= 1 and age and age > 0)

                await until(stalled)
                await holder.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": OUTBOX_LOCK})

                async def drained() -> bool:
                    async with engine.connect() as conn:
                        left = await conn.scalar(text("SELECT count(*) FROM scoring.outbox"))
                    return bool(left == 0)

                await until(drained)
    finally:
        await engine.dispose()


async def test_requests_refused_for_their_key_are_counted(own: CommonSettings) -> None:
    async with scoring(own) as (client, _):
        before = {
            reason: await sample(
                client, "tend_api_key_misses_total", service="scoring", reason=reason
            )
            or 0.0
            for reason in ("missing", "unknown")
        }
        assert (await client.get("/v1/ops/health")).status_code == 401
        unknown = {"Authorization": "Bearer not-a-key"}
        assert (await client.get("/v1/ops/health", headers=unknown)).status_code == 401
        assert (await client.get("/v1/ops/health", headers=unknown)).status_code == 401
        for reason, more in (("missing", 1), ("unknown", 2)):
            counted = await sample(
                client, "tend_api_key_misses_total", service="scoring", reason=reason
            )
            assert counted == before[reason] + more


async def test_the_consumer_lag_is_served_per_partition(own: CommonSettings) -> None:
    async with scoring(own) as (client, app):
        group = app.state.settings.consumer_group
        topic = Topics.from_settings(own).events

        async def served() -> bool:
            lags = [
                await sample(
                    client, "tend_consumer_lag", group=group, topic=topic, partition=str(p)
                )
                for p in range(own.topic_partitions)
            ]
            return all(lag is not None for lag in lags)

        await until(served)
