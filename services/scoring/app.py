"""Wiring of the scoring service: the event consumer, the outbox relay, the sweep and refit
loops, and the read API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.scoring.api.customers import router
from services.scoring.api.listing import router as listing_router
from services.scoring.api.privacy import router as privacy_router
from services.scoring.api.stats import router as stats_router
from services.scoring.settings import ScoringSettings, scoring_settings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.refit import refit
from services.scoring.shell.sweep import sweep_all
from shared.auth import KeyStore
from shared.clock import Clock, SystemClock
from shared.consumer import BatchConsumer
from shared.db import make_engine
from shared.heap import settle_heap
from shared.http import create_app as create_service_app
from shared.kafka import start_producer
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.periodic import every
from shared.settings import CommonSettings
from shared.topics import Topics

log = get_logger(__name__)

DESCRIPTION = """
Scoring keeps a score card for every customer — rolling value, RFM, predicted CLV and
P(alive), an 80/20 value tier, a strategy and a lifecycle stage — from the events on
`crm.customer-events.v1`, and publishes every change to `crm.customer-changes.v1`.

Reading needs an API key with `ops:read`; refits and sweeps need `ops:write`.
"""

OUTBOX_LOCK = 0x7E4D_0001


def create_app(
    common: CommonSettings | None = None,
    settings: ScoringSettings | None = None,
    clock: Clock | None = None,
    *,
    periodic: bool = True,
) -> FastAPI:
    """``periodic=False`` leaves sweeps and refits to the ops endpoints (tests drive time)."""
    common = common or CommonSettings()
    settings = settings or scoring_settings()
    clock = clock or SystemClock()
    configure_logging(common.log_level, common.log_json)
    topics = Topics.from_settings(common)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(common)
        producer = await start_producer(common)
        population = PopulationCache()
        await population.reload(engine)
        applier = EventApplier(engine, settings, clock, population)
        relay = OutboxRelay(
            engine=engine,
            producer=producer,
            table="scoring.outbox",
            topic=topics.changes,
            lock_key=OUTBOX_LOCK,
            batch=settings.outbox_batch,
            idle_seconds=settings.outbox_idle_seconds,
        )

        async def handle(records):  # type: ignore[no-untyped-def]
            rejected = await applier.handle(records)
            relay.nudge()
            return rejected

        consumer = BatchConsumer(
            settings=common,
            topics=[topics.events],
            group_id=settings.consumer_group,
            handler=handle,
            dlq_topic=topics.dlq,
            dlq_producer=producer,
            max_records=settings.batch_max_records,
        )
        app.state.engine = engine
        app.state.producer = producer
        app.state.keys = KeyStore(engine, common.api_key_cache_seconds)
        app.state.clock = clock
        app.state.settings = settings
        app.state.population = population
        app.state.relay = relay
        app.state.consumer = consumer
        tasks = [
            asyncio.create_task(consumer.run()),
            asyncio.create_task(relay.run()),
            asyncio.create_task(every(10, "population_reload", lambda: population.reload(engine))),
        ]
        if periodic:
            tasks.append(
                asyncio.create_task(
                    every(
                        settings.sweep_interval_seconds,
                        "sweep",
                        lambda: sweep_all(engine, clock, population, settings),
                    )
                )
            )
            tasks.append(
                asyncio.create_task(
                    every(
                        settings.refit_interval_seconds,
                        "refit",
                        lambda: refit(engine, clock, population, settings),
                    )
                )
            )
        settle_heap()
        log.info("scoring_started", port=settings.port)
        try:
            yield
        finally:
            consumer.stop()
            relay.stop()
            for task in tasks[:2]:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 30)
            for task in tasks[2:]:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await producer.stop()
            await engine.dispose()

    app = create_service_app(
        service="scoring",
        title="Tend scoring",
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body=common.max_body_bytes,
        common=common,
    )
    app.include_router(router)
    app.include_router(listing_router)
    app.include_router(stats_router)
    app.include_router(privacy_router)
    return app
