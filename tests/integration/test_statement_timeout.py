"""A statement the database cancels for running too long is a 503 with Retry-After, like a
database that cannot be reached: a busy moment the client may retry, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.http import create_app, no_lifespan
from shared.service_state import ServiceState


@pytest_asyncio.fixture
async def api(engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        service="timeout-test",
        title="timeout",
        description="a route whose statement runs past the time limit",
        lifespan=no_lifespan,
        readiness=lambda _: {},
        max_body=1024 * 1024,
    )
    app.state = ServiceState()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        async with engine.begin() as conn:
            await conn.execute(text("SET LOCAL statement_timeout = 50"))
            await conn.execute(text("SELECT pg_sleep(2)"))
        return {"status": "done"}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://timeout") as client:
        yield client


async def test_a_statement_past_its_time_limit_answers_503_with_retry_after(
    api: httpx.AsyncClient,
) -> None:
    resp = await api.get("/slow")
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["Retry-After"]) > 0
    body = resp.json()
    assert body["error"] == "unavailable"
    assert "time limit" in body["message"]
    assert "Traceback" not in resp.text
