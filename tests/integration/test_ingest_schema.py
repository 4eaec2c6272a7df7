"""schemathesis over the ingest OpenAPI, against the real process, broker and database: the
schema tells the truth (tests/support/api_schema.py): no 5xx, every answer documented, what
the schema allows is accepted and what breaks it refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from shared.settings import CommonSettings
from tests.support import api_schema
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def ingest_process(
    settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    proc = ServiceProcess("ingest", settings, Path(tmp_path_factory.mktemp("logs")))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def ingest_schema(ingest_process: ServiceProcess) -> schemathesis.BaseSchema:
    return api_schema.load(ingest_process.url)


schema = schemathesis.pytest.from_fixture("ingest_schema")


@schema.parametrize()
@hypothesis_settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_ingest_api_tells_the_truth(
    case: Any,  # schemathesis.Case
    keys: dict[str, str],
) -> None:
    api_schema.call_and_check(case, {"Authorization": f"Bearer {keys['ingest']}"})
