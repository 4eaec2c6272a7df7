"""A whole Tend of a test's own: a fresh database and topic prefix on the real PostgreSQL and
Kafka, migrated, with keys, and the services in-process. For tests whose assertions cover
every customer (a refit, a replay) and so cannot share the session's data."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app as create_ingest
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.auth import Scope, create_key
from shared.clock import Clock, SystemClock
from shared.db import create_database, drop_database, make_engine
from shared.migrate import upgrade_all
from shared.settings import CommonSettings
from shared.topics import ensure_topics


@asynccontextmanager
async def fresh_settings(
    base: CommonSettings, *, topics: bool = True
) -> AsyncIterator[CommonSettings]:
    """Settings with a new migrated database and (by default) a new topic prefix."""
    name = f"tend_iso_{uuid.uuid4().hex[:10]}"
    settings = await create_database(base, name)
    if topics:
        prefix = f"{base.topic_prefix}iso{uuid.uuid4().hex[:6]}."
        settings = settings.model_copy(update={"topic_prefix": prefix})
    try:
        # alembic drives its own event loop, so it runs in a thread
        await asyncio.to_thread(upgrade_all, settings)
        if topics:
            await ensure_topics(settings)
        yield settings
    finally:
        await drop_database(base, name)


@dataclass
class Stack:
    settings: CommonSettings
    engine: AsyncEngine
    keys: dict[str, str]
    ingest: httpx.AsyncClient
    scoring: httpx.AsyncClient
    scoring_app: FastAPI
    extra: dict[str, object] = field(default_factory=dict)


@asynccontextmanager
async def isolated_stack(base: CommonSettings, clock: Clock | None = None) -> AsyncIterator[Stack]:
    async with fresh_settings(base) as settings:
        engine = make_engine(settings, pool_size=3)
        try:
            keys = {}
            for role, scopes in {
                "ingest": [Scope.EVENTS_WRITE],
                "ops": [Scope.OPS_READ, Scope.OPS_WRITE],
            }.items():
                _, keys[role] = await create_key(engine, f"iso-{role}", scopes)
            ingest_app = create_ingest(settings)
            scoring_app = create_scoring(
                settings,
                ScoringSettings(consumer_group=f"{settings.topic_prefix}scoring"),
                clock or SystemClock(),
                periodic=False,
            )
            async with (
                ingest_app.router.lifespan_context(ingest_app),
                scoring_app.router.lifespan_context(scoring_app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=ingest_app), base_url="http://ingest"
                ) as ingest,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=scoring_app), base_url="http://scoring"
                ) as scoring,
            ):
                yield Stack(settings, engine, keys, ingest, scoring, scoring_app)
        finally:
            await engine.dispose()
