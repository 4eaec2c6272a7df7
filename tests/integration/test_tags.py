"""Tags from behaviour, end to end on the real broker and database: an order posted to ingest,
scored, a ``tag`` rule in outreach firing on the customer's first purchase, the tag travelling
back to scoring as a ``customer.tagged`` event on the events topic, kept apart from the
backend's own tags and listed with them — and tag rules that see their own tag changes do not
loop."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from services.outreach.core.rule_pack import TAG_RULES
from services.outreach.settings import OutreachSettings
from shared.clock import FixedClock
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.integration.conftest import wait_applied
from tests.support.kafka_io import read_all
from tests.support.pipeline import actions_of, add_rule, outreach_has_seen, post_events, until
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

START = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
async def stack(settings: CommonSettings, clock: FixedClock) -> AsyncIterator[Stack]:
    async with isolated_stack(settings, clock, outreach=OutreachSettings()) as s:
        yield s


def profile(cid: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "type": "customer",
        "customer_id": cid,
        "name": cid.title(),
        "email": f"{cid}@example.com",
        "consent": {"email": True, "marketing": True},
        "occurred_at": at.isoformat(),
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


def tag_rule(rule_id: str, conditions: dict[str, Any], **tags: list[str]) -> dict[str, Any]:
    """A rule that fires on a tag change (``customer.tagged``) and changes tags itself."""
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": {"type": "event", "event": "customer.tagged"},
        "conditions": conditions,
        "action": {"kind": "tag", "tags": tags},
    }


async def card_when(
    stack: Stack, cid: str, holds: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def shown() -> bool:
        resp = await stack.scoring.get(f"/v1/customers/{cid}", headers=stack.auth("ops"))
        if resp.status_code != 200:
            return False
        found.clear()
        found.update(resp.json())
        return holds(found)

    await until(shown, what=what)
    return found


async def listed(stack: Stack, tag: str) -> list[str]:
    resp = await stack.scoring.get("/v1/customers", params={"tag": tag}, headers=stack.auth("ops"))
    assert resp.status_code == 200, resp.text
    return sorted(item["customer_id"] for item in resp.json()["items"])


async def tag_events(stack: Stack, cid: str) -> list[dict[str, Any]]:
    """Every ``customer.tagged`` event of ``cid`` now on the events topic."""
    records = await read_all(stack.settings, Topics.from_settings(stack.settings).events)
    out = []
    for r in records:
        event = orjson.loads(r.value)
        if event["event_type"] == "customer.tagged" and event["customer_id"] == cid:
            out.append(event)
    return out


async def settled_tag_events(stack: Stack, cid: str, posted: list[str]) -> list[dict[str, Any]]:
    """The customer's tag events once no more are coming: outreach has applied the changes of
    the ``posted`` events and of every tag event published (each would have put the next one
    on the outbox in the same transaction), the outbox is empty, and the topic holds nothing
    new."""
    await outreach_has_seen(stack, posted)

    async def outbox_empty() -> bool:
        async with stack.engine.connect() as conn:
            return not await conn.scalar(text("SELECT count(*) FROM outreach.events_outbox"))

    seen = await tag_events(stack, cid)
    while True:
        ids = [e["event_id"] for e in seen]
        await wait_applied(stack.engine, ids)
        await outreach_has_seen(stack, ids)
        await until(outbox_empty, what="the events outbox published")
        now = await tag_events(stack, cid)
        if [e["event_id"] for e in now] == ids:
            return now
        seen = now


async def test_a_first_time_buyer_is_tagged_listed_and_keeps_the_tag_over_the_backends_tags(
    stack: Stack, clock: FixedClock
) -> None:
    for raw in TAG_RULES:
        await add_rule(stack, raw)
    posted = await post_events(
        stack,
        [
            profile("ada", START - timedelta(days=3), tags=["newsletter"]),
            profile("bob", START - timedelta(days=3), tags=["newsletter"]),
            order("ada", "o-1", START - timedelta(hours=1)),
        ],
    )

    card = await card_when(
        stack, "ada", lambda c: "first-purchase" in c["tags"], "ada tagged first-purchase"
    )
    assert card["stage"] == "new"
    assert card["rule_tags"] == ["first-purchase"]
    assert card["profile"]["tags"] == ["newsletter"]  # the backend's own, untouched
    assert card["tags"] == ["newsletter", "first-purchase"]
    assert await listed(stack, "first-purchase") == ["ada"]
    assert await listed(stack, "newsletter") == ["ada", "bob"]
    # Not a contact: no ledger row, no message.
    assert await actions_of(stack, "ada") == []
    (event,) = await settled_tag_events(stack, "ada", posted)
    assert event["data"]["add"] == ["first-purchase"]
    assert event["data"]["rule_id"] == "tag-first-purchase"
    assert event["source"] == "outreach"

    # The backend replaces its tags whole: the rule's tag stays.
    ids = await post_events(stack, [profile("ada", START, tags=["vip"])])
    await wait_applied(stack.engine, ids)
    card = await card_when(stack, "ada", lambda c: c["profile"]["tags"] == ["vip"], "new tags")
    assert card["tags"] == ["vip", "first-purchase"]
    assert card["rule_tags"] == ["first-purchase"]
    assert await listed(stack, "first-purchase") == ["ada"]
    assert await listed(stack, "vip") == ["ada"]
    assert await listed(stack, "newsletter") == ["bob"]

    # A second purchase day: no longer a first-time buyer, the untag rule takes it off.
    clock.advance(timedelta(days=2))
    await post_events(stack, [order("ada", "o-2", START + timedelta(days=2))])
    card = await card_when(
        stack, "ada", lambda c: "first-purchase" not in c["tags"], "first-purchase taken off"
    )
    assert card["stage"] == "growing"
    assert card["tags"] == ["vip"] and card["rule_tags"] == []
    assert await listed(stack, "first-purchase") == []
    assert await actions_of(stack, "ada") == []


async def test_tag_rules_fired_by_tag_changes_do_not_loop(stack: Stack) -> None:
    first = copy.deepcopy(next(r for r in TAG_RULES if r["id"] == "tag-first-purchase"))
    await add_rule(stack, first)
    # Fires on the first-purchase tag change, conditioned on the tag it sets itself: it adds
    # what is missing once, and its own change neither re-fires it nor changes anything.
    await add_rule(
        stack,
        tag_rule(
            "welcome", {"has_tag": "first-purchase"}, add=["first-purchase", "welcomed", "ping"]
        ),
    )
    # Two rules undoing each other's tag: each change would fire the other, forever, but a
    # chain of tag changes stops at its bound.
    await add_rule(stack, tag_rule("to-pong", {"has_tag": "ping"}, add=["pong"], remove=["ping"]))
    await add_rule(stack, tag_rule("to-ping", {"has_tag": "pong"}, add=["ping"], remove=["pong"]))
    posted = await post_events(
        stack,
        [profile("cy", START - timedelta(days=3)), order("cy", "o-1", START - timedelta(hours=1))],
    )

    events = await settled_tag_events(stack, "cy", posted)
    assert [(e["data"]["rule_id"], e["data"]["depth"]) for e in events] == [
        ("tag-first-purchase", 0),
        ("welcome", 1),
        ("to-pong", 2),
    ]
    assert events[1]["data"]["add"] == ["welcomed", "ping"]  # first-purchase was there
    card = await card_when(stack, "cy", lambda c: "pong" in c["tags"], "the chain's last tag")
    assert card["rule_tags"] == ["first-purchase", "pong", "welcomed"]
    assert await actions_of(stack, "cy") == []
