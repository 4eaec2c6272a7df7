"""Outreach end to end: an event posted to ingest, scored, matched by a marketer's rule and
delivered to a real receiver — on the real broker and database, with time driven by a clock
the test holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from services.outreach.settings import OutreachSettings
from shared.clock import FixedClock
from shared.settings import CommonSettings
from tests.support.pipeline import (
    actions_of,
    add_rule,
    add_webhook_channel,
    outreach_has_seen,
    post_events,
    tick,
    until,
)
from tests.support.receivers import WebhookReceiver
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def stack(settings: CommonSettings, clock: FixedClock) -> AsyncIterator[Stack]:
    async with isolated_stack(
        settings, clock, outreach=OutreachSettings(allow_private_webhooks=True)
    ) as s:
        yield s


def webhook_rule(
    rule_id: str, trigger: dict[str, Any], kind: str = "follow_up", priority: int = 10, **extra: Any
) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": trigger,
        "priority": priority,
        "action": {
            "kind": kind,
            "channel": "webhook",
            "template": {
                "subject": f"{kind} for {{{{ card.customer_id }}}}",
                "body": "Hello {{ customer.name or 'there' }}",
            },
        },
        **extra,
    }


def profile(cid: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "customer",
        "customer_id": cid,
        "name": "Ada",
        "timezone": "Europe/Paris",
        "email": f"{cid}@example.com",
        "consent": {"email": True, "sms": False, "marketing": True},
        "occurred_at": (START - timedelta(days=30)).isoformat(),
        **fields,
    }


def order(cid: str, oid: str, at: datetime, amount: str = "50.00") -> dict[str, Any]:
    return {
        "type": "order",
        "order_id": oid,
        "customer_id": cid,
        "status": "paid",
        "amount": amount,
        "currency": "USD",
        "occurred_at": at.isoformat(),
    }


async def test_a_posted_order_gets_a_signed_follow_up_webhook_seven_days_later(
    stack: Stack, clock: FixedClock
) -> None:
    async with WebhookReceiver() as hook:
        await add_webhook_channel(stack, hook.url, hook.secret)
        await add_rule(
            stack,
            webhook_rule(
                "follow-up-7d",
                {
                    "type": "schedule",
                    "kind": "days_after",
                    "since": "value.last_order_at",
                    "days": 7,
                    "at": "09:00",
                },
            ),
        )
        ids = await post_events(stack, [profile("ada"), order("ada", "o-1", START)])
        await outreach_has_seen(stack, ids)

        # Not due yet: nothing is decided before the seventh day.
        clock.set(START + timedelta(days=6))
        assert await tick(stack) == 0
        assert await actions_of(stack, "ada") == []

        # Day 7 at 09:00 in Paris (07:00 UTC in June).
        clock.set(datetime(2026, 6, 8, 7, 0, tzinfo=UTC))
        assert await tick(stack) == 1
        [received] = await hook.wait_for(1)
        assert received.verified
        Webhook(hook.secret).verify(received.body, received.headers)
        assert received.payload["kind"] == "follow_up"
        assert received.payload["customer_id"] == "ada"
        assert received.payload["subject"] == "follow_up for ada"
        [action] = await actions_of(stack, "ada")
        assert received.webhook_id == action.id
        await until(lambda: _status(stack, action.id, "sent"), what="sent status")

        # Later ticks never send it again.
        clock.set(datetime(2026, 6, 9, 7, 0, tzinfo=UTC))
        assert await tick(stack) == 0
        assert len(hook.received) == 1


async def _status(stack: Stack, action_id: str, status: str) -> bool:
    from sqlalchemy import text

    async with stack.engine.connect() as conn:
        got = await conn.scalar(
            text("SELECT status FROM outreach.actions WHERE id = :i"), {"i": action_id}
        )
    return bool(got == status)
