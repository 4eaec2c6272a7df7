"""Outreach reads the changes topic by the shared contract, and a consumer ignores the fields
it does not know: during a rolling deploy scoring may publish a field outreach has never
heard of, and the change must still be applied (its card replicated, its rules fired), not
dead-lettered. On the real broker and database, on a Tend of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import text

from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.settings import OutreachSettings
from shared.changes import change_id_for
from shared.clock import FixedClock
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all
from tests.support.pipeline import add_rule, consumers_assigned, outreach_caught_up
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
async def stack(settings: CommonSettings) -> AsyncIterator[Stack]:
    async with isolated_stack(
        settings, FixedClock(T0), outreach=OutreachSettings(allow_private_webhooks=True)
    ) as stack:
        await consumers_assigned(stack)
        yield stack


def _change(customer_id: str, **unknown: object) -> tuple[str, str, bytes]:
    """(change id, event id, the change as JSON) for a visit that also moved the customer from
    declining to reactivated, with ``unknown`` fields added to the change and its stage move."""
    at = T0.isoformat()
    event_id = str(uuid.uuid4())
    change_id = change_id_for("event", event_id)
    card = {
        **SAMPLE_CARD,
        "customer_id": customer_id,
        "stage": "reactivated",
        "stage_since": T0.date().isoformat(),
        "previous_stage": "declining",
    }
    change = {
        "change_id": change_id,
        "customer_id": customer_id,
        "cause": "event",
        "at": at,
        "event": {
            "event_id": event_id,
            "event_type": "visit.recorded",
            "schema_version": 1,
            "customer_id": customer_id,
            "occurred_at": at,
            "received_at": at,
            "source": "test",
            "data": {"visit_id": f"v-{customer_id}", "channel": "store"},
        },
        "card": card,
        "stage_change": {"from": "declining", "to": "reactivated", "at": at, **unknown},
        **unknown,
    }
    return change_id, event_id, orjson.dumps(change)


def _rule(rule_id: str, trigger: dict[str, object]) -> dict[str, object]:
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": trigger,
        "action": {"kind": "care", "channel": "webhook", "template": {"body": "hello"}},
    }


async def test_a_change_with_fields_outreach_does_not_know_is_applied_not_dead_lettered(
    stack: Stack,
) -> None:
    await add_rule(stack, _rule("visit-care", {"type": "event", "event": "visit.recorded"}))
    await add_rule(stack, _rule("welcome-back", {"type": "stage", "to": ["reactivated"]}))
    customer = f"unknown-{uuid.uuid4().hex[:8]}"
    change_id, event_id, value = _change(
        customer, scoring_build="2026.6.1", explanation={"why": "a newer producer"}
    )
    topics = Topics.from_settings(stack.settings)
    producer = await start_producer(stack.settings)
    try:
        await publish_many(producer, [Record(topics.changes, customer.encode(), value)], timeout=30)
    finally:
        await producer.stop()
    await outreach_caught_up(stack)

    async with stack.engine.connect() as conn:
        card = await conn.scalar(
            text("SELECT card FROM outreach.cards WHERE customer_id = :c"), {"c": customer}
        )
        applied = await conn.scalar(
            text("SELECT count(*) FROM outreach.inbox WHERE change_id = :c"), {"c": change_id}
        )
        fired = (
            await conn.execute(
                text(
                    "SELECT rule_id, occurrence FROM outreach.actions WHERE customer_id = :c "
                    "ORDER BY rule_id"
                ),
                {"c": customer},
            )
        ).all()
    assert applied == 1
    assert card is not None and card["customer_id"] == customer
    assert [(r.rule_id, r.occurrence) for r in fired] == [
        ("visit-care", event_id),
        ("welcome-back", f"reactivated@{T0.date().isoformat()}"),
    ]
    dead = [r for r in await read_all(stack.settings.kafka_bootstrap_servers, topics.dlq)]
    assert not any(r.value == value for r in dead)
