"""Preview and backtest tell the truth: their counts equal what the live pipeline decides for
the same history and the same audience."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from services.outreach.settings import OutreachSettings
from shared.clock import FixedClock
from shared.settings import CommonSettings
from tests.support.pipeline import add_rule, outreach_has_seen, post_events
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
STATUS_OF = {"send": "pending", "defer": "scheduled", "hold": "held", "suppress": "suppressed"}
ZONES = ["Europe/Paris", "America/Los_Angeles", "Asia/Tokyo"]


@pytest.fixture
async def stack(settings: CommonSettings) -> AsyncIterator[Stack]:
    # No channels: actions stay as decided (pending), which is what is compared.
    async with isolated_stack(settings, FixedClock(START), outreach=OutreachSettings()) as s:
        yield s


def _history() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(12):
        cid = f"bt-{i}"
        at = START - timedelta(days=20)
        events.append(
            {
                "type": "customer",
                "customer_id": cid,
                "name": f"N{i}",
                "email": f"{cid}@example.com",
                "timezone": ZONES[i % 3],
                "consent": {"email": True, "sms": False, "marketing": i % 4 != 0},
                "occurred_at": at.isoformat(),
            }
        )
        events.append(
            {
                "type": "order",
                "order_id": f"{cid}-o",
                "customer_id": cid,
                "status": "paid",
                "amount": f"{20 + i}.00",
                "currency": "USD",
                "occurred_at": (at + timedelta(days=1)).isoformat(),
            }
        )
        if i % 5 == 1:
            events.append(
                {
                    "type": "complaint",
                    "complaint_id": f"{cid}-k",
                    "customer_id": cid,
                    "status": "opened",
                    "severity": "low",
                    "occurred_at": (at + timedelta(days=2)).isoformat(),
                }
            )
        for v in range(1 + i % 3):  # up to three visits: the cap (2 in 7 days) bites
            events.append(
                {
                    "type": "visit",
                    "visit_id": f"{cid}-v{v}",
                    "customer_id": cid,
                    "channel": "web",
                    "occurred_at": (START - timedelta(hours=5 - v)).isoformat(),
                }
            )
    return events


async def _live(stack: Stack, rule_id: str) -> tuple[Counter[str], Counter[str]]:
    async with stack.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT status, reason FROM outreach.actions WHERE rule_id = :r"),
                {"r": rule_id},
            )
        ).all()
    return (
        Counter(r.status for r in rows),
        Counter(r.reason for r in rows if r.status != "pending" and r.reason),
    )


async def test_backtest_and_preview_counts_equal_what_the_pipeline_decides(stack: Stack) -> None:
    assert stack.outreach is not None
    marketing = stack.auth("marketing")
    await add_rule(
        stack,
        {
            "id": "visit-recall",
            "name": "recall after a visit",
            "priority": 10,
            "trigger": {"type": "event", "event": "visit.recorded"},
            "action": {
                "kind": "recall",
                "channel": "webhook",
                "template": {"subject": "Still thinking about it?", "body": "Hi"},
            },
        },
    )
    resp = await stack.outreach.post(
        "/v1/suppressions", headers=marketing, json={"customer_id": "bt-5", "reason": "asked"}
    )
    assert resp.status_code in (200, 201), resp.text
    ids = await post_events(stack, _history())
    await outreach_has_seen(stack, ids)

    statuses, reasons = await _live(stack, "visit-recall")
    assert sum(statuses.values()) == sum(1 for e in _history() if e["type"] == "visit")
    assert len(statuses) >= 3, statuses  # a history that exercises the policy

    resp = await stack.outreach.post(
        "/v1/rules/visit-recall/backtest", params={"days": 30}, headers=stack.auth("ops")
    )
    assert resp.status_code == 200, resp.text
    backtest = resp.json()
    assert {STATUS_OF[k]: v for k, v in backtest["outcomes"].items()} == dict(statuses)
    assert backtest["reasons"] == dict(reasons)

    # A broadcast: its preview is exactly what launching it decides.
    await add_rule(
        stack,
        {
            "id": "bt-news",
            "name": "news",
            "priority": 5,
            "trigger": {"type": "broadcast"},
            "conditions": {"gte": ["value.orders", 1]},
            "action": {
                "kind": "announcement",
                "channel": "email",
                "template": {"subject": "News", "body": "Hello {{ unsubscribe_url }}"},
            },
        },
    )
    resp = await stack.outreach.post("/v1/rules/bt-news/preview", headers=stack.auth("ops"))
    assert resp.status_code == 200, resp.text
    preview = resp.json()
    launch = await stack.outreach.post(
        "/v1/broadcasts", headers=marketing, json={"rule_id": "bt-news", "launch_id": "bt-1"}
    )
    assert launch.status_code == 200, launch.text
    launched, launch_reasons = await _live(stack, "bt-news")
    assert preview["matched"] == sum(launched.values()) == 12
    assert {STATUS_OF[k]: v for k, v in preview["outcomes"].items() if v} == dict(launched)
    assert {k: v for k, v in preview["reasons"].items() if v} == dict(launch_reasons)


async def test_a_backtest_of_an_unsaved_rule_over_an_empty_stream_answers_nothing_decided(
    stack: Stack,
) -> None:
    """A shop with no history yet: the answer says so (it once failed with a 500)."""
    assert stack.outreach is not None
    rule = {
        "id": "new-rule",
        "name": "New rule",
        "trigger": {"type": "schedule", "kind": "cron", "expression": "0 10 * * *"},
        "action": {"kind": "care", "channel": "webhook", "template": {"body": "hello"}},
    }
    resp = await stack.outreach.post(
        "/v1/rules/backtest", json=rule, headers=stack.auth("marketing")
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["decided"], body["coverage"]["changes"], body["decisions_from"]) == (0, 0, None)
