"""Customers greeted on their own holidays, and on dates they gave us, at 09:00 local: events
posted to ingest, scored by scoring (which carries the profile's country onto the card),
changes consumed by outreach, actions delivered to a real webhook — on the real broker and
database, with time driven by one :class:`FixedClock` (``POST /v1/ops/tick``)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from services.outreach.core.rule_pack import DEFAULT_PACK
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

SHANGHAI, TAIPEI, PARIS = (
    ZoneInfo("Asia/Shanghai"),
    ZoneInfo("Asia/Taipei"),
    ZoneInfo("Europe/Paris"),
)


@dataclass
class World:
    stack: Stack
    clock: FixedClock
    hook: WebhookReceiver


@pytest.fixture
async def world(settings: CommonSettings) -> AsyncIterator[World]:
    clock = FixedClock(datetime(2027, 1, 20, 12, tzinfo=UTC))
    async with WebhookReceiver() as hook:
        outreach = OutreachSettings(allow_private_webhooks=True)
        async with isolated_stack(settings, clock, outreach=outreach) as stack:
            await consumers_assigned(stack)
            await add_webhook_channel(stack, hook.url, hook.secret)
            yield World(stack, clock, hook)


# Ingest judges "in the future" by the wall clock, not the test's: profiles are written
# before the test's 2027 dates, whenever the test runs.
WRITTEN = datetime(2026, 11, 1, tzinfo=UTC)


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int) -> datetime:
    return datetime(year, month, day, hour, tzinfo=zone).astimezone(UTC)


def profile(cid: str, at: datetime, timezone: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "customer",
        "customer_id": cid,
        "name": cid.capitalize(),
        "email": f"{cid}@example.com",
        "timezone": timezone,
        "consent": {"email": True, "sms": False, "marketing": True},
        "occurred_at": at.isoformat(),
        **fields,
    }


def holiday_greeting() -> dict[str, Any]:
    rule = copy.deepcopy(next(r for r in DEFAULT_PACK if r["id"] == "holiday-greeting"))
    assert rule["action"]["channel"] == "webhook"
    return rule


async def schedule_due(stack: Stack, rule_id: str, customer_id: str) -> datetime | None:
    async with stack.engine.connect() as conn:
        due: datetime | None = await conn.scalar(
            text("SELECT due_at FROM outreach.schedule WHERE rule_id = :r AND customer_id = :c"),
            {"r": rule_id, "c": customer_id},
        )
    return due


async def greeted_once_at(world: World, rule_id: str, customer_id: str, due: datetime) -> None:
    """The schedule fires at ``due``, not a minute before, and not again that local day."""
    s, clock, hook = world.stack, world.clock, world.hook
    assert await schedule_due(s, rule_id, customer_id) == due
    clock.set(due - timedelta(minutes=1))
    assert await tick(s) == 0
    clock.set(due)
    before = len(hook.received)
    assert await tick(s) == 1
    received = (await hook.wait_for(before + 1))[-1]
    assert (received.payload["rule_id"], received.payload["customer_id"]) == (rule_id, customer_id)
    await until_status(s, customer_id, rule_id, "sent")
    clock.set(due + timedelta(hours=12))
    assert await tick(s) == 0
    await until(lambda: nothing_in_flight(s), what="delivery settling")
    assert len(hook.received) == before + 1


async def test_a_customer_in_china_is_greeted_on_the_spring_festival_at_nine_local(
    world: World,
) -> None:
    s = world.stack
    await add_rule(s, holiday_greeting())
    ids = await post_events(s, [profile("mei", WRITTEN, "Asia/Shanghai", country="CN")])
    await outreach_has_seen(s, ids)
    # 2027's Spring Festival is February 6; 09:00 in Shanghai is 01:00 UTC.
    due = local(SHANGHAI, 2027, 2, 6, 9)
    assert due == datetime(2027, 2, 6, 1, tzinfo=UTC)
    await greeted_once_at(world, "holiday-greeting", "mei", due)
    [action] = await actions_of(s, "mei")
    assert action.occurrence == "2027-02-06"
    # Next: the Lantern Festival, a fortnight later.
    assert await schedule_due(s, "holiday-greeting", "mei") == local(SHANGHAI, 2027, 2, 20, 9)


async def test_a_customer_in_china_is_wished_a_happy_mid_autumn_festival_by_name(
    world: World,
) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    clock.set(datetime(2027, 9, 1, 12, tzinfo=UTC))
    await add_rule(s, holiday_greeting())
    ids = await post_events(
        s,
        [
            profile("mei", WRITTEN, "Asia/Shanghai", country="CN"),
            profile("sam", WRITTEN, "Europe/Paris"),  # keeps no calendar: the rule's own dates
        ],
    )
    await outreach_has_seen(s, ids)
    await greeted_once_at(world, "holiday-greeting", "mei", local(SHANGHAI, 2027, 9, 15, 9))
    [greeting] = hook.received
    assert greeting.payload["subject"] == "Happy Mid-Autumn Festival"
    assert greeting.payload["body"] == "Happy Mid-Autumn Festival, Mei, from all of us."
    # Sam's Christmas greeting names no holiday (Mei's National Day and Double Ninth come
    # in between).
    for due in (
        local(SHANGHAI, 2027, 10, 1, 9),
        local(SHANGHAI, 2027, 10, 8, 9),
        local(PARIS, 2027, 12, 25, 9),
    ):
        clock.set(due)
        assert await tick(s) == 1
    received = await hook.wait_for(4)
    assert [(r.payload["customer_id"], r.payload["subject"]) for r in received[1:]] == [
        ("mei", "Happy National Day"),
        ("mei", "Happy Double Ninth Festival"),
        ("sam", "Season's greetings"),
    ]


async def test_a_zh_tw_customer_keeps_taiwans_holidays_not_chinas(world: World) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    clock.set(datetime(2027, 9, 30, 12, tzinfo=UTC))  # after Confucius' Birthday (09-28)
    await add_rule(s, holiday_greeting())
    at = WRITTEN
    ids = await post_events(
        s,
        [
            profile("lin", at, "Asia/Taipei", locale="zh-TW"),
            profile("wei", at, "Asia/Shanghai", country="CN"),
        ],
    )
    await outreach_has_seen(s, ids)
    # October 1 is China's National Day, not Taiwan's: only wei is greeted that morning.
    assert await schedule_due(s, "holiday-greeting", "wei") == local(SHANGHAI, 2027, 10, 1, 9)
    clock.set(local(SHANGHAI, 2027, 10, 1, 9))
    assert await tick(s) == 1
    [first] = await hook.wait_for(1)
    assert first.payload["customer_id"] == "wei"
    # And on October 8, the Double Ninth (China's calendar, not Taiwan's public holidays).
    assert await schedule_due(s, "holiday-greeting", "wei") == local(SHANGHAI, 2027, 10, 8, 9)
    clock.set(local(SHANGHAI, 2027, 10, 8, 9))
    assert await tick(s) == 1
    await hook.wait_for(2)
    await until(lambda: nothing_in_flight(s), what="delivery settling")
    assert await actions_of(s, "lin") == []
    assert {r.payload["customer_id"] for r in hook.received} == {"wei"}
    # Taiwan's National Day is October 10.
    await greeted_once_at(world, "holiday-greeting", "lin", local(TAIPEI, 2027, 10, 10, 9))
    [action] = await actions_of(s, "lin")
    assert action.occurrence == "2027-10-10"


async def test_a_greeting_on_a_date_attribute_fires_at_nine_in_the_customers_zone(
    world: World,
) -> None:
    s, clock = world.stack, world.clock
    assert s.outreach is not None
    clock.set(datetime(2027, 6, 10, 12, tzinfo=UTC))
    anniversary = {
        "id": "wedding-anniversary",
        "name": "Wedding anniversary",
        "trigger": {"type": "schedule", "kind": "anniversary", "since": "attributes.wedding"},
        "action": {
            "kind": "greeting",
            "channel": "webhook",
            "template": {"body": "Happy anniversary, {{ customer.name }}"},
        },
    }
    marketing = s.auth("marketing")
    # An attribute the shop has not declared a date cannot drive a schedule.
    refused = await s.outreach.post("/v1/rules", json=anniversary, headers=marketing)
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["body.trigger.since"]
    policy = {"attribute_types": {"wedding": "date", "shoe_size": "number"}}
    resp = await s.outreach.put("/v1/policy", json=policy, headers=marketing)
    assert resp.status_code == 200, resp.text
    await add_rule(s, anniversary)
    at = WRITTEN
    ids = await post_events(
        s,
        [
            profile("ana", at, "Europe/Paris", attributes={"wedding": "2015-06-20"}),
            profile("bob", at, "Europe/Paris", attributes={"wedding": "June, I think"}),
        ],
    )
    await outreach_has_seen(s, ids)
    # Not a date for bob: no schedule for him, and ana's still stands.
    assert await schedule_due(s, "wedding-anniversary", "bob") is None
    due = local(PARIS, 2027, 6, 20, 9)
    assert due == datetime(2027, 6, 20, 7, tzinfo=UTC)
    await greeted_once_at(world, "wedding-anniversary", "ana", due)
    assert await actions_of(s, "bob") == []


async def test_a_shop_adding_a_calendar_replans_its_customers_holiday_greetings(
    world: World,
) -> None:
    s, clock = world.stack, world.clock
    assert s.outreach is not None
    new_york = ZoneInfo("America/New_York")
    clock.set(datetime(2027, 6, 10, 12, tzinfo=UTC))
    await add_rule(s, holiday_greeting())
    ids = await post_events(s, [profile("sam", WRITTEN, "America/New_York", locale="en-US")])
    await outreach_has_seen(s, ids)
    # The shop keeps the US calendar for nobody yet: Sam has the rule's own dates.
    assert await schedule_due(s, "holiday-greeting", "sam") == local(new_york, 2027, 12, 25, 9)
    policy = {"calendars": {"countries": ["CN", "HK", "TW", "US"]}}
    resp = await s.outreach.put("/v1/policy", json=policy, headers=s.auth("marketing"))
    assert resp.status_code == 200, resp.text
    # Now Sam keeps the US holidays: Juneteenth comes first, with no change of Sam's.
    assert await schedule_due(s, "holiday-greeting", "sam") == local(new_york, 2027, 6, 19, 9)
