"""Wiring of the outreach service: the change consumer, the scheduler, delivery workers, the
actions relay, and the marketing and operations APIs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from services.outreach.api.actions import router as actions_router
from services.outreach.api.channels import router as channels_router
from services.outreach.api.policy import router as policy_router
from services.outreach.api.preview import router as preview_router
from services.outreach.api.privacy import router as privacy_router
from services.outreach.api.rules import router as rules_router
from services.outreach.api.suppressions import router as suppressions_router
from services.outreach.api.unsubscribe import router as unsubscribe_router
from services.outreach.settings import OutreachSettings, outreach_settings
from services.outreach.shell.consumer import ChangeApplier
from services.outreach.shell.current import Current
from services.outreach.shell.decide import recheck
from services.outreach.shell.delivery import DeliveryWorker
from services.outreach.shell.scheduler import tick
from shared.auth import KeyStore
from shared.clock import Clock, SystemClock
from shared.consumer import BatchConsumer, Message
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
Outreach fires greetings, follow-ups, recalls, win-backs, care and apologies when the rules
marketing writes match a customer's change, within one contact policy (consent, suppression
and one-click unsubscribe, a frequency cap, quiet hours in the customer's time zone, no
promotions during an open complaint), and delivers them by signed webhook or email — once.

Changing rules, policy, channels and suppressions needs `marketing:write`; reading needs
`ops:read`.
"""

OUTBOX_LOCK = 0x7E4D_0002


def create_app(
    common: CommonSettings | None = None,
    settings: OutreachSettings | None = None,
    clock: Clock | None = None,
    *,
    periodic: bool = True,
) -> FastAPI:
    """``periodic=False`` leaves the scheduler to ``POST /v1/ops/tick`` (tests drive time);
    delivery and the consumer always run."""
    common = common or CommonSettings()
    settings = settings or outreach_settings()
    clock = clock or SystemClock()
    configure_logging(common.log_level, common.log_json)
    topics = Topics.from_settings(common)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(common)
        producer = await start_producer(common)
        current = Current()
        await current.reload(engine)
        applier = ChangeApplier(engine, settings, clock, current)
        relay = OutboxRelay(
            engine=engine,
            producer=producer,
            table="outreach.outbox",
            topic=topics.actions,
            lock_key=OUTBOX_LOCK,
        )

        async def still_allowed(conn: Any, action: Any) -> str | None:
            return await recheck(conn, action, policy=current.policy, now=clock.now())

        delivery = DeliveryWorker(
            engine, settings, still_allowed, clock, require_https=common.environment == "production"
        )

        async def handle(records: Sequence[Message]) -> list[tuple[Message, Exception]]:
            rejected = await applier.handle(records)
            relay.nudge()
            delivery.nudge()
            return rejected

        consumer = BatchConsumer(
            settings=common,
            topics=[topics.changes],
            group_id=settings.consumer_group,
            handler=handle,
            dlq_topic=topics.dlq,
            dlq_producer=producer,
            max_records=settings.batch_max_records,
        )
        s = app.state
        s.engine, s.producer, s.clock, s.common = engine, producer, clock, common
        s.keys = KeyStore(engine, common.api_key_cache_seconds)
        s.outreach_settings = settings
        s.current, s.applier, s.relay, s.delivery, s.consumer = (
            current,
            applier,
            relay,
            delivery,
            consumer,
        )
        workers = [
            asyncio.create_task(consumer.run()),
            asyncio.create_task(relay.run()),
            asyncio.create_task(delivery.run()),
        ]
        timers = [asyncio.create_task(every(5, "rules_reload", lambda: current.reload(engine)))]
        if periodic:
            timers.append(
                asyncio.create_task(
                    every(
                        settings.scheduler_interval_seconds,
                        "scheduler",
                        lambda: tick(engine, clock, current, settings),
                    )
                )
            )
        settle_heap()
        log.info("outreach_started", port=settings.port)
        try:
            yield
        finally:
            consumer.stop()
            relay.stop()
            delivery.stop()
            for task in workers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 30)
            for task in timers:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await producer.stop()
            await engine.dispose()

    app = create_service_app(
        service="outreach",
        title="Tend outreach",
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body=common.max_body_bytes,
        common=common,
        form_paths=("/v1/unsubscribe",),
    )
    app.include_router(rules_router)
    app.include_router(preview_router)
    app.include_router(policy_router)
    app.include_router(suppressions_router)
    app.include_router(unsubscribe_router)
    app.include_router(actions_router)
    app.include_router(channels_router)
    app.include_router(privacy_router)
    return app
