from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from services.ingest.app import create_app as create_ingest
from shared.settings import CommonSettings


@pytest_asyncio.fixture(scope="session")
async def ingest(settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    """The ingest app, served in-process, talking to the real broker and database."""
    app = create_ingest(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client
