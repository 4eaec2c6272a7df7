"""A whole Tend of a test's own: a fresh database and topic prefix on the real PostgreSQL and
Kafka, migrated, with keys, and the services in-process. For tests whose assertions cover
every customer (a refit, a replay) and so cannot share the session's data."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.outreach.app import create_app as create_outreach
from services.outreach.settings import OutreachSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.auth import Scope, create_key
from shared.clock import Clock, SystemClock
from shared.db import make_engine
from shared.settings import CommonSettings
from tests.support.databases import fresh_settings


@dataclass
class Stack:
    settings: CommonSettings
    engine: AsyncEngine
    keys: dict[str, str]
    ingest: httpx.AsyncClient
    scoring: httpx.AsyncClient
    scoring_app: FastAPI
    outreach: httpx.AsyncClient | None = None
    outreach_app: FastAPI | None = None
    ingest_app: FastAPI | None = None

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@asynccontextmanager
async def isolated_stack(
    base: CommonSettings,
    clock: Clock | None = None,
    *,
    outreach: OutreachSettings | None = None,
    ingest_settings: IngestSettings | None = None,
) -> AsyncIterator[Stack]:
    """Ingest and scoring (and outreach, given its settings) on a database and topics of
    their own, sharing ``clock``; ``ingest_settings`` when the test needs its own."""
    async with fresh_settings(base) as settings:
        engine = make_engine(settings, pool_size=3)
        try:
            keys = {}
            for role, scopes in {
                "ingest": [Scope.EVENTS_WRITE],
                "ops": [Scope.OPS_READ, Scope.OPS_WRITE],
                "marketing": [Scope.MARKETING_WRITE, Scope.OPS_READ],
            }.items():
                _, keys[role] = await create_key(engine, f"iso-{role}", scopes)
            ingest_app = create_ingest(settings, ingest_settings)
            scoring_app = create_scoring(
                settings,
                ScoringSettings(consumer_group=f"{settings.topic_prefix}scoring"),
                clock or SystemClock(),
                periodic=False,
            )
            async with contextlib.AsyncExitStack() as running:
                ingest = await running.enter_async_context(_serve(ingest_app, "ingest"))
                scoring = await running.enter_async_context(_serve(scoring_app, "scoring"))
                stack = Stack(settings, engine, keys, ingest, scoring, scoring_app)
                stack.ingest_app = ingest_app
                # The export gathers from the in-process scoring and outreach.
                ingest_app.state.peers = {**ingest_app.state.peers, "scoring": scoring}
                if outreach is not None:
                    stack.outreach_app = create_outreach(
                        settings,
                        outreach.model_copy(
                            update={"consumer_group": f"{settings.topic_prefix}outreach"}
                        ),
                        clock or SystemClock(),
                        periodic=False,
                    )
                    stack.outreach = await running.enter_async_context(
                        _serve(stack.outreach_app, "outreach")
                    )
                    ingest_app.state.peers["outreach"] = stack.outreach
                yield stack
        finally:
            await engine.dispose()


@asynccontextmanager
async def _serve(app: FastAPI, name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}") as c,
    ):
        yield c
