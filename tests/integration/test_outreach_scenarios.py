"""Acceptance scenarios of outreach, end to end: events posted to ingest, scored by scoring,
changes consumed by outreach, actions decided under the contact policy and delivered to a real
webhook endpoint or SMTP server — on the real broker and database, each test on a Tend of its
own, with time driven by one :class:`FixedClock` that scoring and outreach share.

Time moves only when a test says so: scoring's stages through ``POST /v1/ops/sweep``, outreach's
schedules and deferrals through ``POST /v1/ops/tick``. Waiting is polling the ledger, the
receivers or the consumer group's offsets, never sleeping for wall time.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import text

from services.outreach.core.rule_pack import DEFAULT_PACK
from services.outreach.core.unsubscribe import unsubscribe_url
from services.outreach.settings import OutreachSettings
from shared.clock import FixedClock
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all
from tests.support.pipeline import (
    actions_of,
    add_rule,
    add_webhook_channel,
    consumers_assigned,
    nothing_in_flight,
    outreach_caught_up,
    outreach_has_seen,
    post_events,
    scoring_op,
    statuses,
    tick,
    until,
    until_status,
)
from tests.support.receivers import SmtpReceiver, WebhookReceiver
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

# 10:00 UTC is 12:00 in Paris in June: far from quiet hours.
T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


@dataclass
class World:
    stack: Stack
    clock: FixedClock
    hook: WebhookReceiver
    smtp: SmtpReceiver


@pytest.fixture
async def world(settings: CommonSettings) -> AsyncIterator[World]:
    """A Tend of the test's own, a webhook channel to a real receiver, and a real SMTP server
    that outreach's email channel sends to."""
    clock = FixedClock(T0)
    async with WebhookReceiver() as hook, SmtpReceiver() as smtp:
        outreach = OutreachSettings(
            allow_private_webhooks=True, smtp_host="127.0.0.1", smtp_port=smtp.port
        )
        async with isolated_stack(settings, clock, outreach=outreach) as stack:
            await consumers_assigned(stack)
            await add_webhook_channel(stack, hook.url, hook.secret)
            yield World(stack, clock, hook, smtp)


# -- what the tests post ----------------------------------------------------------------------


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A local wall time in ``zone`` as a UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


def profile(
    cid: str,
    at: datetime,
    *,
    timezone: str = "Europe/Paris",
    email_consent: bool = True,
    **fields: Any,
) -> dict[str, Any]:
    return {
        "type": "customer",
        "customer_id": cid,
        "name": cid.capitalize(),
        "email": f"{cid}@example.com",
        "timezone": timezone,
        "consent": {"email": email_consent, "sms": False, "marketing": True},
        "occurred_at": at.isoformat(),
        **fields,
    }


def order(cid: str, oid: str, at: datetime, amount: str) -> dict[str, Any]:
    return {
        "type": "order",
        "order_id": oid,
        "customer_id": cid,
        "status": "paid",
        "amount": amount,
        "currency": "USD",
        "occurred_at": at.isoformat(),
    }


def complaint(cid: str, kid: str, status: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "complaint",
        "complaint_id": kid,
        "customer_id": cid,
        "status": status,
        "severity": "high",
        "occurred_at": at.isoformat(),
    }


def visit(cid: str, vid: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "type": "visit",
        "visit_id": vid,
        "customer_id": cid,
        "channel": "web",
        "occurred_at": at.isoformat(),
        **fields,
    }


def rule(
    rule_id: str,
    trigger: dict[str, Any],
    *,
    kind: str = "follow_up",
    channel: str = "webhook",
    priority: int = 10,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": trigger,
        "priority": priority,
        "action": {
            "kind": kind,
            "channel": channel,
            "template": {
                "subject": f"{kind} for {{{{ card.customer_id }}}}",
                "body": "Hello {{ customer.name or 'there' }}\nUnsubscribe: {{ unsubscribe_url }}",
            },
        },
        **extra,
    }


VISIT_RULE = {"type": "event", "event": "visit.recorded"}


async def schedule_due(stack: Stack, rule_id: str, customer_id: str) -> datetime | None:
    async with stack.engine.connect() as conn:
        due: datetime | None = await conn.scalar(
            text("SELECT due_at FROM outreach.schedule WHERE rule_id = :r AND customer_id = :c"),
            {"r": rule_id, "c": customer_id},
        )
    return due


async def action_count(stack: Stack) -> int:
    async with stack.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM outreach.actions")) or 0)


async def settled(world: World) -> None:
    """Until no action is pending (what the receivers hold is final until time moves)."""
    await until(lambda: nothing_in_flight(world.stack), what="delivery settling")


# -- 1. a churned key customer gets exactly one win-back ---------------------------------------


async def test_a_churned_key_customer_gets_exactly_one_winback(world: World) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    winback = copy.deepcopy(next(r for r in DEFAULT_PACK if r["id"] == "winback-churned"))
    winback["action"]["channel"] = "webhook"
    await add_rule(s, winback)

    # A key customer buying every 10 days, and 19 others who spend far less and buy every
    # ~59 days (the population's median gap), so nobody else is due to move for months.
    events = [
        profile("vip", T0 - timedelta(days=60)),
        order("vip", "vip-1", T0 - timedelta(days=20), "800.00"),
        order("vip", "vip-2", T0 - timedelta(days=10), "800.00"),
        order("vip", "vip-3", T0 - timedelta(hours=1), "800.00"),
    ]
    for i in range(19):
        cid = f"c{i:02d}"
        amount = f"{10 * (i + 1)}.00"
        events += [
            profile(cid, T0 - timedelta(days=60)),
            order(cid, f"{cid}-0", T0 - timedelta(days=60), amount),
            order(cid, f"{cid}-1", T0 - timedelta(days=1), amount),
        ]
    await outreach_has_seen(s, await post_events(s, events))

    refit = await scoring_op(s, "refit")
    assert refit["customers"] == 20
    card = (await s.scoring.get("/v1/customers/vip", headers=s.auth("ops"))).json()
    assert (card["tier"], card["stage"]) == ("key", "growing")

    # Silent past the decline point: declining, which the win-back ignores.
    clock.set(datetime.fromisoformat(card["next_transition_at"]) + timedelta(hours=10))
    assert (await scoring_op(s, "sweep"))["moved"] == 1
    card = (await s.scoring.get("/v1/customers/vip", headers=s.auth("ops"))).json()
    assert card["stage"] == "declining"

    # Past the churn point: one `cause: time` change to churned, one win-back.
    clock.set(datetime.fromisoformat(card["next_transition_at"]) + timedelta(hours=10))
    assert (await scoring_op(s, "sweep"))["moved"] == 1
    [received] = await hook.wait_for(1)
    assert received.verified
    assert received.payload["customer_id"] == "vip"
    assert received.payload["rule_id"] == "winback-churned"
    assert received.payload["kind"] == "winback"
    assert received.payload["offer"]["code"] == "COMEBACK15"
    action = await until_status(s, "vip", "winback-churned", "sent")
    assert received.webhook_id == action.id

    topic = Topics.from_settings(s.settings).changes
    records = await read_all(s.settings.kafka_bootstrap_servers, topic)
    churns = [
        r
        for r in records
        if (c := orjson.loads(r.value))["cause"] == "time"
        and c["customer_id"] == "vip"
        and (c["stage_change"] or {}).get("to") == "churned"
    ]
    assert len(churns) == 1
    change = orjson.loads(churns[0].value)
    assert change["stage_change"]["from"] == "declining"
    assert change["card"]["tier"] == "key"
    assert action.occurrence == f"churned@{change['card']['stage_since'][:10]}"

    # Nothing decides it again: another sweep, a tick, the same change delivered twice more.
    assert (await scoring_op(s, "sweep"))["moved"] == 0
    assert await tick(s) == 0
    producer = await start_producer(s.settings)
    try:
        again = Record(topic, churns[0].key, churns[0].value)
        await publish_many(producer, [again, again], timeout=10)
    finally:
        await producer.stop()
    await outreach_caught_up(s)
    await settled(world)
    assert await action_count(s) == 1
    assert await statuses(s, "vip") == {"winback-churned": ("sent", None)}
    assert len(hook.received) == 1


# -- 2. an apology at once; a due recall held until the complaint is resolved ------------------


async def test_a_complaint_gets_an_apology_and_holds_the_recall_until_resolved(
    world: World,
) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    await add_rule(
        s,
        rule(
            "recall",
            {
                "type": "schedule",
                "kind": "days_after",
                "since": "value.last_order_at",
                "rhythm_multiple": 1.5,
            },
            kind="recall",
            priority=50,
        ),
    )
    await add_rule(
        s,
        rule(
            "apology",
            {"type": "event", "event": "complaint.opened", "filters": {"eq": ["severity", "high"]}},
            kind="apology",
            priority=100,
        ),
    )
    ids = await post_events(
        s,
        [
            profile("ada", T0 - timedelta(days=60)),
            order("ada", "o-1", T0 - timedelta(days=20), "40.00"),
            order("ada", "o-2", T0 - timedelta(days=10), "40.00"),
            order("ada", "o-3", T0 - timedelta(hours=1), "40.00"),
        ],
    )
    await outreach_has_seen(s, ids)
    # A 10-day rhythm: the recall is due 15 days after the last order, at 09:00 in Paris.
    recall_due = local(PARIS, 2026, 6, 16, 9, 0)
    assert recall_due == datetime(2026, 6, 16, 7, 0, tzinfo=UTC)
    assert await schedule_due(s, "recall", "ada") == recall_due

    clock.set(T0 + timedelta(days=1))
    await outreach_has_seen(
        s, await post_events(s, [complaint("ada", "k-1", "opened", clock.now())])
    )
    [apology] = await hook.wait_for(1)
    assert apology.verified
    assert apology.payload["kind"] == "apology"
    await until_status(s, "ada", "apology", "sent")

    clock.set(recall_due - timedelta(minutes=1))
    assert await tick(s) == 0
    clock.set(recall_due)
    assert await tick(s) == 1
    held = await until_status(s, "ada", "recall", "held")
    assert held.reason == "open_complaint"
    await settled(world)
    assert len(hook.received) == 1

    clock.set(recall_due + timedelta(hours=1))
    ids = await post_events(s, [complaint("ada", "k-1", "resolved", clock.now())])
    await outreach_has_seen(s, ids)
    [_, recall] = await hook.wait_for(2)
    assert recall.verified
    assert recall.payload["kind"] == "recall"
    assert recall.payload["rule_id"] == "recall"
    await until_status(s, "ada", "recall", "sent")

    clock.set(recall_due + timedelta(days=1))
    assert await tick(s) == 0
    await settled(world)
    # Sent once the complaint was resolved: why it waited is still on the ledger.
    assert await statuses(s, "ada") == {
        "apology": ("sent", None),
        "recall": ("sent", "open_complaint"),
    }
    assert len(hook.received) == 2
    ops = s.auth("ops")
    assert s.outreach is not None
    held = await s.outreach.get("/v1/actions", params={"reason": "open_complaint"}, headers=ops)
    assert [(a["rule_id"], a["status"]) for a in held.json()["items"]] == [("recall", "sent")]
    per_rule = await s.outreach.get("/v1/actions/summary", params={"by": "rule"}, headers=ops)
    assert {
        (r["rule_id"], r["status"], r["reason"], r["count"]) for r in per_rule.json()["rows"]
    } == {
        ("apology", "sent", None, 1),
        ("recall", "sent", "open_complaint", 1),
    }


# -- 3. greetings at 09:00 local, DST days included; quiet hours defer to 08:00 ----------------


async def _once_at(world: World, rule_id: str, customer_id: str, due: datetime) -> None:
    """The schedule fires at ``due`` and never again: not a minute before, not later that
    local day, not the next day."""
    s, clock, hook = world.stack, world.clock, world.hook
    assert await schedule_due(s, rule_id, customer_id) == due
    clock.set(due - timedelta(minutes=1))
    assert await tick(s) == 0
    assert await actions_of(s, customer_id) == []
    clock.set(due)
    assert await tick(s) == 1
    [received] = await hook.wait_for(1)
    assert received.payload["rule_id"] == rule_id
    assert received.payload["customer_id"] == customer_id
    await until_status(s, customer_id, rule_id, "sent")
    for later in (timedelta(hours=12), timedelta(days=1), timedelta(days=1, hours=12)):
        clock.set(due + later)
        assert await tick(s) == 0
    await settled(world)
    assert len(hook.received) == 1
    assert len(await actions_of(s, customer_id)) == 1


async def test_a_birthday_greeting_fires_once_at_nine_in_paris_on_the_spring_forward_day(
    world: World,
) -> None:
    s, clock = world.stack, world.clock
    clock.set(datetime(2026, 3, 20, 12, 0, tzinfo=UTC))
    await add_rule(
        s,
        rule(
            "birthday",
            {"type": "schedule", "kind": "birthday", "at": "09:00"},
            kind="greeting",
        ),
    )
    ids = await post_events(
        s, [profile("bea", clock.now() - timedelta(hours=1), birthday="1990-03-29")]
    )
    await outreach_has_seen(s, ids)
    # Clocks go forward at 02:00 that morning: 09:00 CEST is 07:00 UTC.
    due = local(PARIS, 2026, 3, 29, 9, 0)
    assert due == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    await _once_at(world, "birthday", "bea", due)
    [action] = await actions_of(s, "bea")
    assert action.occurrence == "2026-03-29"


async def test_a_customer_added_after_nine_on_their_birthday_is_greeted_that_day_once(
    world: World,
) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    clock.set(local(PARIS, 2026, 5, 17, 10, 0))  # 10:00 in Paris on the birthday
    await add_rule(
        s,
        rule("birthday", {"type": "schedule", "kind": "birthday", "at": "09:00"}, kind="greeting"),
    )
    ids = await post_events(s, [profile("ada", clock.now(), birthday="1990-05-17")])
    await outreach_has_seen(s, ids)
    # Today's 09:00 passed minutes before the customer arrived: due at once, not next year.
    assert await schedule_due(s, "birthday", "ada") == local(PARIS, 2026, 5, 17, 9, 0)
    assert await tick(s) == 1
    [received] = await hook.wait_for(1)
    assert received.payload["rule_id"] == "birthday"
    await until_status(s, "ada", "birthday", "sent")
    # Another change that day finds the same instant again: the day's key decides nothing new.
    ids = await post_events(s, [profile("ada", clock.now() + timedelta(minutes=5), name="Ada L")])
    await outreach_has_seen(s, ids)
    clock.set(clock.now() + timedelta(minutes=10))
    assert await tick(s) == 0
    assert await schedule_due(s, "birthday", "ada") == local(PARIS, 2027, 5, 17, 9, 0)
    await settled(world)
    assert len(hook.received) == 1


async def test_a_schedule_preview_lists_who_is_due_and_when_and_runs_at_any_instant(
    world: World,
) -> None:
    s = world.stack
    assert s.outreach is not None
    birthday = rule("birthday", {"type": "schedule", "kind": "birthday"}, kind="greeting")
    await add_rule(s, birthday)
    ids = await post_events(
        s,
        [
            profile("soon", T0 - timedelta(days=1), birthday="1990-06-10"),
            profile("later", T0 - timedelta(days=1), birthday="1985-08-20"),
            profile("past", T0 - timedelta(days=1), birthday="1979-05-01"),
            profile("none", T0 - timedelta(days=1)),
        ],
    )
    await outreach_has_seen(s, ids)
    marketing = s.auth("marketing")  # a dry run is marketing's to run too

    async def preview(**params: Any) -> dict[str, Any]:
        assert s.outreach is not None
        resp = await s.outreach.post("/v1/rules/birthday/preview", params=params, headers=marketing)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    month = await preview()
    assert (month["matched"], month["within_days"]) == (1, 30)
    assert [(u["customer_id"], u["due_at"], u["outcome"]) for u in month["upcoming"]] == [
        ("soon", "2026-06-10T07:00:00Z", "send")  # 09:00 in Paris
    ]
    quarter = await preview(within_days=90)
    assert [u["customer_id"] for u in quarter["upcoming"]] == ["soon", "later"]
    # As at mid-August: the next birthdays from then.
    august = await preview(at="2026-08-15T00:00:00Z")
    assert [u["customer_id"] for u in august["upcoming"]] == ["later"]

    # An unsaved event rule, dry-run at 23:00 in Paris: quiet hours defer it.
    visit_rule = rule("visit-mail", VISIT_RULE, kind="follow_up")
    night = await s.outreach.post(
        "/v1/rules/preview",
        params={"at": "2026-06-01T21:00:00Z"},
        json=visit_rule,
        headers=marketing,
    )
    assert night.status_code == 200, night.text
    assert night.json()["as_of"] == "2026-06-01T21:00:00Z"
    assert night.json()["reasons"] == {"quiet_hours": 4}


async def test_a_recall_saved_today_reaches_customers_overdue_within_its_catch_up_once(
    world: World,
) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    ids = await post_events(
        s,
        [
            profile("recent", T0 - timedelta(days=100)),
            order("recent", "r-1", T0 - timedelta(days=50), "40.00"),  # recall due 20 days ago
            profile("long-ago", T0 - timedelta(days=200)),
            order("long-ago", "l-1", T0 - timedelta(days=90), "40.00"),  # due 60 days ago
        ],
    )
    await outreach_has_seen(s, ids)
    recall = {"type": "schedule", "kind": "days_after", "days": 30, "catch_up_days": 30}
    await add_rule(s, rule("recall", recall, kind="recall"))
    assert await schedule_due(s, "recall", "recent") is not None
    assert await schedule_due(s, "recall", "long-ago") is None
    assert await tick(s) == 1
    [received] = await hook.wait_for(1)
    assert (received.payload["rule_id"], received.payload["customer_id"]) == ("recall", "recent")
    await settled(world)
    for later in (timedelta(hours=1), timedelta(days=1)):
        clock.set(T0 + later)
        assert await tick(s) == 0
    assert len(hook.received) == 1


async def test_a_holiday_greeting_fires_once_at_nine_in_new_york_on_the_fall_back_day(
    world: World,
) -> None:
    s, clock = world.stack, world.clock
    clock.set(datetime(2026, 10, 25, 16, 0, tzinfo=UTC))
    await add_rule(
        s,
        rule(
            "holidays",
            {
                "type": "schedule",
                "kind": "calendar",
                "name": "holidays",
                "dates": ["11-01", "12-25"],
                "at": "09:00",
            },
            kind="greeting",
        ),
    )
    ids = await post_events(
        s, [profile("nick", clock.now() - timedelta(hours=1), timezone="America/New_York")]
    )
    await outreach_has_seen(s, ids)
    # Clocks go back at 02:00 that morning: 09:00 EST is 14:00 UTC.
    due = local(NEW_YORK, 2026, 11, 1, 9, 0)
    assert due == datetime(2026, 11, 1, 14, 0, tzinfo=UTC)
    await _once_at(world, "holidays", "nick", due)
    [action] = await actions_of(s, "nick")
    assert action.occurrence == "2026-11-01"


@pytest.mark.parametrize(
    ("timezone", "visited", "ends"),
    [
        # An ordinary summer night in Paris.
        ("Europe/Paris", (2026, 6, 10, 22, 30), datetime(2026, 6, 11, 6, 0, tzinfo=UTC)),
        # The night clocks go forward in Paris: 22:30 CET, then 08:00 CEST.
        ("Europe/Paris", (2026, 3, 28, 22, 30), datetime(2026, 3, 29, 6, 0, tzinfo=UTC)),
        # The night clocks go back in New York: 22:30 EDT, then 08:00 EST.
        ("America/New_York", (2026, 10, 31, 22, 30), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
    ],
    ids=["paris-summer", "paris-spring-forward", "new-york-fall-back"],
)
async def test_quiet_hours_defer_an_evening_visit_follow_up_to_eight_local(
    world: World, timezone: str, visited: tuple[int, ...], ends: datetime
) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    zone = ZoneInfo(timezone)
    at = local(zone, *visited)
    next_day = date(*visited[:3]) + timedelta(days=1)
    assert ends == local(zone, next_day.year, next_day.month, next_day.day, 8, 0)
    clock.set(at)
    await add_rule(s, rule("visit-thanks", VISIT_RULE, kind="follow_up"))
    ids = await post_events(
        s, [profile("vic", at - timedelta(days=1), timezone=timezone), visit("vic", "v-1", at)]
    )
    await outreach_has_seen(s, ids)
    [action] = await actions_of(s, "vic")
    assert (action.status, action.reason) == ("scheduled", "quiet_hours")
    assert action.not_before == ends

    clock.set(ends - timedelta(minutes=1))
    assert await tick(s) == 0
    await settled(world)
    assert hook.received == []
    assert await statuses(s, "vic") == {"visit-thanks": ("scheduled", "quiet_hours")}

    clock.set(ends)
    await tick(s)
    [received] = await hook.wait_for(1)
    assert received.payload["rule_id"] == "visit-thanks"
    await until_status(s, "vic", "visit-thanks", "sent")
    await settled(world)
    assert len(hook.received) == 1


# -- 4. ten matching triggers under a cap of 2: exactly 2 sent, by priority ---------------------


def _winners(hook: WebhookReceiver) -> set[str]:
    return {r.payload["rule_id"] for r in hook.received}


async def _two_sent(
    world: World, customer_id: str, decided: int
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """Until ``decided`` actions exist and 2 are delivered; the rest are suppressed by the
    cap. Returns the statuses by (rule, occurrence)."""
    s = world.stack

    async def all_decided() -> bool:
        return len(await actions_of(s, customer_id)) >= decided

    await until(all_decided, what=f"{decided} decisions")
    await world.hook.wait_for(2)
    await settled(world)
    rows = await actions_of(s, customer_id)
    assert len(rows) == decided, rows
    by = {(r.rule_id, r.occurrence): (r.status, r.reason) for r in rows}
    sent = [k for k, v in by.items() if v[0] == "sent"]
    others = [v for v in by.values() if v[0] != "sent"]
    assert len(sent) == 2, by
    # The others are dropped, or (a kind that may wait: announcements, up to 7 days) wait for
    # the slot the cap frees next week.
    assert all(
        (v[0] == "suppressed" and v[1] in ("lower_priority", "frequency_cap"))
        or v == ("scheduled", "frequency_cap")
        for v in others
    ), by
    assert len(world.hook.received) == 2
    return by


async def test_ten_rules_on_one_event_under_a_cap_of_two_send_the_two_highest(
    world: World,
) -> None:
    s = world.stack
    for p in range(1, 11):
        await add_rule(s, rule(f"p{p:02d}", VISIT_RULE, priority=p))
    ids = await post_events(s, [profile("cap", T0 - timedelta(days=1)), visit("cap", "v-1", T0)])
    await outreach_has_seen(s, ids)
    by = await _two_sent(world, "cap", 10)
    assert _winners(world.hook) == {"p10", "p09"}
    assert {r for (r, _), (status, _) in by.items() if status == "sent"} == {"p10", "p09"}
    assert {reason for status, reason in by.values() if status == "suppressed"} == {
        "lower_priority"
    }


async def test_the_cap_postpones_a_winback_to_its_free_slot_and_it_goes_out_then(
    world: World,
) -> None:
    s, clock, hook = world.stack, world.clock, world.hook
    assert s.outreach is not None
    policy = {"frequency_cap": {"count": 1, "days": 7}, "default_timezone": "Europe/Paris"}
    resp = await s.outreach.put("/v1/policy", json=policy, headers=s.auth("marketing"))
    assert resp.status_code == 200, resp.text
    await add_rule(s, rule("recall-now", VISIT_RULE, kind="recall", priority=9))
    await add_rule(s, rule("greet-today", VISIT_RULE, kind="greeting", priority=5))
    await add_rule(s, rule("winback-later", VISIT_RULE, kind="winback", priority=1))
    ids = await post_events(s, [profile("kim", T0 - timedelta(days=1)), visit("kim", "v-1", T0)])
    await outreach_has_seen(s, ids)
    # One a week: the recall goes now; the greeting belongs to its day and is dropped; the
    # win-back waits for the slot the recall frees in 7 days (its kind waits up to 14).
    [first] = await hook.wait_for(1)
    assert first.payload["rule_id"] == "recall-now"
    await until_status(s, "kim", "recall-now", "sent")
    waiting = await until_status(s, "kim", "winback-later", "scheduled")
    assert (waiting.reason, waiting.not_before) == ("frequency_cap", T0 + timedelta(days=7))
    assert (await statuses(s, "kim"))["greet-today"] == ("suppressed", "lower_priority")

    clock.set(T0 + timedelta(days=7) - timedelta(minutes=1))
    await tick(s)
    await settled(world)
    assert len(hook.received) == 1
    clock.set(T0 + timedelta(days=7))
    await tick(s)
    [_, later] = await hook.wait_for(2)
    assert later.payload["rule_id"] == "winback-later"
    sent = await until_status(s, "kim", "winback-later", "sent")
    assert sent.reason == "frequency_cap"  # why it waited stays on the ledger


async def test_a_rule_sends_through_the_channel_it_names_and_the_others_through_the_current(
    world: World,
) -> None:
    s, hook = world.stack, world.hook  # `receiver`, the world's channel: created first
    assert s.outreach is not None
    async with WebhookReceiver() as team:
        resp = await s.outreach.post(
            "/v1/channels",
            headers=s.auth("marketing"),
            json={
                "id": "team-alerts",
                "kind": "webhook",
                "config": {"url": team.url},
                "secret": team.secret,
            },
        )
        assert resp.status_code == 201, resp.text
        alert = rule("alert", VISIT_RULE, kind="care", priority=9)
        alert["action"]["channel_id"] = "team-alerts"
        await add_rule(s, alert)
        thanks = rule("thanks", VISIT_RULE, kind="care", priority=1)
        thanks["action"]["channel_id"] = "receiver"
        await add_rule(s, thanks)
        # A rule naming a channel that is not there, or of another kind, is refused.
        bad = rule("bad", VISIT_RULE)
        bad["action"]["channel_id"] = "nowhere"
        resp = await s.outreach.post("/v1/rules", json=bad, headers=s.auth("marketing"))
        assert resp.status_code == 422, resp.text
        assert [e["field"] for e in resp.json()["errors"]] == ["body.action.channel_id"]

        ids = await post_events(
            s, [profile("lea", T0 - timedelta(days=1)), visit("lea", "v-1", T0)]
        )
        await outreach_has_seen(s, ids)
        [to_team] = await team.wait_for(1)
        [to_crm] = await hook.wait_for(1)
        assert (to_team.payload["rule_id"], to_crm.payload["rule_id"]) == ("alert", "thanks")
        assert to_team.verified and to_crm.verified
        await settled(world)
        assert (len(team.received), len(hook.received)) == (1, 1)


async def test_every_complaint_is_answered_and_the_team_told_whatever_the_hour_or_consent(
    world: World,
) -> None:
    s, clock, hook, smtp = world.stack, world.clock, world.hook, world.smtp
    assert s.outreach is not None
    for raw in DEFAULT_PACK:
        if raw["id"].startswith("complaint-"):
            # The world's clock stands in June while ingest records the events now: these
            # complaints are live here, not a history loaded later.
            trigger = {k: v for k, v in raw["trigger"].items() if k != "recorded_within_days"}
            await add_rule(s, {**raw, "trigger": trigger})
    night = local(PARIS, 2026, 6, 1, 23, 30)
    clock.set(night)
    low = {**complaint("ann", "k-1", "opened", night), "severity": "low"}
    ids = await post_events(
        s,
        [
            profile("ann", night - timedelta(days=1)),
            profile("bob", night - timedelta(days=1), email_consent=False),
            low,
            complaint("bob", "k-2", "opened", night),  # high severity
        ],
    )
    await outreach_has_seen(s, ids)
    # The team hears of both at once: no consent, quiet hours or cap stands in its way.
    alerts = await hook.wait_for(2)
    assert sorted(a.payload["customer_id"] for a in alerts) == ["ann", "bob"]
    assert {a.payload["rule_id"] for a in alerts} == {"complaint-team-alert"}
    assert "1 open complaint(s), 1 of high severity" in next(
        a.payload["body"] for a in alerts if a.payload["customer_id"] == "bob"
    )
    # Ann's low complaint is acknowledged (transactional: at night too); Bob gave no email
    # consent, so his apology is not sent — and the alerts counted as contact for neither.
    await until(lambda: _mail_count(smtp, 1), what="the acknowledgement")
    assert smtp.messages[0].recipients == ["ann@example.com"]
    assert (await statuses(s, "bob"))["complaint-apology"] == ("suppressed", "no_consent")
    for customer in ("ann", "bob"):
        # The receiver has it; delivery records the send once its pass ends.
        alert = await until_status(s, customer, "complaint-team-alert", "sent")
        assert alert.audience == "team"


async def _mail_count(smtp: SmtpReceiver, n: int) -> bool:
    return len(smtp.messages) >= n


async def test_a_promotion_held_for_an_open_complaint_is_dropped_after_the_hold_limit(
    world: World,
) -> None:
    s, clock = world.stack, world.clock
    await add_rule(s, rule("promo", VISIT_RULE, kind="recall"))
    ids = await post_events(
        s,
        [
            profile("cy", T0 - timedelta(days=1)),
            complaint("cy", "k-1", "opened", T0 - timedelta(hours=1)),
            visit("cy", "v-1", T0),
        ],
    )
    await outreach_has_seen(s, ids)
    assert (await until_status(s, "cy", "promo", "held")).reason == "open_complaint"
    clock.set(T0 + timedelta(days=29))
    await tick(s)
    assert (await statuses(s, "cy"))["promo"] == ("held", "open_complaint")
    clock.set(T0 + timedelta(days=30, minutes=1))
    await tick(s)
    assert (await statuses(s, "cy"))["promo"] == ("suppressed", "hold_expired")


async def test_a_promotion_waiting_out_quiet_hours_is_held_if_a_complaint_opened_meanwhile(
    world: World,
) -> None:
    """A recall decided in the evening waits for 08:00; the customer complains in the night:
    at 08:00 it is held, not sent, and it goes out once the complaint is resolved."""
    s, clock, hook = world.stack, world.clock, world.hook
    evening = local(PARIS, 2026, 6, 1, 22, 30)
    morning = local(PARIS, 2026, 6, 2, 8, 0)
    clock.set(evening)
    await add_rule(s, rule("promo", VISIT_RULE, kind="recall"))
    ids = await post_events(
        s, [profile("noa", evening - timedelta(days=1)), visit("noa", "v-1", evening)]
    )
    await outreach_has_seen(s, ids)
    assert await statuses(s, "noa") == {"promo": ("scheduled", "quiet_hours")}

    night = evening + timedelta(hours=1)
    clock.set(night)
    ids = await post_events(s, [complaint("noa", "k-1", "opened", night)])
    await outreach_has_seen(s, ids)

    clock.set(morning)
    await tick(s)
    assert (await until_status(s, "noa", "promo", "held")).reason == "open_complaint"
    await settled(world)
    assert hook.received == []

    resolved = morning + timedelta(hours=2)
    clock.set(resolved)
    ids = await post_events(s, [complaint("noa", "k-1", "resolved", resolved)])
    await outreach_has_seen(s, ids)
    await tick(s)
    [received] = await hook.wait_for(1)
    assert received.payload["rule_id"] == "promo"
    await until_status(s, "noa", "promo", "sent")


async def test_an_sms_reaches_the_provider_only_with_sms_consent(world: World) -> None:
    s = world.stack
    assert s.outreach is not None
    async with WebhookReceiver() as provider:
        resp = await s.outreach.post(
            "/v1/channels",
            headers=s.auth("marketing"),
            json={"id": "sms", "kind": "sms", "config": {"url": provider.url}},
        )
        assert resp.status_code == 201, resp.text
        secret = resp.json()["secret"]  # generated, shown once
        assert secret.startswith("whsec_")
        await add_rule(s, rule("visit-text", VISIT_RULE, kind="follow_up", channel="sms"))
        yes = {"email": True, "sms": True, "marketing": True}
        ids = await post_events(
            s,
            [
                profile("sam", T0 - timedelta(days=1), phone="+33 6 12 34 56 78", consent=yes),
                profile("tom", T0 - timedelta(days=1), phone="+33 6 98 76 54 32"),
                visit("sam", "v-1", T0),
                visit("tom", "v-2", T0),
            ],
        )
        await outreach_has_seen(s, ids)
        await until_status(s, "sam", "visit-text", "sent")
        [got] = provider.received
        assert got.payload["to"] == "+33612345678"  # E.164, as providers take it
        assert got.payload["customer_id"] == "sam"
        assert got.payload["text"].startswith("Hello Sam")
        assert await statuses(s, "tom") == {"visit-text": ("suppressed", "no_consent")}
        await settled(world)
        assert len(provider.received) == 1


async def test_a_preferred_channel_rule_texts_who_prefers_sms_and_emails_the_others(
    world: World,
) -> None:
    s, smtp = world.stack, world.smtp
    assert s.outreach is not None
    async with WebhookReceiver() as provider:
        resp = await s.outreach.post(
            "/v1/channels",
            headers=s.auth("marketing"),
            json={"id": "sms", "kind": "sms", "config": {"url": provider.url}},
        )
        assert resp.status_code == 201, resp.text
        await add_rule(s, rule("visit-news", VISIT_RULE, kind="follow_up", channel="preferred"))
        both = {"email": True, "sms": True, "marketing": True}
        ids = await post_events(
            s,
            [
                profile(
                    "pia",
                    T0 - timedelta(days=1),
                    phone="+33 6 11 22 33 44",
                    consent=both,
                    preferred_channel="sms",
                ),
                profile("pat", T0 - timedelta(days=1), phone="+33 6 55 66 77 88", consent=both),
                visit("pia", "v-1", T0),
                visit("pat", "v-2", T0),
            ],
        )
        await outreach_has_seen(s, ids)
        texted = await until_status(s, "pia", "visit-news", "sent")
        mailed = await until_status(s, "pat", "visit-news", "sent")
        assert (texted.channel, mailed.channel) == ("sms", "email")
        [text_message] = provider.received
        assert text_message.payload["to"] == "+33611223344"

        async def mail_arrived() -> bool:
            return bool(smtp.messages)

        await until(mail_arrived, what="the email to pat")
        assert [m.recipients for m in smtp.messages] == [["pat@example.com"]]


async def test_ten_concurrent_events_each_firing_a_rule_send_two(world: World) -> None:
    s = world.stack
    for p in range(1, 11):
        await add_rule(
            s,
            rule(
                f"p{p:02d}",
                {**VISIT_RULE, "filters": {"eq": ["duration_seconds", p]}},
                priority=p,
            ),
        )
    ids = await post_events(s, [profile("cap", T0 - timedelta(days=1))])
    await outreach_has_seen(s, ids)
    posted = await asyncio.gather(
        *(post_events(s, [visit("cap", f"v-{p}", T0, duration_seconds=p)]) for p in range(1, 11))
    )
    await outreach_has_seen(s, [i for batch in posted for i in batch])
    await _two_sent(world, "cap", 10)


async def test_ten_concurrent_events_firing_one_rule_are_each_decided_and_send_two(
    world: World,
) -> None:
    s = world.stack
    await add_rule(s, rule("visit-thanks", VISIT_RULE))
    ids = await post_events(s, [profile("cap", T0 - timedelta(days=1))])
    await outreach_has_seen(s, ids)
    posted = await asyncio.gather(
        *(post_events(s, [visit("cap", f"v-{n}", T0)]) for n in range(10))
    )
    visits = [i for batch in posted for i in batch]
    await outreach_has_seen(s, visits)
    by = await _two_sent(world, "cap", 10)
    # Every visit was decided: none was lost to another visit of the same rule.
    assert {occurrence for _, occurrence in by} == set(visits)


async def test_ten_concurrent_broadcasts_to_one_customer_send_two(world: World) -> None:
    """Ten launches decided at the same moment in ten transactions: the per-customer lock
    makes them take the cap one after another."""
    s = world.stack
    assert s.outreach is not None
    for p in range(1, 11):
        await add_rule(s, rule(f"b{p:02d}", {"type": "broadcast"}, kind="announcement", priority=p))
    ids = await post_events(s, [profile("cap", T0 - timedelta(days=1))])
    await outreach_has_seen(s, ids)

    async def launch(p: int) -> dict[str, Any]:
        assert s.outreach is not None
        resp = await s.outreach.post(
            "/v1/broadcasts", json={"rule_id": f"b{p:02d}"}, headers=s.auth("marketing")
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    launched = await asyncio.gather(*(launch(p) for p in range(1, 11)))
    assert sum(b["decided"] for b in launched) == 10
    await _two_sent(world, "cap", 10)


async def test_a_broadcast_to_customers_quiet_for_a_month_reaches_one_no_event_has_touched(
    world: World,
) -> None:
    """Outreach knows a customer by the card of their last change, and a trailing window
    empties with time alone: a month after their order, with no event and no stage move since
    (they buy every three months), the refit sends their card again, which says they spent
    nothing in the last 30 days, and the broadcast to such customers reaches them."""
    s, clock = world.stack, world.clock
    assert s.outreach is not None
    await add_rule(
        s,
        rule(
            "quiet-month",
            {"type": "broadcast"},
            kind="announcement",
            conditions={"eq": ["value.spend_30d", 0]},
        ),
    )
    events = [
        profile("slow", T0 - timedelta(days=200)),
        order("slow", "slow-1", T0 - timedelta(days=190), "80.00"),
        order("slow", "slow-2", T0 - timedelta(days=96), "80.00"),
        order("slow", "slow-3", T0 - timedelta(days=2), "80.00"),
    ]
    await outreach_has_seen(s, await post_events(s, events))
    await scoring_op(s, "refit")  # a tier and a forecast: their card goes out with them
    card = (await s.scoring.get("/v1/customers/slow", headers=s.auth("ops"))).json()
    # Nothing moves their stage for months: no change would bring outreach a newer card.
    assert datetime.fromisoformat(card["next_transition_at"]) > T0 + timedelta(days=60)

    async def launch() -> dict[str, Any]:
        assert s.outreach is not None
        resp = await s.outreach.post(
            "/v1/broadcasts",
            json={"rule_id": "quiet-month", "launch_id": f"at-{clock.now():%Y%m%d}"},
            headers=s.auth("marketing"),
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    assert (await launch())["audience"] == 0  # they bought two days ago

    clock.set(T0 + timedelta(days=31))
    assert (await scoring_op(s, "sweep"))["moved"] == 0
    assert (await scoring_op(s, "refit"))["changed"] == 1

    async def replica_as_of() -> bool:
        async with s.engine.connect() as conn:
            as_of = await conn.scalar(
                text("SELECT card->>'as_of' FROM outreach.cards WHERE customer_id = 'slow'")
            )
        return as_of is not None and datetime.fromisoformat(as_of) == clock.now()

    await until(replica_as_of, what="outreach holds the card sent again")
    launched = await launch()
    assert (launched["audience"], launched["decided"]) == (1, 1)
    assert (await statuses(s, "slow"))["quiet-month"][0] in ("pending", "sent")


# -- 5. one-click unsubscribe stops a queued email; no email without consent -------------------


async def test_one_click_unsubscribe_stops_a_queued_email_and_no_consent_means_no_email(
    world: World,
) -> None:
    s, clock, smtp = world.stack, world.clock, world.smtp
    assert s.outreach is not None and s.outreach_app is not None
    evening = local(PARIS, 2026, 6, 10, 22, 30)
    morning = local(PARIS, 2026, 6, 11, 8, 0)
    clock.set(evening)
    await add_rule(s, rule("visit-mail", VISIT_RULE, kind="follow_up", channel="email"))
    before = evening - timedelta(days=1)
    ids = await post_events(
        s,
        [
            profile("keep", before),
            profile("leaver", before),
            profile("mute", before, email_consent=False),
            visit("keep", "v-keep", evening),
            visit("leaver", "v-leaver", evening),
            visit("mute", "v-mute", evening),
        ],
    )
    await outreach_has_seen(s, ids)
    for cid in ("keep", "leaver"):
        [queued] = await actions_of(s, cid)
        assert (queued.status, queued.reason, queued.not_before) == (
            "scheduled",
            "quiet_hours",
            morning,
        )
    assert await statuses(s, "mute") == {"visit-mail": ("suppressed", "no_consent")}

    # The one-click POST a mail provider sends to the List-Unsubscribe link.
    settings: OutreachSettings = s.outreach_app.state.settings
    secret = settings.unsubscribe_secret.get_secret_value()
    link = unsubscribe_url(settings.public_base_url, "leaver", secret, clock.now())
    resp = await s.outreach.post(
        urlsplit(link).path,
        headers={"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        data={"List-Unsubscribe": "One-Click"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"unsubscribed": True, "suppressed_actions": 1}
    assert await statuses(s, "leaver") == {"visit-mail": ("suppressed", "unsubscribed")}

    clock.set(morning - timedelta(minutes=1))
    await tick(s)
    await settled(world)
    assert smtp.messages == []

    clock.set(morning)
    await tick(s)

    async def mailed() -> bool:
        return len(smtp.messages) >= 1

    await until(mailed, what="the email to keep")
    await until_status(s, "keep", "visit-mail", "sent")
    await settled(world)
    [mail] = smtp.messages
    assert mail.recipients == ["keep@example.com"]
    keep_link = unsubscribe_url(settings.public_base_url, "keep", secret, clock.now())
    assert mail.message["List-Unsubscribe"] == f"<{keep_link}>"
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert await statuses(s, "leaver") == {"visit-mail": ("suppressed", "unsubscribed")}

    # In the day, outside quiet hours: still nothing for either of them.
    clock.set(local(PARIS, 2026, 6, 11, 12, 0))
    ids = await post_events(
        s, [visit("leaver", "v-leaver-2", clock.now()), visit("mute", "v-mute-2", clock.now())]
    )
    await outreach_has_seen(s, ids)
    await settled(world)
    by_occurrence = {r.occurrence: (r.status, r.reason) for r in await actions_of(s, "leaver")}
    assert by_occurrence[ids[0]] == ("suppressed", "suppressed")
    mute = {r.occurrence: (r.status, r.reason) for r in await actions_of(s, "mute")}
    assert mute[ids[1]] == ("suppressed", "no_consent")
    assert len(smtp.messages) == 1


async def test_a_recall_released_by_a_late_evening_resolution_waits_for_eight_local(
    world: World,
) -> None:
    """A held promotion is decided again when the complaint is resolved: at 23:00 in Paris it
    waits for the end of quiet hours instead of going out at night."""
    s, clock, hook = world.stack, world.clock, world.hook
    await add_rule(
        s,
        rule(
            "recall",
            {
                "type": "schedule",
                "kind": "days_after",
                "since": "value.last_order_at",
                "rhythm_multiple": 1.5,
            },
            kind="recall",
            priority=50,
        ),
    )
    ids = await post_events(
        s,
        [
            profile("bea", T0 - timedelta(days=60)),
            order("bea", "o-1", T0 - timedelta(days=20), "40.00"),
            order("bea", "o-2", T0 - timedelta(days=10), "40.00"),
            order("bea", "o-3", T0 - timedelta(hours=1), "40.00"),
            complaint("bea", "k-1", "opened", T0),
        ],
    )
    await outreach_has_seen(s, ids)
    recall_due = local(PARIS, 2026, 6, 16, 9, 0)
    clock.set(recall_due)
    assert await tick(s) == 1
    assert (await until_status(s, "bea", "recall", "held")).reason == "open_complaint"

    clock.set(local(PARIS, 2026, 6, 16, 23, 0))
    await outreach_has_seen(
        s, await post_events(s, [complaint("bea", "k-1", "resolved", clock.now())])
    )
    waiting = await until_status(s, "bea", "recall", "scheduled")
    assert waiting.reason == "quiet_hours"
    assert waiting.not_before == local(PARIS, 2026, 6, 17, 8, 0)
    await settled(world)
    assert hook.received == []

    clock.set(local(PARIS, 2026, 6, 17, 8, 0))
    await tick(s)
    [recall] = await hook.wait_for(1)
    assert recall.payload["kind"] == "recall"
