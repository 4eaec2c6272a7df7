"""Purchase preferences through the real pipeline: orders with categorised items posted to
ingest, scored into the card's preferences, and a broadcast of new items reaching exactly the
customers who buy their category (issue #17, item 1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.outreach.settings import OutreachSettings
from shared.clock import FixedClock
from shared.settings import CommonSettings
from tests.support.pipeline import (
    actions_of,
    add_rule,
    add_webhook_channel,
    outreach_has_seen,
    post_events,
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


def profile(cid: str) -> dict[str, Any]:
    return {
        "type": "customer",
        "customer_id": cid,
        "name": cid,
        "timezone": "Europe/Paris",
        "email": f"{cid}@example.com",
        "consent": {"email": True, "marketing": True},
        "occurred_at": (START - timedelta(days=500)).isoformat(),
    }


def order(cid: str, days_ago: int, category: str, brand: str) -> dict[str, Any]:
    item = {"sku": f"{category}-1", "quantity": 2, "unit_price": "12.50"}
    return {
        "type": "order",
        "order_id": f"{cid}-{category}-{days_ago}",
        "customer_id": cid,
        "status": "paid",
        "amount": "25.00",
        "currency": "USD",
        "items": [{**item, "category": category, "brand": brand}],
        "occurred_at": (START - timedelta(days=days_ago)).isoformat(),
    }


NEW_TEAS = {
    "items": [
        {"sku": "tea-jasmine", "category": "tea", "brand": "zen", "name": "Jasmine pearls"},
        {"sku": "tea-oolong", "category": "tea", "name": "Milk oolong"},
    ]
}


async def test_a_launch_of_new_teas_reaches_exactly_the_tea_buyers_of_the_last_year(
    stack: Stack,
) -> None:
    assert stack.outreach is not None
    customers = {
        "tea-lover": [order("tea-lover", 100, "tea", "zen")],
        "tea-long-ago": [order("tea-long-ago", 400, "tea", "zen")],  # over a year ago
        "cups-only": [order("cups-only", 10, "cups", "zen")],
        "brand-y": [order("brand-y", 30, "tea", "zen"), order("brand-y", 60, "cups", "Y")],
        "no-orders": [],
    }
    events = [e for cid, orders in customers.items() for e in [profile(cid), *orders]]
    async with WebhookReceiver() as hook:
        await add_webhook_channel(stack, hook.url, hook.secret)
        await add_rule(
            stack,
            {
                "id": "new-teas",
                "name": "New in the categories you buy",
                "trigger": {"type": "broadcast"},
                "conditions": {
                    "all": [
                        {"bought": {"launch": "category", "within_days": 365}},
                        {"never_bought": {"brand": "Y"}},
                    ]
                },
                "action": {
                    "kind": "announcement",
                    "channel": "webhook",
                    "template": {
                        "subject": "New for you",
                        "body": "{% for i in launch.items_for_customer %}{{ i.name }};{% endfor %}",
                    },
                },
            },
        )
        await outreach_has_seen(stack, await post_events(stack, events))

        # The card shows what the customer buys.
        resp = await stack.scoring.get("/v1/customers/brand-y", headers=stack.auth("ops"))
        assert resp.status_code == 200, resp.text
        prefs = resp.json()["preferences"]
        assert prefs["categories"]["tea"]["spend"] == "25.00"
        assert set(prefs["brands"]) == {"zen", "Y"}
        assert prefs["top_categories_by_recency"] == ["tea", "cups"]

        resp = await stack.outreach.post(
            "/v1/broadcasts",
            json={"rule_id": "new-teas", "launch_id": "teas-2026", "content": NEW_TEAS},
            headers=stack.auth("marketing"),
        )
        assert resp.status_code == 200, resp.text
        assert (resp.json()["audience"], resp.json()["statuses"]) == (1, {"pending": 1})
        stack.outreach_app.state.delivery.nudge()  # type: ignore[union-attr]
        [received] = await hook.wait_for(1)
        assert received.payload["customer_id"] == "tea-lover"
        assert received.payload["body"] == "Jasmine pearls;Milk oolong;"
        for cid in ("tea-long-ago", "cups-only", "brand-y", "no-orders"):
            assert await actions_of(stack, cid) == [], cid

        # Content that names no category is refused, naming the field.
        resp = await stack.outreach.post(
            "/v1/broadcasts",
            json={"rule_id": "new-teas", "content": {"items": [{"sku": "x"}]}},
            headers=stack.auth("marketing"),
        )
        assert resp.status_code == 422
        assert "body.content.items.0.category" in resp.text


async def test_an_event_filter_looks_into_the_orders_items(stack: Stack) -> None:
    async with WebhookReceiver() as hook:
        await add_webhook_channel(stack, hook.url, hook.secret)
        await add_rule(
            stack,
            {
                "id": "tea-thanks",
                "name": "Thanks for buying tea",
                "trigger": {
                    "type": "event",
                    "event": "order.paid",
                    "filters": {"some": ["items", {"eq": ["category", "tea"]}]},
                },
                "action": {
                    "kind": "follow_up",
                    "channel": "webhook",
                    "template": {"subject": "Thanks", "body": "Brewing tips inside"},
                },
            },
        )
        events = [
            profile("tea-buyer"),
            order("tea-buyer", 0, "tea", "zen"),
            profile("cup-buyer"),
            order("cup-buyer", 0, "cups", "zen"),
        ]
        await outreach_has_seen(stack, await post_events(stack, events))
        [action] = await actions_of(stack, "tea-buyer")
        assert action.rule_id == "tea-thanks"
        assert await actions_of(stack, "cup-buyer") == []
