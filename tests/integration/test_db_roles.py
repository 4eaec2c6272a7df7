"""Least privilege in PostgreSQL: a service logged in with its own role writes its own schema
and nothing else — not another service's schema, not the API keys — and the scoring service
runs under its role end to end."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app as create_ingest
from services.outreach.app import create_app as create_outreach
from services.outreach.settings import OutreachSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.db import make_engine
from shared.db_roles import KEYS_ROLE, SERVICE_ROLES
from shared.events import Envelope, EventType, VisitChannel, VisitData
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.databases import fresh_settings

pytestmark = pytest.mark.integration

# A table of each schema, written the way a service writes (the privilege is checked whatever
# the rows).
WRITES = {
    "ingest": "DELETE FROM ingest.idempotency_keys WHERE false",
    "scoring": "DELETE FROM scoring.customers WHERE false",
    "outreach": "DELETE FROM outreach.cards WHERE false",
    "auth": "INSERT INTO auth.api_keys SELECT * FROM auth.api_keys WHERE false",
}


@pytest_asyncio.fixture(scope="module")
async def logins(settings: CommonSettings, engine: AsyncEngine) -> AsyncIterator[dict[str, str]]:
    """A login user in each service's role (and the keys role), as a deployment makes them;
    their database URLs by schema."""
    password = uuid.uuid4().hex
    made: dict[str, str] = {}
    users = []
    async with engine.begin() as conn:
        for schema, role in [*SERVICE_ROLES.items(), ("auth", KEYS_ROLE)]:
            user = f"test_{schema}_{uuid.uuid4().hex[:8]}"
            await conn.execute(
                text(f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {role}")
            )
            users.append(user)
            url = make_url(settings.database_url).set(username=user, password=password)
            made[schema] = url.render_as_string(hide_password=False)
    try:
        yield made
    finally:
        async with engine.begin() as conn:
            for user in users:
                await conn.execute(text(f"DROP ROLE {user}"))


async def _may_write(url: str, statement: str) -> bool:
    engine = make_engine(CommonSettings(database_url=url), pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
        return True
    except DBAPIError as exc:
        assert getattr(exc.orig, "sqlstate", None) == "42501", exc  # insufficient_privilege
        return False
    finally:
        await engine.dispose()


@pytest.mark.parametrize("service", sorted(SERVICE_ROLES))
async def test_a_service_role_writes_its_own_schema_only(
    logins: dict[str, str], service: str
) -> None:
    url = logins[service]
    for schema, statement in WRITES.items():
        assert await _may_write(url, statement) is (schema == service), (service, schema)
    # It reads the API keys, appends to the audit log, and may not rewrite the log's history.
    assert await _may_write(url, "SELECT count(*) FROM auth.api_keys")
    assert await _may_write(
        url,
        "INSERT INTO auth.audit_log (actor, service, action, subject) "
        f"VALUES ('test', '{service}', 'test.role', 'nothing')",
    )
    assert not await _may_write(url, "DELETE FROM auth.audit_log WHERE false")
    assert not await _may_write(url, f"DELETE FROM {service}.alembic_version WHERE false")
    # Outreach's erasure anonymises the suppressions it recorded; nobody else edits the log.
    anonymise = "UPDATE auth.audit_log SET subject = 'x', before = NULL, after = NULL WHERE false"
    assert await _may_write(url, anonymise) is (service == "outreach")
    assert not await _may_write(url, "UPDATE auth.audit_log SET action = 'x' WHERE false")


async def test_only_the_keys_role_writes_the_api_keys(logins: dict[str, str]) -> None:
    assert await _may_write(logins["auth"], WRITES["auth"])
    for schema in SERVICE_ROLES:
        assert not await _may_write(logins["auth"], WRITES[schema])


def _visit(customer: str) -> Envelope:
    now = datetime.now(UTC)
    return Envelope(
        event_id=str(uuid.uuid4()),
        event_type=EventType.VISIT_RECORDED,
        customer_id=customer,
        occurred_at=now,
        received_at=now,
        source="test",
        data=VisitData(visit_id=uuid.uuid4().hex, channel=VisitChannel.WEB),
    )


async def test_scoring_runs_under_its_own_role(
    settings: CommonSettings, logins: dict[str, str]
) -> None:
    async with fresh_settings(settings) as fresh:
        # The scoring login, in a database of this test's own (its relay leads there).
        url = make_url(logins["scoring"]).set(database=make_url(fresh.database_url).database)
        own = fresh.model_copy(update={"database_url": url.render_as_string(hide_password=False)})
        app = create_scoring(own, ScoringSettings(consumer_group="scoring-role"), periodic=False)
        event = _visit(f"role-{uuid.uuid4().hex[:8]}")
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://scoring") as client:
                assert (await client.get("/readyz")).status_code == 200
                producer = await start_producer(own)
                try:
                    record = Record(
                        Topics.from_settings(own).events,
                        event.customer_id.encode(),
                        event.to_json(),
                    )
                    await publish_many(producer, [record], timeout=10)
                finally:
                    await producer.stop()
                engine = make_engine(own, pool_size=1)
                try:
                    # Scored (inbox, card, outbox in one transaction) and relayed (outbox
                    # rows deleted once published), all as tend_scoring.
                    async with asyncio.timeout(60):
                        while not await _scored_and_relayed(engine, event.event_id):
                            await asyncio.sleep(0.2)
                finally:
                    await engine.dispose()
                assert (await client.get("/readyz")).status_code == 200


async def _scored_and_relayed(engine: AsyncEngine, event_id: str) -> bool:
    async with engine.connect() as conn:
        applied = await conn.scalar(
            text("SELECT count(*) FROM scoring.inbox WHERE event_id = :id"), {"id": event_id}
        )
        waiting = await conn.scalar(text("SELECT count(*) FROM scoring.outbox"))
    return bool(applied) and waiting == 0


async def test_ingest_and_outreach_run_under_their_own_roles(
    settings: CommonSettings, logins: dict[str, str], keys: dict[str, str]
) -> None:
    ingest = create_ingest(settings.model_copy(update={"database_url": logins["ingest"]}))
    async with ingest.router.lifespan_context(ingest):
        transport = httpx.ASGITransport(app=ingest)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            assert (await client.get("/readyz")).status_code == 200
            visit = {
                "visit_id": uuid.uuid4().hex,
                "customer_id": f"role-{uuid.uuid4().hex[:8]}",
                "occurred_at": datetime.now(UTC).isoformat(),
                "channel": "web",
            }
            headers = {"Authorization": f"Bearer {keys['ingest']}"}
            accepted = await client.post("/v1/visits", json=visit, headers=headers)
            assert accepted.status_code == 202, accepted.text

    outreach = create_outreach(
        settings.model_copy(update={"database_url": logins["outreach"]}),
        OutreachSettings(consumer_group=f"{settings.topic_prefix}outreach-role"),
        periodic=False,
    )
    async with outreach.router.lifespan_context(outreach):
        transport = httpx.ASGITransport(app=outreach)
        async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
            assert (await client.get("/readyz")).status_code == 200
            headers = {"Authorization": f"Bearer {keys['marketing']}"}
            suppressed = await client.post(
                "/v1/suppressions",
                json={"customer_id": f"role-{uuid.uuid4().hex[:8]}", "reason": "asked"},
                headers=headers,
            )
            assert suppressed.status_code == 201, suppressed.text
