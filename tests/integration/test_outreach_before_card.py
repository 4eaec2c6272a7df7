"""An event rule may read the card as it stood before the event (``before.<field>``): the
customer thanked for an order as what they were when they placed it, not what the order made
of them, and the action records that strategy. Outreach finds that card in its replica as it
was before the batch, and within a batch in the change before. The changes are published
straight onto the changes topic, as scoring would, on the real broker and database of a Tend
of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.settings import OutreachSettings
from shared.changes import change_id_for
from shared.clock import FixedClock
from shared.settings import CommonSettings
from tests.support.events import event_json
from tests.support.pipeline import add_rule, consumers_assigned, publish_changes
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
THANKS = {
    "id": "thanks-as-maintain",
    "name": "thanks as maintain",
    "trigger": {"type": "event", "event": "order.paid"},
    "conditions": {"eq": ["before.strategy", "maintain"]},
    "action": {"kind": "greeting", "channel": "webhook", "template": {"body": "thank you"}},
}


@pytest.fixture
async def stack(settings: CommonSettings) -> AsyncIterator[Stack]:
    async with isolated_stack(
        settings, FixedClock(T0), outreach=OutreachSettings(allow_private_webhooks=True)
    ) as stack:
        await consumers_assigned(stack)
        yield stack


def _change(customer_id: str, at: datetime, strategy: str, order: bool) -> dict[str, Any]:
    event_id = str(uuid.uuid4())
    if order:
        kind = "order.paid"
        data: dict[str, Any] = {
            "order_id": f"o-{event_id[:8]}",
            "status": "paid",
            "amount": "25.00",
            "currency": "USD",
        }
    else:
        kind, data = "visit.recorded", {"visit_id": f"v-{event_id[:8]}", "channel": "store"}
    profile = {
        **SAMPLE_CARD["profile"],
        "timezone": "UTC",
        "consent": {"email": True, "sms": False, "marketing": True, "unsubscribed": None},
    }
    card = {
        **SAMPLE_CARD,
        "customer_id": customer_id,
        "as_of": at.isoformat(),
        "profile": profile,
        "strategy": strategy,
    }
    event = event_json(customer_id, at, kind, data, event_id)
    return {
        "change_id": change_id_for("event", event_id),
        "customer_id": customer_id,
        "cause": "event",
        "at": at.isoformat(),
        "event": event,
        "card": card,
    }


async def test_an_order_is_answered_as_what_the_customer_was_when_they_placed_it(
    stack: Stack,
) -> None:
    await add_rule(stack, THANKS)
    tag = uuid.uuid4().hex[:6]
    back, regular, first, together = (f"{n}-{tag}" for n in ("back", "regular", "first", "both"))
    later = T0 + timedelta(minutes=5)
    # What outreach already holds of them: a valued customer gone quiet, a regular.
    await publish_changes(
        stack,
        [_change(back, T0, "maintain", False), _change(regular, T0, "develop", False)],
    )
    await publish_changes(
        stack,
        [
            # The order that brings them back makes them develop on the card after it.
            _change(back, later, "develop", True),
            _change(regular, later, "develop", True),
            # An order that is the first news of a customer: no card before it.
            _change(first, later, "maintain", True),
            # Both in one go: the order is read against the visit's card just before it.
            _change(together, T0, "maintain", False),
            _change(together, later, "develop", True),
        ],
    )
    async with stack.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT customer_id, strategy FROM outreach.actions WHERE rule_id = :r"),
            {"r": THANKS["id"]},
        )
        thanked = {cid: strategy for cid, strategy in rows.all()}
    # The actions serve the strategy the rule chose them for, not the card's after the order:
    # the outcomes grouped by strategy credit maintain with them.
    assert thanked == {back: "maintain", together: "maintain"}


async def test_only_an_event_rule_may_read_the_card_before_the_event(stack: Stack) -> None:
    assert stack.outreach is not None
    rule = {
        **THANKS,
        "id": "weekly-as-maintain",
        "trigger": {"type": "schedule", "kind": "cron", "expression": "0 10 * * 1"},
    }
    resp = await stack.outreach.post("/v1/rules", json=rule, headers=stack.auth("marketing"))
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert error["field"] == "body.conditions"
    assert "only a rule with an event trigger" in error["reason"]
    # An unknown field after ``before.`` is named like any other.
    rule = {**THANKS, "conditions": {"eq": ["before.stratgy", "maintain"]}}
    resp = await stack.outreach.post("/v1/rules", json=rule, headers=stack.auth("marketing"))
    assert resp.status_code == 422, resp.text
    assert "before.stratgy" in resp.text
