"""Rebuild: replaying the events topic into fresh state reaches the same cards, and the
service then resumes after what the rebuild applied."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.app import create_app
from services.scoring.settings import ScoringSettings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.rebuild import rebuild
from shared.changes import Change, change_id_for
from shared.clock import SystemClock
from shared.db import make_engine
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.integration.conftest import wait_applied
from tests.support.databases import fresh_settings
from tests.support.events import random_history
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


async def test_a_rebuild_reaches_the_same_cards_and_hands_over_to_the_service(
    settings: CommonSettings,
) -> None:
    events = random_history(60, seed=3)
    async with fresh_settings(settings) as own:
        engine = make_engine(own, pool_size=2)
        scoring_settings = ScoringSettings(consumer_group=f"{own.topic_prefix}scoring")
        producer = await start_producer(own)
        topic = Topics.from_settings(own).events
        await publish_many(
            producer,
            [Record(topic, e.customer_id.encode(), e.to_json()) for e in events],
            timeout=30,
        )
        app = create_app(own, scoring_settings, periodic=False)
        async with app.router.lifespan_context(app):
            await wait_applied(engine, [e.event_id for e in events])

        async def states() -> dict[str, str]:
            async with engine.connect() as conn:
                return {
                    r.customer_id: r.state
                    for r in await conn.execute(
                        text("SELECT customer_id, state::text AS state FROM scoring.customers")
                    )
                }

        async def orders() -> list[tuple[object, ...]]:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT * FROM scoring.order_facts ORDER BY customer_id, order_id")
                )
                return [tuple(r) for r in rows]

        before, orders_before = await states(), await orders()
        assert orders_before  # the history has live orders
        assert await rebuild(own, scoring_settings) == len(events)
        assert await states() == before
        assert await orders() == orders_before
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM scoring.outbox")) == 0

        # The service picks up after the rebuild: only the new event is consumed.
        [late] = random_history(1, seed=99, prefix="late-")[:1]
        await publish_many(
            producer, [Record(topic, late.customer_id.encode(), late.to_json())], timeout=30
        )
        await producer.stop()
        app = create_app(own, scoring_settings, periodic=False)
        async with app.router.lifespan_context(app):
            await wait_applied(engine, [late.event_id])
            assert app.state.consumer.processed == 1
        await engine.dispose()


async def test_a_rebuild_keeps_the_changes_not_yet_relayed_and_the_service_then_sends_them(
    settings: CommonSettings,
) -> None:
    events = random_history(12, seed=5, prefix="unsent-")
    async with fresh_settings(settings) as own:
        engine = make_engine(own, pool_size=2)
        scoring_settings = ScoringSettings(consumer_group=f"{own.topic_prefix}scoring")
        topics = Topics.from_settings(own)
        producer = await start_producer(own)
        await publish_many(
            producer,
            [Record(topics.events, e.customer_id.encode(), e.to_json()) for e in events],
            timeout=30,
        )
        await producer.stop()
        # The service applied the events and wrote their changes, then stopped before its
        # relay published them.
        population = PopulationCache()
        await population.reload(engine)
        applier = EventApplier(engine, scoring_settings, SystemClock(), population)
        assert await applier.apply([(e, e.to_json()) for e in events]) == len(events)
        async with engine.connect() as conn:
            unsent = await conn.scalar(text("SELECT count(*) FROM scoring.outbox"))
        assert unsent == len(events)

        assert await rebuild(own, scoring_settings) == len(events)

        app = create_app(own, scoring_settings, periodic=False)
        async with app.router.lifespan_context(app):
            async with asyncio.timeout(15):
                while await _outbox_size(engine):
                    await asyncio.sleep(0.1)
        published = {
            Change.from_json(r.value).change_id
            for r in await read_all(own.kafka_bootstrap_servers, topics.changes)
        }
        assert {change_id_for("event", e.event_id) for e in events} <= published
        await engine.dispose()


async def _outbox_size(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM scoring.outbox")) or 0)
