"""The request budget per API key: 429 with ``Retry-After`` past it, one budget per key
whichever worker answers, refilled with time, and never an error when its database is gone.

Two ingest processes (real uvicorn workers on the session's database) run with a small
budget set through the environment, as an operator would set it: 3 requests at once, then one
every 2 seconds. A handful of requests takes milliseconds, so no test depends on how fast it
runs; the one that waits for a refill waits the `Retry-After` it was given.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import Scope, create_key
from shared.ratelimit import Limit, RateLimiter
from shared.settings import CommonSettings
from tests.support.broker import free_port
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.integration

PER_SECOND, BURST = 0.5, 3
INTERVAL = 1 / PER_SECOND  # seconds between refills: 2


@pytest.fixture(scope="module")
def workers(
    settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServiceProcess]]:
    logs = Path(tmp_path_factory.mktemp("logs"))
    env = {
        "TEND_RATE_LIMIT_PER_SECOND": str(PER_SECOND),
        "TEND_RATE_LIMIT_BURST": str(BURST),
        "TEND_LOG_LEVEL": "WARNING",
    }
    procs = [ServiceProcess("ingest", settings, logs, extra_env=env) for _ in range(2)]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


async def fresh_key(engine: AsyncEngine, limit: Limit | None = None) -> str:
    _, key = await create_key(
        engine, f"rl-{uuid.uuid4().hex[:8]}", [Scope.OPS_READ], rate_limit=limit
    )
    return key


async def call(worker: ServiceProcess, key: str) -> httpx.Response:
    """One authenticated request; any route that takes a key spends its budget alike."""
    async with httpx.AsyncClient(base_url=worker.url, timeout=10) as client:
        return await client.get(
            "/v1/audit", params={"limit": 1}, headers={"Authorization": f"Bearer {key}"}
        )


async def spend(worker: ServiceProcess, key: str, n: int) -> None:
    for i in range(n):
        r = await call(worker, key)
        assert r.status_code == 200, f"request {i + 1} of {n}: {r.status_code} {r.text}"


def assert_refused(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    retry = int(r.headers["retry-after"])
    assert 1 <= retry <= INTERVAL
    body = r.json()
    assert body["error"] == "rate_limited" and body["errors"] == []
    assert f"retry after {retry} s" in body["message"]
    return retry


async def test_a_key_over_its_budget_gets_429_and_other_keys_do_not(
    workers: list[ServiceProcess], engine: AsyncEngine
) -> None:
    busy, quiet = await fresh_key(engine), await fresh_key(engine)
    await spend(workers[0], busy, BURST)
    assert_refused(await call(workers[0], busy))
    assert_refused(await call(workers[0], busy))  # a refusal spends nothing, nor refills
    await spend(workers[0], quiet, BURST)


async def test_workers_share_one_budget_per_key(
    workers: list[ServiceProcess], engine: AsyncEngine
) -> None:
    key = await fresh_key(engine)
    for worker in (workers[0], workers[1], workers[0]):
        await spend(worker, key, 1)
    assert_refused(await call(workers[1], key))
    assert_refused(await call(workers[0], key))


async def test_the_budget_refills(workers: list[ServiceProcess], engine: AsyncEngine) -> None:
    key = await fresh_key(engine)
    await spend(workers[0], key, BURST)
    retry = assert_refused(await call(workers[0], key))
    await asyncio.sleep(retry)
    # One interval has passed since the burst: one request's worth is back, not more.
    await spend(workers[1], key, 1)
    assert_refused(await call(workers[1], key))


async def test_a_key_can_carry_its_own_limit(
    workers: list[ServiceProcess], engine: AsyncEngine
) -> None:
    unlimited = await fresh_key(engine, Limit(0, 1))
    await spend(workers[0], unlimited, BURST * 3)
    strict = await fresh_key(engine, Limit(PER_SECOND, 1))
    await spend(workers[0], strict, 1)
    refused = await call(workers[1], strict)
    assert_refused(refused)
    assert "bursts of 1" in refused.json()["message"]


async def test_429_is_documented(workers: list[ServiceProcess]) -> None:
    async with httpx.AsyncClient(base_url=workers[0].url) as client:
        schema = (await client.get("/openapi.json")).json()
    responses = schema["paths"]["/v1/orders"]["post"]["responses"]
    assert "Retry-After" in responses["429"]["headers"]


async def test_an_unreachable_database_admits_rather_than_fails(
    scoring: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str]
) -> None:
    # Nothing listens on this port: every attempt is refused at once.
    dead = f"postgresql+asyncpg://tend:tend@127.0.0.1:{free_port()}/tend"
    limiter = await RateLimiter.connect(dead, Limit(PER_SECOND, 1))
    try:
        for _ in range(3):
            verdict = await limiter.admit("any-key")
            assert verdict.allowed
        client, app = scoring
        serving = app.state.rate_limiter
        app.state.rate_limiter = limiter
        try:
            for _ in range(3):
                r = await client.get(
                    "/v1/audit", params={"limit": 1}, headers={"X-API-Key": keys["ops_read"]}
                )
                assert r.status_code == 200, r.text
        finally:
            app.state.rate_limiter = serving
    finally:
        await limiter.close()
