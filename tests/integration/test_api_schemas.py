"""schemathesis over scoring's and outreach's OpenAPI, against the real processes, broker and
database: no request the schema allows (or breaks) gets a 5xx, and every answer matches its
documented schema. (Ingest has its own, in test_ingest_schema.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from shared.settings import CommonSettings
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.integration


def _process(name: str, settings: CommonSettings, logs: Path) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(
        name,
        settings,
        logs,
        extra_env={
            f"TEND_{name.upper()}_CONSUMER_GROUP": f"{settings.topic_prefix}{name}-schema",
            "TEND_LOG_LEVEL": "WARNING",
        },
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def scoring_process(
    settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    yield from _process("scoring", settings, Path(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="session")
def outreach_process(
    settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    yield from _process("outreach", settings, Path(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="session")
def scoring_schema(scoring_process: ServiceProcess) -> Any:
    return schemathesis.openapi.from_url(f"{scoring_process.url}/openapi.json")


@pytest.fixture(scope="session")
def outreach_schema(outreach_process: ServiceProcess) -> Any:
    return schemathesis.openapi.from_url(f"{outreach_process.url}/openapi.json")


scoring = schemathesis.pytest.from_fixture("scoring_schema")
outreach = schemathesis.pytest.from_fixture("outreach_schema")

SETTINGS = hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# Not checked: that every schema-valid request is accepted — business rules JSON Schema
# cannot state (an unknown customer is a 404, a rule id already taken a 409, a template
# that fails to render a 422) answer 4xx naming the field, asserted in the services' tests.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@scoring.parametrize()
@SETTINGS
def test_scoring_api_has_no_5xx_and_matches_its_schema(case: Any, keys: dict[str, str]) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {keys['ops']}"}, excluded_checks=EXCLUDED
    )


@outreach.parametrize()
@SETTINGS
def test_outreach_api_has_no_5xx_and_matches_its_schema(case: Any, keys: dict[str, str]) -> None:
    # The marketing key holds marketing:write and ops:read; ops:write routes answer 403.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {keys['marketing']}"}, excluded_checks=EXCLUDED
    )
