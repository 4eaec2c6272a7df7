"""Two records of one person merged (``customer.merged``): outreach folds the merged record's
ledger into the survivor's, so the person is greeted once, capped once and erased whole. The
changes are published straight onto the changes topic, as scoring would, on the real broker
and database of a Tend of the test's own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from sqlalchemy import text

from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.core.unsubscribe import unsubscribe_url
from services.outreach.settings import OutreachSettings
from shared.changes import change_id_for
from shared.clock import FixedClock
from shared.kafka import Record, publish_many, start_producer
from shared.privacy import customer_digest
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.events import event_json
from tests.support.pipeline import (
    actions_published,
    add_rule,
    consumers_assigned,
    outreach_caught_up,
    tick,
)
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
BIRTHDAY = "1990-06-10"


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
async def stack(settings: CommonSettings, clock: FixedClock) -> AsyncIterator[Stack]:
    async with isolated_stack(
        settings, clock, outreach=OutreachSettings(allow_private_webhooks=True)
    ) as stack:
        await consumers_assigned(stack)
        yield stack


def _card(customer_id: str, at: datetime) -> dict[str, Any]:
    profile = {
        **SAMPLE_CARD["profile"],
        "birthday": BIRTHDAY,
        "timezone": "UTC",
        "consent": {"email": True, "sms": False, "marketing": True, "unsubscribed": None},
    }
    return {**SAMPLE_CARD, "customer_id": customer_id, "as_of": at.isoformat(), "profile": profile}


def _change(
    customer_id: str,
    at: datetime,
    event_type: str,
    data: dict[str, Any],
    *,
    card_of: str | None = None,
    cause: str = "event",
) -> dict[str, Any]:
    event = event_json(customer_id, at, event_type, data)
    return {
        "change_id": change_id_for(cause, event["event_id"]),
        "customer_id": customer_id,
        "cause": cause,
        "at": at.isoformat(),
        "event": event,
        "card": {} if cause == "erasure" else _card(card_of or customer_id, at),
    }


def _visit(customer_id: str, at: datetime) -> dict[str, Any]:
    return _change(
        customer_id,
        at,
        "visit.recorded",
        {"visit_id": f"v-{uuid.uuid4().hex[:8]}", "channel": "store"},
        card_of=customer_id,
    )


def _profile(customer_id: str, at: datetime) -> dict[str, Any]:
    return _change(customer_id, at, "customer.updated", {"birthday": BIRTHDAY})


def _merge(survivor: str, merged: str, at: datetime) -> dict[str, Any]:
    data = {"merged_ids": [merged], "reason": "same verified email", "actor": "auto:email"}
    return _change(survivor, at, "customer.merged", data)


def _erasure(customer_id: str, at: datetime) -> dict[str, Any]:
    return _change(customer_id, at, "customer.erased", {"requested_by": "ops"}, cause="erasure")


async def _publish(stack: Stack, *changes: dict[str, Any]) -> None:
    """Publish the changes in order (each keyed by its customer), then wait until outreach
    has applied all of them."""
    topic = Topics.from_settings(stack.settings).changes
    producer = await start_producer(stack.settings)
    try:
        for change in changes:
            record = Record(topic, change["customer_id"].encode(), orjson.dumps(change))
            await publish_many(producer, [record], timeout=30)
    finally:
        await producer.stop()
    await outreach_caught_up(stack)


async def _rows(stack: Stack, sql: str, **params: Any) -> list[Any]:
    async with stack.engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def _actions(stack: Stack, rule_id: str) -> list[Any]:
    return await _rows(
        stack,
        "SELECT id, customer_id, occurrence, status, reason, merged_from FROM outreach.actions "
        "WHERE rule_id = :r ORDER BY decided_at, customer_id, occurrence",
        r=rule_id,
    )


def _rule(rule_id: str, trigger: dict[str, Any], **more: Any) -> dict[str, Any]:
    kind = more.pop("kind", "follow_up")
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": trigger,
        "action": {"kind": kind, "channel": "webhook", "template": {"body": "hello"}},
        **more,
    }


def _ids() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"web-{tag}", f"store-{tag}"


async def test_two_records_merged_before_the_birthday_are_greeted_once(
    stack: Stack, clock: FixedClock
) -> None:
    await add_rule(
        stack, _rule("birthday", {"type": "schedule", "kind": "birthday"}, kind="greeting")
    )
    web, store = _ids()
    await _publish(stack, _profile(web, T0), _profile(store, T0))
    scheduled = await _rows(stack, "SELECT customer_id FROM outreach.schedule ORDER BY 1")
    assert sorted(r.customer_id for r in scheduled) == sorted([web, store])

    await _publish(stack, _merge(web, store, T0 + timedelta(hours=1)))
    scheduled = await _rows(stack, "SELECT customer_id FROM outreach.schedule")
    assert [r.customer_id for r in scheduled] == [web]
    cards = await _rows(stack, "SELECT customer_id FROM outreach.cards")
    assert [r.customer_id for r in cards] == [web]

    clock.set(datetime(2026, 6, 10, 9, 0, tzinfo=UTC))
    await tick(stack)
    greetings = await _actions(stack, "birthday")
    assert [(g.customer_id, g.occurrence) for g in greetings] == [(web, "2026-06-10")]


async def test_greetings_waiting_for_both_records_leave_one_and_a_replayed_merge_changes_nothing(
    stack: Stack, clock: FixedClock
) -> None:
    # At 22:00 the greetings fall in quiet hours: both are decided and wait for the morning.
    await add_rule(
        stack,
        _rule("birthday", {"type": "schedule", "kind": "birthday", "at": "22:00"}, kind="greeting"),
    )
    web, store = _ids()
    await _publish(stack, _profile(web, T0), _profile(store, T0))
    clock.set(datetime(2026, 6, 10, 22, 0, tzinfo=UTC))
    await tick(stack)
    before = await _actions(stack, "birthday")
    assert sorted((g.customer_id, g.status) for g in before) == sorted(
        [(web, "scheduled"), (store, "scheduled")]
    )

    merge = _merge(web, store, clock.now())
    await _publish(stack, merge)
    greetings = await _actions(stack, "birthday")
    waiting = [g for g in greetings if g.status == "scheduled"]
    assert [(g.customer_id, g.occurrence, g.merged_from) for g in waiting] == [
        (web, "2026-06-10", None)
    ]
    dropped = [g for g in greetings if g.status != "scheduled"]
    assert [(g.customer_id, g.status, g.reason, g.merged_from) for g in dropped] == [
        (web, "suppressed", "merged", store)
    ]
    # The actions stream says so: the dropped one's last word is the merge's, under the
    # survivor's key.
    [*_, last] = [m for m in await actions_published(stack, web) if m["action_id"] == dropped[0].id]
    assert (last["customer_id"], last["status"], last["reason"]) == (web, "suppressed", "merged")
    assert last["decided_again_at"] == clock.now().isoformat()
    assert not await _rows(stack, "SELECT 1 FROM outreach.actions WHERE customer_id = :c", c=store)

    # The same merge again, its change id forgotten (a replay after the inbox's retention).
    state = await _state(stack)
    async with stack.engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM outreach.inbox WHERE change_id = :c"), {"c": merge["change_id"]}
        )
    await _publish(stack, merge)
    assert await _rows(
        stack, "SELECT 1 FROM outreach.inbox WHERE change_id = :c", c=merge["change_id"]
    )
    assert await _state(stack) == state


async def _state(stack: Stack) -> dict[str, list[Any]]:
    """Everything outreach holds about customers, for comparing before and after."""
    return {
        table: [
            tuple(r)
            for r in await _rows(
                stack, f"SELECT {columns} FROM outreach.{table} ORDER BY {columns}"
            )
        ]
        for table, columns in {
            "actions": "id, customer_id, occurrence, status, reason, not_before, arm, merged_from",
            "aliases": "customer_id, survivor_id, change_id",
            "cards": "customer_id, change_at",
            "schedule": "rule_id, customer_id, due_at",
            "suppressions": "customer_id, source",
            "goal_events": "event_id, customer_id",
        }.items()
    }


async def test_the_frequency_cap_counts_the_contacts_of_both_records(stack: Stack) -> None:
    # The default cap: 2 messages in 7 days.
    await add_rule(stack, _rule("visit-hello", {"type": "event", "event": "visit.recorded"}))
    web, store = _ids()
    await _publish(stack, _visit(web, T0), _visit(store, T0))
    assert [a.status for a in await _actions(stack, "visit-hello")] == ["pending", "pending"]

    await _publish(stack, _merge(web, store, T0 + timedelta(minutes=1)))
    third = _visit(store, T0 + timedelta(minutes=5))  # in flight under the merged id
    await _publish(stack, third)
    actions = await _actions(stack, "visit-hello")
    assert {a.customer_id for a in actions} == {web}
    last = next(a for a in actions if a.occurrence == third["event"]["event_id"])
    assert last.status != "pending" and last.reason == "frequency_cap"
    # The late change is the survivor's: the merged record's card does not come back.
    assert not await _rows(stack, "SELECT 1 FROM outreach.cards WHERE customer_id = :c", c=store)


async def test_a_once_rule_that_fired_for_the_merged_record_does_not_fire_for_the_survivor(
    stack: Stack,
) -> None:
    await add_rule(
        stack,
        _rule("first-visit", {"type": "event", "event": "visit.recorded"}, limits={"once": True}),
    )
    web, store = _ids()
    await _publish(stack, _visit(store, T0))
    await _publish(stack, _merge(web, store, T0 + timedelta(minutes=1)))
    await _publish(stack, _visit(web, T0 + timedelta(minutes=2)))
    actions = await _actions(stack, "first-visit")
    assert sorted(
        (a.customer_id, a.status, a.reason or "", a.merged_from or "") for a in actions
    ) == [
        (web, "pending", "", store),
        (web, "suppressed", "limit", ""),
    ]


async def test_erasing_the_survivor_erases_what_was_held_under_the_merged_id(
    stack: Stack,
) -> None:
    await add_rule(
        stack, _rule("birthday", {"type": "schedule", "kind": "birthday"}, kind="greeting")
    )
    await add_rule(stack, _rule("visit-hello", {"type": "event", "event": "visit.recorded"}))
    web, store = _ids()
    late = _visit(store, T0 + timedelta(minutes=3))  # the merged record's, from before the erasure
    await _publish(stack, _visit(web, T0), _visit(store, T0))
    async with stack.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outreach.suppressions (customer_id, reason, source, created_at) "
                "VALUES (:c, 'asked by phone', 'api', :at)"
            ),
            {"c": store, "at": T0},
        )
    await _publish(stack, _merge(web, store, T0 + timedelta(minutes=1)))
    assert await _rows(stack, "SELECT 1 FROM outreach.suppressions WHERE customer_id = :c", c=web)
    # Asked by the merged id, outreach answers for the person.
    assert stack.outreach is not None
    export = await stack.outreach.get(f"/v1/customers/{store}/export", headers=stack.auth("ops"))
    assert export.status_code == 200, export.text
    body = export.json()
    assert (body["customer_id"], body["merged_ids"]) == (web, [store])
    assert sorted(a["merged_from"] or "" for a in body["actions"]) == ["", store]
    plan = await stack.outreach.get(f"/v1/customers/{store}/schedule", headers=stack.auth("ops"))
    assert [s["rule_id"] for s in plan.json()["scheduled"]] == ["birthday"]

    await _publish(stack, _erasure(web, T0 + timedelta(minutes=5)))
    await _publish(stack, late)
    for table in ("cards", "schedule", "suppressions", "goal_events", "aliases", "actions"):
        held = await _rows(
            stack,
            f"SELECT 1 FROM outreach.{table} WHERE customer_id = ANY(CAST(:ids AS text[]))",
            ids=[web, store],
        )
        assert not held, table
    assert not await _rows(
        stack,
        "SELECT 1 FROM outreach.actions WHERE merged_from = ANY(CAST(:ids AS text[]))",
        ids=[web, store],
    )
    registered = await _rows(stack, "SELECT customer_digest FROM outreach.erasures")
    assert {r.customer_digest for r in registered} >= {customer_digest(web), customer_digest(store)}


async def test_an_unsubscribe_link_sent_to_the_merged_record_unsubscribes_the_person(
    stack: Stack, clock: FixedClock
) -> None:
    await add_rule(stack, _rule("visit-hello", {"type": "event", "event": "visit.recorded"}))
    web, store = _ids()
    secret = OutreachSettings().unsubscribe_secret.get_secret_value()
    link = urlsplit(unsubscribe_url("http://outreach", store, secret, clock.now())).path
    await _publish(stack, _visit(web, T0), _merge(web, store, T0 + timedelta(minutes=1)))
    assert stack.outreach is not None
    resp = await stack.outreach.post(link)
    assert resp.status_code == 200, resp.text
    entries = await _rows(stack, "SELECT customer_id, source FROM outreach.suppressions")
    assert [(e.customer_id, e.source) for e in entries] == [(web, "unsubscribe")]
    assert [(a.status, a.reason) for a in await _actions(stack, "visit-hello")] == [
        ("suppressed", "unsubscribed")
    ]


def _churned(change: dict[str, Any], since: str) -> dict[str, Any]:
    """The change with its card in the churned stage since ``since`` (from declining)."""
    card = {**change["card"], "stage": "churned", "stage_since": since}
    return {**change, "card": {**card, "previous_stage": "declining"}}


async def test_a_win_back_the_merged_record_had_for_its_churn_is_not_sent_again(
    stack: Stack,
) -> None:
    await add_rule(stack, _rule("winback", {"type": "stage", "to": ["churned"]}, kind="winback"))
    web, store = _ids()
    await _publish(stack, _churned(_visit(store, T0), "2026-05-01"))
    # The union card dates the churn later (the web record's orders were more recent).
    await _publish(stack, _churned(_merge(web, store, T0 + timedelta(minutes=1)), "2026-05-15"))
    actions = await _actions(stack, "winback")
    assert [(a.customer_id, a.occurrence, a.merged_from) for a in actions] == [
        (web, "churned@2026-05-15", store)
    ]
    # The actions stream says so: the action's newest message is the survivor's, under the
    # survivor's episode, and no new decision.
    [*_, last] = [m for m in await actions_published(stack, web) if m["action_id"] == actions[0].id]
    assert (last["customer_id"], last["occurrence"], last["status"]) == (
        web,
        "churned@2026-05-15",
        actions[0].status,
    )
    assert last["decided_again_at"] is None


async def test_merges_chain_and_the_last_survivor_is_erased_with_every_record(
    stack: Stack,
) -> None:
    await add_rule(stack, _rule("visit-hello", {"type": "event", "event": "visit.recorded"}))
    web, store = _ids()
    app = f"app-{uuid.uuid4().hex[:8]}"
    await _publish(stack, _visit(store, T0), _visit(web, T0))
    await _publish(stack, _merge(web, store, T0 + timedelta(minutes=1)))
    await _publish(stack, _merge(app, web, T0 + timedelta(minutes=2)))
    aliases = await _rows(stack, "SELECT customer_id, survivor_id FROM outreach.aliases")
    assert sorted(tuple(a) for a in aliases) == sorted([(store, app), (web, app)])
    late = _visit(store, T0 + timedelta(minutes=3))
    await _publish(stack, late)
    actions = await _actions(stack, "visit-hello")
    assert sorted((a.customer_id, a.merged_from or "") for a in actions) == sorted(
        [(app, store), (app, web), (app, "")]
    )

    await _publish(stack, _erasure(app, T0 + timedelta(minutes=5)))
    held = await _rows(
        stack,
        "SELECT 1 FROM outreach.actions WHERE customer_id = ANY(CAST(:ids AS text[])) "
        "OR merged_from = ANY(CAST(:ids AS text[]))",
        ids=[web, store, app],
    )
    assert not held
    assert not await _rows(stack, "SELECT 1 FROM outreach.aliases")
