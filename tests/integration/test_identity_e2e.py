"""One person, two records, through the whole pipeline: a web id with an email, and a store id
that later brings the same verified email (merged automatically), or an operator's merge. The
person ends with one card over both histories (the tier of a customer who had them all), one
birthday greeting, one frequency cap over both records' contacts, and one erasure forgets
them under every id. Posted to ingest, scored, decided and delivered to a real receiver, on
the real broker and database; time moves only when the test says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from services.ingest.settings import IngestSettings
from services.outreach.settings import OutreachSettings
from shared.clock import FixedClock
from shared.settings import CommonSettings
from tests.support.pipeline import (
    actions_of,
    add_rule,
    add_webhook_channel,
    consumers_assigned,
    nothing_in_flight,
    outreach_has_seen,
    post_events,
    tick,
    until,
    until_status,
)
from tests.support.receivers import WebhookReceiver
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

# Noon in Paris, far from quiet hours; the birthday is nine days later.
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
BIRTHDAY_NINE = datetime(2026, 6, 10, 9, 0, tzinfo=PARIS).astimezone(UTC)
EMAIL = "ada@example.com"


@dataclass
class World:
    stack: Stack
    clock: FixedClock
    hook: WebhookReceiver


@pytest.fixture
async def world(settings: CommonSettings) -> AsyncIterator[World]:
    clock = FixedClock(T0)
    async with (
        WebhookReceiver() as hook,
        isolated_stack(
            settings,
            clock,
            outreach=OutreachSettings(allow_private_webhooks=True),
            ingest_settings=IngestSettings(auto_merge="email"),
        ) as stack,
    ):
        await consumers_assigned(stack)
        await add_webhook_channel(stack, hook.url, hook.secret)
        for rule_id, trigger, kind in (
            ("birthday", {"type": "schedule", "kind": "birthday", "at": "09:00"}, "greeting"),
            ("visit-thanks", {"type": "event", "event": "visit.recorded"}, "follow_up"),
        ):
            await add_rule(
                stack,
                {
                    "id": rule_id,
                    "name": rule_id,
                    "trigger": trigger,
                    "action": {
                        "kind": kind,
                        "channel": "webhook",
                        "template": {"subject": kind, "body": "Hello {{ customer.name }}"},
                    },
                },
            )
        yield World(stack, clock, hook)


def profile(cid: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "type": "customer",
        "customer_id": cid,
        "name": "Ada",
        "birthday": "1990-06-10",
        "timezone": "Europe/Paris",
        "consent": {"email": True, "sms": False, "marketing": True},
        "occurred_at": at.isoformat(),
        **fields,
    }


def order(cid: str, oid: str, at: datetime, amount: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "order",
        "order_id": oid,
        "customer_id": cid,
        "status": "paid",
        "amount": amount,
        "currency": "USD",
        "occurred_at": at.isoformat(),
        **fields,
    }


def visit(cid: str, vid: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "visit",
        "visit_id": vid,
        "customer_id": cid,
        "channel": "web",
        "occurred_at": at.isoformat(),
    }


async def card(stack: Stack, cid: str) -> httpx.Response:
    return await stack.scoring.get(f"/v1/customers/{cid}", headers=stack.auth("ops"))


@pytest.mark.parametrize("how", ["automatic", "explicit"])
async def test_two_records_of_one_person_become_one_card_one_greeting_one_cap_one_erasure(
    world: World, how: str
) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    web, store, twin = f"web-{how}", f"store-{how}", f"twin-{how}"
    day = timedelta(days=1)
    # Two records, each with an order and a visit the shop thanked for: two contacts.
    # The web record is the one ingest saw first: it survives an automatic merge.
    ids = await post_events(
        s,
        [profile(web, T0 - 40 * day, email=EMAIL), order(web, f"o1-{how}", T0 - 30 * day, "40.00")],
    )
    ids += await post_events(
        s,
        [
            profile(store, T0 - 25 * day),
            order(store, f"o2-{how}", T0 - 20 * day, "60.00"),
            visit(web, f"v1-{how}", T0),
            visit(store, f"v2-{how}", T0),
            # The same three orders under one id: the card the person should end with.
            profile(twin, T0 - 40 * day),
            order(twin, f"t1-{how}", T0 - 30 * day, "40.00"),
            order(twin, f"t2-{how}", T0 - 20 * day, "60.00"),
            order(twin, f"t3-{how}", T0 - 10 * day, "30.00"),
        ],
    )
    await outreach_has_seen(s, ids)
    await until_status(s, web, "visit-thanks", "sent")
    await until_status(s, store, "visit-thanks", "sent")

    # Later the store record orders again: with the same verified email (automatic), or
    # after an operator merged the two.
    third = order(store, f"o3-{how}", T0 - 10 * day, "30.00")
    if how == "automatic":
        third["identifiers"] = [{"kind": "email", "value": "Ada@Example.com", "verified": True}]
    else:
        resp = await s.ingest.post(
            f"/v1/customers/{web}/merge",
            json={"from": [store], "reason": "same person, by phone"},
            headers=s.auth("ops"),
        )
        assert resp.status_code == 202, resp.text
    [third_id] = await post_events(s, [third])
    await outreach_has_seen(s, [third_id])

    async def merged() -> dict[str, Any] | None:
        resp = await card(s, web)
        body: dict[str, Any] = resp.json()
        assert resp.status_code == 200, resp.text
        return body if body["value"]["orders"] == 3 else None

    person = await until(merged, what="one card over both histories")
    resp = await card(s, store)
    assert resp.status_code == 301 and resp.json()["survivor_id"] == web
    assert resp.headers["location"].endswith(f"/v1/customers/{web}")
    alike = (await card(s, twin)).json()
    assert person["value"] == alike["value"]
    assert (person["tier"], person["stage"]) == (alike["tier"], alike["stage"])

    # A third visit, under the store id: the cap (2 in 7 days) counts both records' thanks.
    [visit_id] = await post_events(s, [visit(store, f"v3-{how}", T0)])
    await outreach_has_seen(s, [visit_id])

    async def capped() -> bool:
        rows = [r for r in await actions_of(s, web) if r.rule_id == "visit-thanks"]
        return any(r.reason == "frequency_cap" for r in rows)

    await until(capped, what="the third thanks held by the cap")
    assert await actions_of(s, store) == []  # every action is the person's now

    # Both records had the same birthday: one greeting, at nine in Paris.
    clock.set(BIRTHDAY_NINE)
    await tick(s)
    await until_status(s, web, "birthday", "sent")
    clock.set(BIRTHDAY_NINE + timedelta(hours=3))
    await tick(s)
    await until(lambda: nothing_in_flight(s), what="delivery settling")
    greetings = [
        r.payload["customer_id"]
        for r in hook.received
        if r.payload["rule_id"] == "birthday" and r.payload["customer_id"] != twin
    ]
    assert greetings == [web]
    assert [r.rule_id for r in await actions_of(s, web)].count("birthday") == 1

    # One erasure, asked under either id, forgets the person under both.
    resp = await s.ingest.delete(f"/v1/customers/{store}", headers=s.auth("ops"))
    assert resp.status_code == 202, resp.text
    assert set(resp.json()["erased_ids"]) >= {web, store}

    async def forgotten() -> bool:
        gone = [(await card(s, cid)).status_code for cid in (web, store)]
        return gone == [404, 404]

    await until(forgotten, what="both ids erased in scoring")

    async def anonymised() -> bool:
        # Outreach keeps what it did, under an anonymous id, and nothing under either of hers.
        return await actions_of(s, web) == [] and await actions_of(s, store) == []

    await until(anonymised, what="the person's actions anonymised in outreach")
    assert (await card(s, twin)).status_code == 200  # nobody else
