"""Wiring of the ingest service: settings, engine, producer, routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from fastapi import FastAPI

from services.ingest.intake import Intake
from services.ingest.privacy import router as privacy_router
from services.ingest.routes import router
from services.ingest.settings import ingest_settings
from shared.auth import KeyStore
from shared.db import make_engine
from shared.http import create_app as create_service_app
from shared.kafka import start_producer
from shared.logging import configure_logging, get_logger
from shared.settings import CommonSettings
from shared.topics import Topics

log = get_logger(__name__)

DESCRIPTION = """
Ingest takes what your customers do — orders, complaints, visits, profile changes — and
publishes each as an event on Kafka, keyed by customer, answering **202 only once the broker
has durably acknowledged it**.

Authenticate with an API key holding the `events:write` scope, as `Authorization: Bearer <key>`
or `X-API-Key: <key>`. Every event has an id (yours, the `Idempotency-Key` header, or one
derived from the order/complaint/visit id and status), so a retry is never counted twice.
"""


async def _prune_forever(intake: Intake, retention: timedelta) -> None:
    while True:
        try:
            removed = await intake.prune(retention)
            if removed:
                log.info("idempotency_keys_pruned", removed=removed)
        except Exception as exc:  # the next hour will try again
            log.warning("idempotency_prune_failed", reason=type(exc).__name__)
        await asyncio.sleep(3600)


def create_app(common: CommonSettings | None = None) -> FastAPI:
    common = common or CommonSettings()
    settings = ingest_settings()
    configure_logging(common.log_level, common.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Losing a recent idempotency row to a database crash only makes a retry publish
        # again, which consumers drop by event id: no need to wait for a disk flush. Every
        # statement ingest runs is atomic alone, so autocommit spares BEGIN/COMMIT round
        # trips; a connection broken by a database restart fails one request with a 503.
        engine = make_engine(common, synchronous_commit=False, pre_ping=False)
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        producer = await start_producer(common)
        app.state.engine = engine
        app.state.producer = producer
        app.state.common = common
        app.state.peers = peers = {
            "scoring": httpx.AsyncClient(
                base_url=settings.scoring_url, timeout=settings.peer_timeout_seconds
            ),
            "outreach": httpx.AsyncClient(
                base_url=settings.outreach_url, timeout=settings.peer_timeout_seconds
            ),
        }
        app.state.keys = KeyStore(engine, common.api_key_cache_seconds)
        app.state.intake = Intake(
            engine,
            producer,
            Topics.from_settings(common).events,
            settings.publish_timeout_seconds,
        )
        pruner = asyncio.create_task(
            _prune_forever(app.state.intake, timedelta(days=settings.idempotency_retention_days))
        )
        log.info("ingest_started", port=settings.port)
        try:
            yield
        finally:
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            for peer in peers.values():
                await peer.aclose()
            await producer.stop()
            await engine.dispose()

    app = create_service_app(
        service="ingest",
        title="Tend ingest",
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body=common.max_body_bytes,
        common=common,
    )
    app.include_router(router)
    app.include_router(privacy_router)
    return app
