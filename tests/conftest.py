"""Session fixtures: a fresh database and topic prefix per test run, on the real PostgreSQL
and Kafka that `make test` brings up (or that KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL name)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import Scope, create_key
from shared.db import create_database, drop_database, make_engine
from shared.migrate import upgrade_all
from shared.settings import CommonSettings
from shared.topics import delete_topics, ensure_topics


@pytest.fixture(scope="session")
def settings() -> Iterator[CommonSettings]:
    """Settings pointing at a database and topics that belong to this test run alone."""
    base = CommonSettings()
    run = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    db_name = f"tend_test_{run}"
    created = asyncio.run(create_database(base, db_name))
    test_settings = created.model_copy(
        update={
            "topic_prefix": f"test.{run}.",
            # Enough for two consumers to share, few enough for a broker that outlives runs.
            "topic_partitions": 4,
            "environment": "test",
            "api_key_cache_seconds": 0.0,
        }
    )
    upgrade_all(test_settings)
    asyncio.run(ensure_topics(test_settings))
    yield test_settings
    asyncio.run(drop_database(base, db_name))
    asyncio.run(delete_topics(test_settings))


@pytest_asyncio.fixture(scope="session")
async def engine(settings: CommonSettings) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(settings, pool_size=5)
    yield eng
    await eng.dispose()


@pytest_asyncio.fixture(scope="session")
async def keys(engine: AsyncEngine) -> dict[str, str]:
    """One key per role a test may play."""
    roles = {
        "ingest": [Scope.EVENTS_WRITE],
        "ops": [Scope.OPS_READ, Scope.OPS_WRITE],
        "ops_read": [Scope.OPS_READ],
        "marketing": [Scope.MARKETING_WRITE, Scope.OPS_READ],
    }
    out = {}
    for role, scopes in roles.items():
        _, out[role] = await create_key(engine, f"test-{role}", scopes)
    return out
