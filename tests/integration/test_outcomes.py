"""Outcomes end to end: a seeded simulated shop whose treated customers buy again more often
than its control arm, through ingest, scoring and outreach on the real broker and database;
`GET /v1/outcomes` reports what the estimator says on the same counts, and the same figures
after every change is delivered again."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from services.outreach.core.lift import rate_difference, revenue_difference
from services.outreach.settings import OutreachSettings
from shared.clock import FixedClock
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all
from tests.support.pipeline import (
    add_rule,
    add_webhook_channel,
    consumers_assigned,
    nothing_in_flight,
    outreach_caught_up,
    outreach_has_seen,
    post_events,
    until,
)
from tests.support.receivers import WebhookReceiver
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

# In the past of the real clock (ingest judges occurred_at by it), on the test's clock.
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
CUSTOMERS = 400
P, D = 0.20, 0.20  # the control arm buys again with P, the treated arm with P + D
AMOUNT = "40.00"
RULE = "spring-news"


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def stack(settings: CommonSettings, clock: FixedClock) -> AsyncIterator[Stack]:
    async with isolated_stack(
        settings, clock, outreach=OutreachSettings(allow_private_webhooks=True)
    ) as s:
        yield s


def _customer(cid: str) -> list[dict[str, Any]]:
    """A profile and two past orders: a customer with a history."""
    return [
        {
            "type": "customer",
            "customer_id": cid,
            "name": cid,
            "email": f"{cid}@example.com",
            "timezone": "UTC",
            "consent": {"email": True, "sms": False, "marketing": True},
            "occurred_at": (START - timedelta(days=200)).isoformat(),
        },
        *(
            _order(cid, f"{cid}-old-{n}", START - timedelta(days=days))
            for n, days in enumerate((150, 60))
        ),
    ]


def _order(cid: str, oid: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "order",
        "order_id": oid,
        "customer_id": cid,
        "status": "placed",
        "amount": AMOUNT,
        "currency": "USD",
        "occurred_at": at.isoformat(),
    }


async def _post(stack: Stack, events: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(events), 1000):
        ids += await post_events(stack, events[i : i + 1000])
    return ids


async def _shop(stack: Stack, prefix: str, n: int) -> list[str]:
    """``n`` customers with a history each, known to outreach."""
    await consumers_assigned(stack)
    customers = [f"{prefix}-{i:04d}" for i in range(n)]
    history = await _post(stack, [e for cid in customers for e in _customer(cid)])
    await outreach_has_seen(stack, history, timeout=120)
    return customers


async def _arms(stack: Stack) -> dict[str, tuple[str, str]]:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT customer_id, arm, status FROM outreach.actions WHERE rule_id = :r"),
            {"r": RULE},
        )
        return {r.customer_id: (r.arm, r.status) for r in rows}


async def _outcomes(stack: Stack) -> dict[str, Any]:
    assert stack.outreach is not None
    resp = await stack.outreach.get(
        "/v1/outcomes",
        params={"by": "rule", "since": (START - timedelta(days=1)).isoformat()},
        headers=stack.auth("marketing"),
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _goal_events(stack: Stack) -> list[tuple[Any, ...]]:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT event_id, customer_id, event_type, occurred_at, revenue, data::text "
                "FROM outreach.goal_events ORDER BY event_id"
            )
        )
        return [tuple(r) for r in rows]


async def _redeliver_every_change(stack: Stack) -> None:
    topic = Topics.from_settings(stack.settings).changes
    records = await read_all(stack.settings.kafka_bootstrap_servers, topic)
    producer = await start_producer(stack.settings)
    try:
        await publish_many(producer, [Record(topic, r.key, r.value) for r in records], timeout=30)
    finally:
        await producer.stop()
    await outreach_caught_up(stack, 60)


async def test_a_control_group_measures_the_lift_and_redelivery_leaves_it_identical(
    stack: Stack, clock: FixedClock
) -> None:
    assert stack.outreach is not None
    marketing = stack.auth("marketing")
    await _shop(stack, "shop", CUSTOMERS)

    async with WebhookReceiver() as hook:
        await add_webhook_channel(stack, hook.url, hook.secret)
        policy = await stack.outreach.put(
            "/v1/policy", json={"quiet_hours": None}, headers=marketing
        )
        assert policy.status_code == 200, policy.text
        await add_rule(
            stack,
            {
                "id": RULE,
                "name": "Spring news",
                "trigger": {"type": "broadcast"},
                "action": {
                    "kind": "announcement",
                    "channel": "webhook",
                    "template": {"subject": "Spring", "body": "New in store"},
                },
                "goal": {"event": "order.placed", "within_days": 14, "count": "every"},
                "control_percent": 50,
            },
        )
        launched = await stack.outreach.post(
            "/v1/broadcasts", json={"rule_id": RULE, "launch_id": "spring"}, headers=marketing
        )
        assert launched.status_code == 200, launched.text
        arms = await _arms(stack)
        treated = sorted(c for c, (arm, _) in arms.items() if arm == "treatment")
        control = sorted(c for c, (arm, status) in arms.items() if arm == "control")
        assert len(treated) + len(control) == CUSTOMERS
        assert {arms[c][1] for c in control} == {"control"}
        await hook.wait_for(len(treated), timeout=120)
        await until(lambda: nothing_in_flight(stack), 60, "every webhook answered")
        assert {s for c, (_, s) in (await _arms(stack)).items() if c in treated} == {"sent"}
        assert len(hook.received) == len(treated)  # the control arm heard nothing

    # An hour later, the shop's customers respond: treated with P + D, control with P.
    clock.set(START + timedelta(hours=1))
    rng = random.Random(14)
    bought = {c for c in treated if rng.random() < P + D} | {c for c in control if rng.random() < P}
    orders = [_order(c, f"{c}-new", clock.now()) for c in sorted(bought)]
    # Some treated buyers order twice: the rule's goal counts every order in its window.
    twice = sorted(bought & set(treated))[:10]
    orders += [_order(c, f"{c}-again", clock.now() + timedelta(minutes=5)) for c in twice]
    await outreach_has_seen(stack, await _post(stack, orders), timeout=120)

    body = await _outcomes(stack)
    [group] = body["groups"]
    x1, x2 = len(bought & set(treated)), len(bought & set(control))
    assert group["key"] == RULE
    assert group["baseline"] == "control_group"
    assert {k: group["treatment"][k] for k in ("customers", "conversions")} == {
        "customers": len(treated),
        "conversions": x1,
    }
    assert {k: group["control"][k] for k in ("customers", "conversions")} == {
        "customers": len(control),
        "conversions": x2,
    }
    assert Decimal(group["treatment"]["revenue"]) == (x1 + len(twice)) * Decimal(AMOUNT)
    assert Decimal(group["control"]["revenue"]) == x2 * Decimal(AMOUNT)
    expected = rate_difference(x1, len(treated), x2, len(control))
    got = group["conversion_difference"]
    assert (got["estimate"], got["low"], got["high"]) == pytest.approx(
        (expected.estimate, expected.low, expected.high)
    )
    assert got["method"] == expected.method
    assert got["low"] <= D <= got["high"]
    per_buyer = [float(AMOUNT) * (2 if c in twice else 1) for c in sorted(bought & set(treated))]
    revenue = revenue_difference(len(treated), per_buyer, len(control), [float(AMOUNT)] * x2)
    got_revenue = group["revenue_difference"]
    assert (got_revenue["low"], got_revenue["high"]) == pytest.approx((revenue.low, revenue.high))
    assert (group["small_sample"], group["verdict"]) == (False, "lift")

    # Every change delivered again, as to an outreach restarted from offset zero that lost
    # its inbox: the same goal events, the same figures.
    kept = await _goal_events(stack)
    async with stack.engine.begin() as conn:
        await conn.execute(text("DELETE FROM outreach.inbox"))
    await _redeliver_every_change(stack)
    assert await _goal_events(stack) == kept
    assert await _outcomes(stack) == body

    # And when the goal events themselves are lost, a redelivery rebuilds them.
    async with stack.engine.begin() as conn:
        await conn.execute(text("DELETE FROM outreach.goal_events"))
    await _redeliver_every_change(stack)
    assert await _goal_events(stack) == kept
    assert await _outcomes(stack) == body

    # A hold-out whose instant has not come (waiting out quiet hours, say) has touched nobody
    # yet, as a message still waiting to go out: the control arm counts it once it has.
    waiting = next(c for c in control if c not in bought)
    async with stack.engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outreach.actions SET not_before = :at "
                "WHERE rule_id = :r AND customer_id = :c"
            ),
            {"at": clock.now() + timedelta(hours=2), "r": RULE, "c": waiting},
        )
    [pending] = (await _outcomes(stack))["groups"]
    assert pending["control"]["customers"] == len(control) - 1
    clock.set(clock.now() + timedelta(hours=3))
    [come] = (await _outcomes(stack))["groups"]
    assert come["control"]["customers"] == len(control)

    # A period holding more touches than one request attributes is refused, naming since.
    app = stack.outreach_app
    assert app is not None
    app.state.settings = app.state.settings.model_copy(update={"outcomes_touch_limit": 100})
    refused = await stack.outreach.get("/v1/outcomes", headers=marketing)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error["field"] == "query.since" and f"{CUSTOMERS} touches" in error["reason"]
    backwards = await stack.outreach.get(
        "/v1/outcomes",
        params={"since": START.isoformat(), "until": START.isoformat()},
        headers=marketing,
    )
    assert backwards.status_code == 422
    assert [e["field"] for e in backwards.json()["errors"]] == ["query.until"]

    # A customer's goal events are theirs: in their export, and forgotten with them.
    [buyer] = sorted(bought)[:1]
    export = await stack.outreach.get(f"/v1/customers/{buyer}/export", headers=marketing)
    assert export.status_code == 200, export.text
    assert {e["event_type"] for e in export.json()["goal_events"]} == {
        "customer.updated",
        "order.placed",
    }
    assert all("email" not in e["data"] for e in export.json()["goal_events"])
    erased = await stack.ingest.delete(f"/v1/customers/{buyer}", headers=stack.auth("ops"))
    assert erased.status_code in (200, 202), erased.text

    async def forgotten() -> bool:
        async with stack.engine.connect() as conn:
            n = await conn.scalar(
                text("SELECT count(*) FROM outreach.goal_events WHERE customer_id = :c"),
                {"c": buyer},
            )
        return bool(n == 0)

    await until(forgotten, 60, "the erased customer's goal events deleted")


async def test_a_later_message_to_the_hold_outs_takes_nothing_from_the_rule_that_held_them_out(
    stack: Stack, clock: FixedClock
) -> None:
    # A message with no effect at all: everyone buys with the same chance. It held half its
    # customers out; the frequency cap (one message a week) then let a second broadcast reach
    # only those hold-outs, since the ones sent the first had used up their week.
    assert stack.outreach is not None
    marketing = stack.auth("marketing")
    customers = await _shop(stack, "cap", 200)
    later = "summer-news"

    async with WebhookReceiver() as hook:
        await add_webhook_channel(stack, hook.url, hook.secret)
        policy = await stack.outreach.put(
            "/v1/policy",
            json={"quiet_hours": None, "frequency_cap": {"count": 1, "days": 7}},
            headers=marketing,
        )
        assert policy.status_code == 200, policy.text
        for rule_id, control_percent in ((RULE, 50), (later, 0)):
            await add_rule(
                stack,
                {
                    "id": rule_id,
                    "name": rule_id,
                    "trigger": {"type": "broadcast"},
                    "action": {
                        "kind": "announcement",
                        "channel": "webhook",
                        "template": {"subject": "News", "body": "New in store"},
                    },
                    "goal": {"event": "order.placed", "within_days": 14},
                    "control_percent": control_percent,
                },
            )
        first = await stack.outreach.post(
            "/v1/broadcasts", json={"rule_id": RULE, "launch_id": "spring"}, headers=marketing
        )
        assert first.status_code == 200, first.text
        arms = await _arms(stack)
        treated = {c for c, (arm, _) in arms.items() if arm == "treatment"}
        control = {c for c, (arm, _) in arms.items() if arm == "control"}
        assert treated and control
        await hook.wait_for(len(treated), timeout=120)
        await until(lambda: nothing_in_flight(stack), 60, "every webhook answered")

        clock.set(START + timedelta(minutes=10))
        second = await stack.outreach.post(
            "/v1/broadcasts", json={"rule_id": later, "launch_id": "summer"}, headers=marketing
        )
        assert second.status_code == 200, second.text
        await hook.wait_for(len(treated) + len(control), timeout=120)
        await until(lambda: nothing_in_flight(stack), 60, "every webhook answered")
        async with stack.engine.connect() as conn:
            sent_later = set(
                (
                    await conn.scalars(
                        text(
                            "SELECT customer_id FROM outreach.actions "
                            "WHERE rule_id = :r AND status = 'sent'"
                        ),
                        {"r": later},
                    )
                ).all()
            )
        assert sent_later == control  # the cap kept it from the first message's treated

    clock.set(START + timedelta(hours=1))
    rng = random.Random(15)
    bought = {c for c in customers if rng.random() < 0.3}
    orders = [_order(c, f"{c}-new", clock.now()) for c in sorted(bought)]
    await outreach_has_seen(stack, await _post(stack, orders), timeout=120)

    groups = {g["key"]: g for g in (await _outcomes(stack))["groups"]}
    spring, summer = groups[RULE], groups[later]
    # The hold-outs' orders count for the rule that held them out, though the second
    # broadcast touched them later: its arms are measured alike, and show no lift.
    assert spring["treatment"]["conversions"] == len(bought & treated)
    assert spring["control"]["conversions"] == len(bought & control)
    assert spring["verdict"] == "no_difference"
    # The second broadcast is measured on its own touches: the same orders count for it.
    assert summer["treatment"]["conversions"] == len(bought & control)

    # As it stood before the second broadcast and the orders: the first one's touches, no
    # conversion yet; and no instant to come.
    then = (START + timedelta(minutes=5)).isoformat()
    resp = await stack.outreach.get("/v1/outcomes", params={"as_of": then}, headers=marketing)
    assert resp.status_code == 200, resp.text
    [early] = resp.json()["groups"]
    assert early["key"] == RULE
    assert (early["treatment"]["customers"], early["control"]["customers"]) == (
        len(treated),
        len(control),
    )
    assert early["treatment"]["conversions"] == early["control"]["conversions"] == 0
    ahead = (clock.now() + timedelta(minutes=1)).isoformat()
    refused = await stack.outreach.get("/v1/outcomes", params={"as_of": ahead}, headers=marketing)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["query.as_of"]
