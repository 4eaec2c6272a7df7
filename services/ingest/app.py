"""Wiring of the ingest service on the shared runtime: its engine, intake, peers and routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.deps import IngestState
from services.ingest.identity import IdentityMap
from services.ingest.intake import Intake
from services.ingest.merges import router as merges_router
from services.ingest.privacy import router as privacy_router
from services.ingest.routes import router
from services.ingest.settings import IngestSettings, ingest_settings
from shared.db import make_engine
from shared.logging import get_logger
from shared.runtime import Runtime, service_app
from shared.settings import CommonSettings

log = get_logger(__name__)

DESCRIPTION = """
Ingest takes what your customers do — orders, complaints, visits, profile changes — and
publishes each as an event on Kafka, keyed by customer, answering **202 only once the broker
has durably acknowledged it**.

Authenticate with an API key holding the `events:write` scope, as `Authorization: Bearer <key>`
or `X-API-Key: <key>`. Every event is published under its customer's survivor when that
customer was merged into another (`POST /v1/customers/{survivor}/merge`, `ops:write`). Every
event has an id (yours, the `Idempotency-Key` header, or one
derived from the order/complaint/visit id and status), so a retry is never counted twice.
"""


def create_app(
    common: CommonSettings | None = None, settings: IngestSettings | None = None
) -> FastAPI:
    common = common or CommonSettings()
    settings = settings or ingest_settings()
    state = IngestState()

    def engine(common: CommonSettings) -> AsyncEngine:
        # Losing a recent idempotency row to a database crash only makes a retry publish
        # again, which consumers drop by event id: no need to wait for a disk flush. Every
        # statement ingest runs is atomic alone, so autocommit spares BEGIN/COMMIT round
        # trips; a connection broken by a database restart fails one request with a 503.
        made = make_engine(common, synchronous_commit=False, ping_after_idle=None)
        return made.execution_options(isolation_level="AUTOCOMMIT")

    async def start(runtime: Runtime) -> Callable[[], Awaitable[None]]:
        state.peers = peers = {
            "scoring": httpx.AsyncClient(
                base_url=settings.scoring_url, timeout=settings.peer_timeout_seconds
            ),
            "outreach": httpx.AsyncClient(
                base_url=settings.outreach_url, timeout=settings.peer_timeout_seconds
            ),
        }
        state.identities = identities = IdentityMap(
            runtime.engine,
            runtime.producer,
            runtime.topics.events,
            settings.publish_timeout_seconds,
            settings.source,
            settings.auto_merge_kinds(),
        )
        state.intake = intake = Intake(
            runtime.engine,
            runtime.producer,
            runtime.topics.events,
            settings.publish_timeout_seconds,
            identities,
            runtime.state.common.event_id_retention_days,
        )

        async def prune() -> None:
            removed = await intake.prune()
            if removed:
                log.info("idempotency_keys_pruned", removed=removed)

        runtime.every(3600, "idempotency_prune", prune, at_start=True)

        async def release() -> None:
            for peer in peers.values():
                await peer.aclose()

        return release

    return service_app(
        service="ingest",
        state=state,
        title="Tend ingest",
        description=DESCRIPTION,
        start=start,
        routers=[router, privacy_router, merges_router],
        port=settings.port,
        common=common,
        engine=engine,
    )
