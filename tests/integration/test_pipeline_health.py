"""The pipeline's health and the dead letters over HTTP, on a database and topics of this
module's own (real Kafka and PostgreSQL): consumer lag per partition from the group's
committed offsets, the outbox and delivery backlogs, and the dead-letter topic listed and
counted without its payloads.

The routes run in light apps (no consumers, relays or delivery), so every figure is the one
this test set up.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.api.health import router as outreach_health
from services.outreach.settings import OutreachSettings
from services.outreach.shell.service import OutreachState
from services.scoring.api.health import router as scoring_health
from services.scoring.settings import ScoringSettings
from services.scoring.shell.service import ScoringState
from shared.auth import KeyStore, Scope, create_key
from shared.clock import FixedClock
from shared.db import make_engine
from shared.dead_letters_api import router as dead_letters
from shared.dlq import MARKER, dead_letter_record
from shared.events import Envelope
from shared.http import create_app, no_lifespan
from shared.service_state import ServiceState
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.databases import fresh_settings

pytestmark = pytest.mark.integration

NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)
SECRET = "card-number-4111111111111111"  # in a poison payload: never in an answer


@dataclass
class Pipeline:
    settings: CommonSettings
    topics: Topics
    engine: AsyncEngine
    scoring: httpx.AsyncClient
    outreach: httpx.AsyncClient
    reader: dict[str, str]


def _app(state: ServiceState, settings: CommonSettings, engine: AsyncEngine) -> FastAPI:
    app = create_app(
        service="health-test",
        title="health",
        description="health under test",
        lifespan=no_lifespan,
        readiness=lambda _: {},
        max_body=settings.max_body_bytes,
    )
    app.state = state
    state.engine, state.common, state.topics = engine, settings, Topics.from_settings(settings)
    state.clock = FixedClock(NOW)
    state.keys = KeyStore(engine, 0)
    return app


@pytest_asyncio.fixture(scope="module")
async def pipeline(settings: CommonSettings) -> AsyncIterator[Pipeline]:
    async with fresh_settings(settings) as own:
        engine = make_engine(own, pool_size=2)
        try:
            _, key = await create_key(engine, "health-reader", [Scope.OPS_READ])
            scoring = ScoringState()
            scoring.settings = ScoringSettings(consumer_group=f"{own.topic_prefix}scoring")
            outreach = OutreachState()
            outreach.settings = OutreachSettings(consumer_group=f"{own.topic_prefix}outreach")
            scoring_app = _app(scoring, own, engine)
            scoring_app.include_router(scoring_health)
            scoring_app.include_router(dead_letters)
            outreach_app = _app(outreach, own, engine)
            outreach_app.include_router(outreach_health)
            async with (
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=scoring_app), base_url="http://scoring"
                ) as s,
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=outreach_app), base_url="http://outreach"
                ) as o,
            ):
                yield Pipeline(own, Topics.from_settings(own), engine, s, o, {"X-API-Key": key})
        finally:
            await engine.dispose()


async def _send(p: Pipeline, topic: str, partition: int, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=p.settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k", partition=partition)
    finally:
        await producer.stop()


async def _commit(p: Pipeline, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=p.settings.kafka_bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_health_says_how_far_each_consumer_is_behind_and_what_waits(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    # Scoring's group: 3 of partition 0's 5 events done, none of partition 1's 2.
    await _send(p, p.topics.events, 0, [b"e"] * 5)
    await _send(p, p.topics.events, 1, [b"e"] * 2)
    await _commit(p, f"{p.settings.topic_prefix}scoring", {TopicPartition(p.topics.events, 0): 3})
    # Outreach's group: caught up on the 4 changes of partition 2.
    await _send(p, p.topics.changes, 2, [b"c"] * 4)
    await _commit(p, f"{p.settings.topic_prefix}outreach", {TopicPartition(p.topics.changes, 2): 4})
    async with p.engine.begin() as conn:
        for minutes in (5, 2, 1):
            await conn.execute(
                text(
                    "INSERT INTO scoring.outbox (customer_id, payload, created_at) "
                    "VALUES ('c', 'x', :at)"
                ),
                {"at": NOW - timedelta(minutes=minutes)},
            )
        for status, due in (
            ("pending", NOW - timedelta(minutes=10)),  # due, the oldest
            ("pending", NOW - timedelta(minutes=1)),
            ("pending", NOW + timedelta(minutes=1)),  # a retry not yet due
            ("sent", None),
        ):
            await conn.execute(
                text(
                    "INSERT INTO outreach.actions (id, rule_id, customer_id, occurrence, kind, "
                    "channel, priority, status, decided_at, next_attempt_at) VALUES (:id, 'r', "
                    "'c', :id, 'recall', 'webhook', 50, :status, :decided, :due)"
                ),
                {
                    "id": str(uuid.uuid4()),
                    "status": status,
                    "decided": NOW - timedelta(hours=1),
                    "due": due,
                },
            )

    resp = await p.scoring.get("/v1/ops/health", headers=p.reader)
    assert resp.status_code == 200, resp.text
    health = resp.json()
    consumer = health["consumer"]
    assert (consumer["topic"], consumer["total"], consumer["error"]) == (p.topics.events, 4, None)
    by_partition = {x["partition"]: x for x in consumer["partitions"]}
    assert len(by_partition) == p.settings.topic_partitions
    assert by_partition[0] == {"partition": 0, "committed": 3, "end": 5, "lag": 2}
    assert by_partition[1] == {"partition": 1, "committed": None, "end": 2, "lag": 2}
    assert health["outbox"] == {
        "rows": 3,
        "capped": False,
        "oldest_at": "2030-06-14T11:55:00Z",
        "oldest_age_seconds": 300.0,
    }

    resp = await p.outreach.get("/v1/ops/health", headers=p.reader)
    assert resp.status_code == 200, resp.text
    health = resp.json()
    assert (health["consumer"]["topic"], health["consumer"]["total"]) == (p.topics.changes, 0)
    assert {x["partition"]: x["committed"] for x in health["consumer"]["partitions"]}[2] == 4
    assert health["outbox"]["rows"] == 0 and health["outbox"]["oldest_at"] is None
    assert health["delivery"]["rows"] == 2
    assert health["delivery"]["oldest_age_seconds"] == 600.0
    assert health["dead_letters"] == {
        "pending": 0,
        "pending_here": 0,
        "complete": True,
        "error": None,
    }

    assert (await p.outreach.get("/v1/ops/health")).status_code == 401


def _poison(
    topic: str, offset: int, key: bytes | None, value: bytes
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=1,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=0,
        serialized_value_size=len(value),
        headers=[],
    )


def _validation_error() -> ValidationError:
    try:
        Envelope.model_validate({"event_id": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("an envelope without fields validated")


async def test_dead_letters_are_listed_newest_first_and_counted_by_reason(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    group = f"{p.settings.topic_prefix}outreach"
    event = orjson.dumps({"event_id": "evt-poison-1", "card": SECRET})
    letters = [
        # (source record, error, reason)
        (_poison(p.topics.events, 10, b"cust-1", event), _validation_error(), None),
        (
            _poison(p.topics.changes, 11, b"cust-2", b"{not json " + SECRET.encode()),
            ValueError("bad"),
            None,
        ),
        (_poison(p.topics.changes, 12, b"cust-3", b"{}"), TimeoutError(), "statement_timeout"),
        (_poison(p.topics.changes, 13, b"cust-4", b"{}"), ValueError("erased later"), None),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=p.settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        sent = []
        for record, exc, reason in letters:
            dead = dead_letter_record(
                record, dlq_topic=p.topics.dlq, group=group, exc=exc, reason=reason
            )
            sent.append(
                await producer.send_and_wait(
                    p.topics.dlq, dead.value, key=dead.key, headers=list(dead.headers), partition=0
                )
            )
        # The third was replayed (a marker names it); the fourth erased (a tombstone).
        where = f"{sent[2].partition}/{sent[2].offset}"
        await producer.send_and_wait(
            p.topics.dlq,
            b"",
            key=f"dlq.replayed/{where}".encode(),
            headers=[(MARKER, where.encode())],
        )
        erased_key = dead_letter_record(
            letters[3][0], dlq_topic=p.topics.dlq, group=group, exc=letters[3][1]
        ).key
        await producer.send_and_wait(p.topics.dlq, None, key=erased_key, partition=0)
    finally:
        await producer.stop()

    first = await p.scoring.get("/v1/dead-letters", params={"limit": 2}, headers=p.reader)
    assert first.status_code == 200, first.text
    page = first.json()
    assert page["complete"] is True
    assert [x["key"] for x in page["items"]] == ["cust-3", "cust-2"]
    replayed, not_json = page["items"]
    assert (replayed["state"], replayed["reason"]) == ("replayed", "statement_timeout")
    assert (not_json["state"], not_json["reason"], not_json["error"]) == (
        "pending",
        "ValueError",
        "ValueError: bad",
    )
    assert (not_json["source_topic"], not_json["source_partition"], not_json["source_offset"]) == (
        p.topics.changes,
        1,
        11,
    )
    assert not_json["group"] == group and not_json["event_id"] is None
    rest = await p.scoring.get(
        "/v1/dead-letters", params={"limit": 2, "cursor": page["next_cursor"]}, headers=p.reader
    )
    [invalid] = rest.json()["items"]
    assert rest.json()["next_cursor"] is None
    assert (invalid["key"], invalid["event_id"], invalid["reason"]) == (
        "cust-1",
        "evt-poison-1",
        "ValidationError",
    )
    assert invalid["id"] == f"{sent[0].partition}/{sent[0].offset}"
    assert invalid["size"] == len(event)
    # The erased customer is not listed; no payload is ever shown.
    for answer in (first, rest):
        assert "cust-4" not in answer.text and SECRET not in answer.text

    pending = await p.scoring.get(
        "/v1/dead-letters", params={"state": "pending", "reason": "ValueError"}, headers=p.reader
    )
    assert [x["key"] for x in pending.json()["items"]] == ["cust-2"]

    summary = (await p.scoring.get("/v1/dead-letters/summary", headers=p.reader)).json()
    assert (summary["total"], summary["pending"], summary["replayed"]) == (3, 2, 1)
    assert summary["by_reason"] == [
        {"reason": "ValidationError", "pending": 1, "replayed": 0},
        {"reason": "ValueError", "pending": 1, "replayed": 0},
        {"reason": "statement_timeout", "pending": 0, "replayed": 1},
    ]
    assert summary["complete"] is True

    health = (await p.outreach.get("/v1/ops/health", headers=p.reader)).json()
    assert health["dead_letters"]["pending"] == 2
    assert health["dead_letters"]["pending_here"] == 2

    bad = await p.scoring.get("/v1/dead-letters", params={"cursor": "nope"}, headers=p.reader)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.cursor"
    wrong = await p.scoring.get("/v1/dead-letters", params={"state": "lost"}, headers=p.reader)
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "query.state"
    assert (await p.scoring.get("/v1/dead-letters")).status_code == 401
