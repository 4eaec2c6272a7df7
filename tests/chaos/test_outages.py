"""The infrastructure goes away under a steady load and comes back: Kafka killed and
restarted (and, reduced to its smallest reproduction, stopped gracefully), PostgreSQL
stopped (cleanly, then as a crash) and restarted, the services' database connections
terminated. Each scenario has a broker or a database server of its own
where it stops one; the servers the rest of the suite shares stay up."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from shared.auth import Scope, create_key
from shared.db import make_engine
from shared.kafka import PublishError, Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics, ensure_topics
from tests.chaos.load import Load
from tests.chaos.pipeline import Pipeline
from tests.chaos.scenario import Chaos, run_scenario
from tests.support.broker import LocalBroker
from tests.support.databases import fresh_settings
from tests.support.postgres import LocalPostgres
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.chaos


@pytest_asyncio.fixture(scope="module")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBroker]:
    """One broker for this module's Kafka tests (a JVM start costs seconds); each test
    leaves it running."""
    b = LocalBroker(tmp_path_factory.mktemp("kafka"))
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


@pytest_asyncio.fixture
async def postgres(chaos: Chaos) -> AsyncIterator[LocalPostgres]:
    pg = LocalPostgres(chaos.directory / "postgres")
    await pg.start()
    try:
        yield pg
    finally:
        await pg.stop("immediate")


async def test_kafka_crashes_and_stops_and_comes_back(chaos: Chaos, broker: LocalBroker) -> None:
    async def outages(p: Pipeline, load: Load, rng: random.Random) -> None:
        # A crash, then a clean shutdown: the second leaves idempotent producers with batches
        # in flight out of sequence, which they must recover from.
        for how in ("killed (kill -9)", "stopped"):
            await load.until_accepted(len(load.accepted) + rng.randint(10, 40))
            await (broker.kill() if how.startswith("killed") else broker.stop())
            p.fault(f"Kafka {how}")
            try:
                # Long enough for every client to notice: ingest refuses, consumers lose their
                # coordinator, relays cannot publish.
                await asyncio.sleep(rng.uniform(3, 5))
            finally:
                await broker.start()
            p.note("Kafka back")

    own = chaos.base.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap})
    await run_scenario("Kafka crash, stop and restart", replace(chaos, base=own), outages)


async def test_kafka_stops_gracefully_and_publishing_resumes(broker: LocalBroker) -> None:
    """The smallest reproduction of what the pipeline met when Kafka was stopped cleanly: a
    publisher that keeps publishing (an outbox relay, ingest under load) through the
    shutdown. Kill -9 of the broker does not trigger it; a graceful stop does, every time."""
    settings = CommonSettings(
        kafka_bootstrap_servers=broker.bootstrap, topic_prefix="graceful.", topic_partitions=4
    )
    await ensure_topics(settings)
    topic = Topics.from_settings(settings).changes
    producer = await start_producer(settings)
    published_at = 0.0
    stopping = asyncio.Event()

    # Keys c0..c11 fall on every one of the 4 partitions: a publish succeeds only when each
    # partition takes records again.
    records = [Record(topic, f"c{k}".encode(), b"{}") for k in range(12)]

    async def publish_steadily() -> None:
        nonlocal published_at
        while not stopping.is_set():
            try:
                await publish_many(producer, records, timeout=10)
                published_at = time.monotonic()
            except PublishError:
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.02)

    publisher = asyncio.create_task(publish_steadily())
    try:
        await asyncio.sleep(2)
        await broker.stop()
        await asyncio.sleep(1)
        await broker.start()
        back = time.monotonic()
        deadline = back + 15
        while published_at <= back and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert published_at > back, "no publish succeeded for 15 s after Kafka came back"
    finally:
        stopping.set()
        await publisher
        await producer.stop()


async def test_postgres_stops_and_comes_back(chaos: Chaos, postgres: LocalPostgres) -> None:
    async def outages(p: Pipeline, load: Load, rng: random.Random) -> None:
        for mode in ("fast", "immediate"):
            await load.until_accepted(len(load.accepted) + rng.randint(10, 40))
            await postgres.stop(mode)
            p.fault(f"PostgreSQL stopped ({mode})")
            try:
                await asyncio.sleep(rng.uniform(2, 4))
            finally:
                await postgres.start()
            p.note("PostgreSQL back")

    own = chaos.base.model_copy(update={"database_url": postgres.url})
    await run_scenario("PostgreSQL stop and restart", replace(chaos, base=own), outages)


async def test_postgres_down_means_503_never_500(
    settings: CommonSettings, postgres: LocalPostgres, tmp_path: Path
) -> None:
    """What the PostgreSQL scenario's client saw as retried 500s, reduced: every answer
    while the database is down must say "unavailable, retry", as the broker's outage does."""
    own = settings.model_copy(update={"database_url": postgres.url})
    async with fresh_settings(own, topics=False) as isolated:
        engine = make_engine(isolated, pool_size=1)
        _, key = await create_key(engine, "outage", [Scope.EVENTS_WRITE])
        await engine.dispose()
        ingest = ServiceProcess("ingest", isolated, tmp_path, {"TEND_LOG_LEVEL": "ERROR"})
        await asyncio.to_thread(ingest.start)
        answers: list[int | str] = []
        try:
            await postgres.stop("fast")
            async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
                for i in range(5):
                    visit = {
                        "event_id": f"outage-{i}",
                        "customer_id": "outage",
                        "occurred_at": "2026-01-01T00:00:00Z",
                        "visit_id": f"v{i}",
                        "channel": "web",
                    }
                    try:
                        resp = await client.post(
                            "/v1/visits", json=visit, headers={"Authorization": f"Bearer {key}"}
                        )
                        answers.append(resp.status_code)
                    except httpx.TransportError as exc:
                        answers.append(f"no answer ({type(exc).__name__})")
        finally:
            ingest.stop()
            await postgres.start()
    assert answers == [503] * 5, answers


async def test_database_connections_terminated(chaos: Chaos) -> None:
    async def terminate(p: Pipeline, load: Load, rng: random.Random) -> None:
        for _ in range(5):
            await load.until_accepted(len(load.accepted) + rng.randint(5, 25))
            # Every session of the services on the scenario's database (ours is spared:
            # it does the terminating; other roles' sessions are not ours to end).
            async with p.engine.connect() as conn:
                ended = await conn.scalar(
                    text(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                        "FROM pg_stat_activity WHERE datname = current_database() "
                        "AND usename = current_user AND pid <> pg_backend_pid()"
                    )
                )
            p.fault("connection terminated", int(ended or 0))

    await run_scenario("terminate database connections", chaos, terminate)
