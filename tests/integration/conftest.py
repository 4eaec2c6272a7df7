from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime

import httpx
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app as create_ingest
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.clock import FixedClock
from shared.settings import CommonSettings


@pytest_asyncio.fixture(scope="session")
async def ingest(settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The ingest app, served in-process, talking to the real broker and database."""
    app = create_ingest(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


@pytest_asyncio.fixture(scope="session")
async def scoring_clock() -> FixedClock:
    """Scoring's clock in the session app: real now at start; tests that move it put it
    back."""
    return FixedClock(datetime.now(UTC))


@pytest_asyncio.fixture(scope="session")
async def scoring(
    settings: CommonSettings, scoring_clock: FixedClock
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The scoring app in-process: its consumer reads this run's events topic for real."""
    app = create_scoring(
        settings,
        ScoringSettings(consumer_group=f"{settings.topic_prefix}scoring"),
        scoring_clock,
        periodic=False,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scoring") as client:
            yield client, app


async def wait_applied(engine: AsyncEngine, event_ids: Iterable[str], timeout: float = 60) -> None:
    """Until scoring's inbox holds every one of these events."""
    ids = list(set(event_ids))
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as conn:
            done = await conn.scalar(
                text(
                    "SELECT count(*) FROM scoring.inbox WHERE event_id = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": ids},
            )
        if done == len(ids):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"scoring applied {done} of {len(ids)} events")
        await asyncio.sleep(0.2)
