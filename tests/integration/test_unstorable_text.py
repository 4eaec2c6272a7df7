"""Text the database cannot store (a NUL) is a 422 that names the part of the request that
held it — the body or the query — as every other validation error names its field."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from services.outreach.app import create_app
from services.outreach.schemas import EXAMPLE_RULE
from services.outreach.settings import OutreachSettings
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module")
async def outreach(settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        settings,
        OutreachSettings(consumer_group=f"{settings.topic_prefix}outreach-nul"),
        periodic=False,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
            yield client


async def test_a_nul_in_a_saved_rule_is_422_naming_the_body(
    outreach: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    rule = {**EXAMPLE_RULE, "id": f"nul-{uuid.uuid4().hex[:8]}", "name": "Win\u0000back"}
    r = await outreach.post(
        "/v1/rules", json=rule, headers={"Authorization": f"Bearer {keys['marketing']}"}
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["body"]


async def test_a_nul_in_a_query_is_422_naming_the_query(
    outreach: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    r = await outreach.get(
        "/v1/actions",
        params={"customer_id": "c\u00001"},
        headers={"Authorization": f"Bearer {keys['ops_read']}"},
    )
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["query"]
