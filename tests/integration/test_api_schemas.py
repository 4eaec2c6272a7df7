"""schemathesis over scoring's and outreach's OpenAPI, against the real processes, broker and
database: the schema tells the truth. No request gets a 5xx, every answer matches its
documented status and schema, a request the schema allows is accepted (or answered a status
the route documents) and one that breaks it is refused — see tests/support/api_schema.py.
(Ingest has its own, in test_ingest_schema.py.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from shared.auth import Scope, create_key
from shared.db import create_database, drop_database, make_engine
from shared.migrate import upgrade_all
from shared.settings import CommonSettings
from shared.topics import ensure_topics
from tests.support import api_schema
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.integration


@dataclass
class Isolated:
    process: ServiceProcess
    keys: dict[str, str]


def _process(name: str, base: CommonSettings, logs: Path) -> Iterator[Isolated]:
    """The service as a process on a database and topics of its own: it must never touch the
    other tests' events, changes, outboxes or actions."""
    db = f"tend_schema_{uuid.uuid4().hex[:8]}"
    settings = asyncio.run(create_database(base, db)).model_copy(
        update={"topic_prefix": f"{base.topic_prefix}schema{uuid.uuid4().hex[:4]}."}
    )
    upgrade_all(settings)

    async def prepare() -> dict[str, str]:
        await ensure_topics(settings)
        engine = make_engine(settings, pool_size=1)
        try:
            _, ops = await create_key(engine, "schema-ops", [Scope.OPS_READ, Scope.OPS_WRITE])
            _, marketing = await create_key(
                engine, "schema-marketing", [Scope.MARKETING_WRITE, Scope.OPS_READ]
            )
        finally:
            await engine.dispose()
        return {"ops": ops, "marketing": marketing}

    keys = asyncio.run(prepare())
    proc = ServiceProcess(
        name,
        settings,
        logs,
        extra_env={
            f"TEND_{name.upper()}_CONSUMER_GROUP": f"{settings.topic_prefix}{name}",
            "TEND_LOG_LEVEL": "WARNING",
        },
    )
    try:
        proc.start()
        yield Isolated(proc, keys)
    finally:
        proc.stop()
        asyncio.run(drop_database(base, db))


@pytest.fixture(scope="module")
def scoring_process(
    settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Isolated]:
    yield from _process("scoring", settings, Path(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="module")
def outreach_process(
    settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Isolated]:
    yield from _process("outreach", settings, Path(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="module")
def scoring_schema(scoring_process: Isolated) -> Any:
    return api_schema.load(scoring_process.process.url)


@pytest.fixture(scope="module")
def outreach_schema(outreach_process: Isolated) -> Any:
    return api_schema.load(outreach_process.process.url)


scoring = schemathesis.pytest.from_fixture("scoring_schema")
outreach = schemathesis.pytest.from_fixture("outreach_schema")

SETTINGS = hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@scoring.parametrize()
@SETTINGS
def test_scoring_api_tells_the_truth(case: Any, scoring_process: Isolated) -> None:
    keys = scoring_process.keys
    api_schema.call_and_check(case, {"Authorization": f"Bearer {keys['ops']}"})


@outreach.parametrize()
@SETTINGS
def test_outreach_api_tells_the_truth(case: Any, outreach_process: Isolated) -> None:
    keys = outreach_process.keys
    # The marketing key holds marketing:write and ops:read; ops:write routes answer 403.
    api_schema.call_and_check(case, {"Authorization": f"Bearer {keys['marketing']}"})
