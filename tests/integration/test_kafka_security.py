"""A secured broker: TLS, SASL users and ACLs, on a broker of this session's own.

The broker's only client listener is SASL_SSL, with a certificate signed by a CA made at test
time; `tend topics --acls` grants each service its ACLs. Events then flow from ingest to
scoring, each authenticated as its own user, while a wrong password, a client that does not
trust the CA, and a service writing a topic it was not granted are refused.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from services.ingest.app import create_app as create_ingest
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from shared.auth import Scope, create_key
from shared.db import make_engine
from shared.kafka import PublishError, Record, publish_many, start_producer
from shared.kafka_security import KafkaAccessRefused
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.broker import ROOT, SecureBroker
from tests.support.databases import fresh_settings
from tests.support.kafka_io import read_all
from tests.support.pipeline import until

pytestmark = pytest.mark.integration

SERVICES = ("tend-ingest", "tend-scoring", "tend-outreach")
# Long enough for a loaded machine; a refusal that took this long would be a hang.
REFUSED_WITHIN = 30


@pytest_asyncio.fixture(scope="session")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecureBroker]:
    broker = SecureBroker(tmp_path_factory.mktemp("secure-kafka"), SERVICES)
    # Started, not awaited: the session's database is made meanwhile (see ``secured``).
    broker.launch()
    try:
        yield broker
    finally:
        await broker.stop()


@dataclass(frozen=True)
class Secured:
    settings: CommonSettings  # a database of its own, the secure broker as its super user
    ingest_key: str


@pytest_asyncio.fixture(scope="session")
async def secured(secure: SecureBroker, settings: CommonSettings) -> AsyncIterator[Secured]:
    """A database of its own (no other scoring relays its outbox) on the secure broker, after
    `tend topics --acls` created the topics and granted the services' ACLs."""
    async with fresh_settings(settings, topics=False) as own:
        admin = secure.settings(own.model_copy(update={"topic_prefix": "sec."}))
        engine = make_engine(admin, pool_size=1)
        try:
            _, key = await create_key(engine, "secure-ingest", [Scope.EVENTS_WRITE])
        finally:
            await engine.dispose()
        await secure.ready()
        await _tend_topics_acls(secure, admin)
        yield Secured(admin, key)


async def _tend_topics_acls(secure: SecureBroker, admin: CommonSettings) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": secure.bootstrap,
        "TEND_TOPIC_PREFIX": admin.topic_prefix,
        "TEND_TOPIC_PARTITIONS": "2",
        "TEND_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TEND_KAFKA_SASL_USERNAME": "admin",
        "TEND_KAFKA_SASL_PASSWORD": secure.passwords["admin"],
        "TEND_KAFKA_SSL_CAFILE": str(secure.cafile),
        "TEND_SCORING_CONSUMER_GROUP": f"{admin.topic_prefix}scoring",
        "TEND_OUTREACH_CONSUMER_GROUP": f"{admin.topic_prefix}outreach",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "topics",
        "--acls",
        *(f"--principal={s.removeprefix('tend-')}=User:{s}" for s in SERVICES),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()
    assert f"acl: User:tend-ingest  topic:{Topics.from_settings(admin).events}  WRITE" in (
        out.decode()
    )


def _order(customer: str) -> dict[str, object]:
    return {
        "order_id": f"o-{uuid.uuid4().hex[:10]}",
        "customer_id": customer,
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "status": "paid",
        "amount": "42.00",
        "currency": "USD",
    }


async def test_events_flow_from_ingest_to_scoring_over_sasl_ssl_each_service_as_its_own_user(
    secure: SecureBroker, secured: Secured
) -> None:
    own = secured.settings
    ingest_app = create_ingest(secure.settings(own, "tend-ingest"))
    scoring_app = create_scoring(
        secure.settings(own, "tend-scoring"),
        ScoringSettings(consumer_group=f"{own.topic_prefix}scoring"),
        periodic=False,
    )
    customer = f"sec-{uuid.uuid4().hex[:8]}"
    async with (
        ingest_app.router.lifespan_context(ingest_app),
        scoring_app.router.lifespan_context(scoring_app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ingest_app), base_url="http://i") as c,
    ):
        resp = await c.post(
            "/v1/orders",
            json=_order(customer),
            headers={"Authorization": f"Bearer {secured.ingest_key}"},
        )
        assert resp.status_code == 202, resp.text
        event_id = resp.json()["event_id"]

        # Scoring consumed it and published its change; read back over SASL PLAIN.
        reader = secure.settings(own, "admin", "PLAIN")
        changes = Topics.from_settings(own).changes

        async def change_published() -> bool:
            records = await read_all(reader, changes)
            return any(r.key == customer.encode() and event_id.encode() in r.value for r in records)

        await until(change_published, 60, "scoring's change on the secure broker")


async def test_a_service_cannot_write_a_topic_its_acls_do_not_grant(
    secure: SecureBroker, secured: Secured
) -> None:
    """Scoring's user may write changes, never forge events (that is ingest's, and outreach's
    for what it learns)."""
    topics = Topics.from_settings(secured.settings)
    producer = await start_producer(secure.settings(secured.settings, "tend-scoring"))
    forged = f"forged-{uuid.uuid4().hex}".encode()
    try:
        with pytest.raises(PublishError):
            await publish_many(producer, [Record(topics.events, b"c-1", forged)], timeout=10)
        await publish_many(producer, [Record(topics.changes, b"c-1", b"{}")], timeout=10)
    finally:
        await producer.stop()
    events = await read_all(secured.settings, topics.events)
    assert all(r.value != forged for r in events)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_a_wrong_password_stops_a_service_at_start_naming_the_setting(
    secure: SecureBroker, secured: Secured, mechanism: str
) -> None:
    wrong = secure.settings(secured.settings, "tend-ingest", mechanism).model_copy(
        update={"kafka_sasl_password": SecretStr("not-the-password")}
    )
    app = create_ingest(wrong)
    async with asyncio.timeout(REFUSED_WITHIN):
        with pytest.raises(KafkaAccessRefused) as refused:
            async with app.router.lifespan_context(app):
                pass
    assert "refused user 'tend-ingest'" in str(refused.value)
    assert "TEND_KAFKA_SASL_PASSWORD" in str(refused.value)


async def test_a_client_that_does_not_trust_the_brokers_ca_is_refused_naming_the_setting(
    secure: SecureBroker, secured: Secured
) -> None:
    """Without TEND_KAFKA_SSL_CAFILE the client checks the broker against the system's CAs,
    which never signed it: no connection, and no waiting for one."""
    untrusting = secure.settings(secured.settings, "tend-ingest").model_copy(
        update={"kafka_ssl_cafile": None}
    )
    async with asyncio.timeout(REFUSED_WITHIN):
        with pytest.raises(KafkaAccessRefused) as refused:
            await start_producer(untrusting, wait_seconds=60)
    assert "does not trust" in str(refused.value)
    assert "TEND_KAFKA_SSL_CAFILE" in str(refused.value)


async def test_a_ca_file_that_is_not_there_is_named(
    secure: SecureBroker, secured: Secured, tmp_path: Path
) -> None:
    missing = tmp_path / "ca.pem"
    with pytest.raises(KafkaAccessRefused, match=f"TEND_KAFKA_SSL_CAFILE={missing}: no such"):
        await start_producer(
            secure.settings(secured.settings, "tend-ingest").model_copy(
                update={"kafka_ssl_cafile": str(missing)}
            ),
            wait_seconds=5,
        )
