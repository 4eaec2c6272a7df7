"""Control groups, reduce cost and the balance through the real broker and database: changes
published on the changes topic, decided by an in-process outreach, delivered to a real webhook
receiver. A control-arm action is decided like a treated one and never delivered; a customer
stays in their arm across a restart, a rebuild and a rule edit; the global control group hears
no promotion; reduce-cost customers get no promotion; a promotion over the balance waits for a
service contact; a waiting promotion gives its cap slot to a later, higher priority."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.app import create_app
from services.outreach.core.arms import in_global_control, in_rule_control
from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.settings import OutreachSettings
from shared.auth import Scope, create_key
from shared.changes import change_id_for
from shared.clock import FixedClock
from shared.db import make_engine
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.databases import fresh_settings
from tests.support.kafka_io import read_all
from tests.support.pipeline import until
from tests.support.receivers import WebhookReceiver

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
# No quiet hours and no cap unless a test says so: decisions must not depend on the hour.
OPEN_POLICY: dict[str, Any] = {"quiet_hours": None, "frequency_cap": None}


@dataclass
class Shop:
    """A Tend database and topics of the test's own, a webhook receiver, and the outreach
    running now (restartable)."""

    settings: CommonSettings
    engine: AsyncEngine
    headers: dict[str, str]
    hook: WebhookReceiver
    clock: FixedClock
    api: httpx.AsyncClient | None = None

    async def publish(self, changes: Sequence[tuple[str, str, bytes]]) -> None:
        """Publish ``(customer, change id, change)`` and wait until outreach applied them."""
        topic = Topics.from_settings(self.settings).changes
        producer = await start_producer(self.settings)
        try:
            await publish_many(
                producer, [Record(topic, c.encode(), value) for c, _, value in changes], timeout=30
            )
        finally:
            await producer.stop()
        wanted = [change_id for _, change_id, _ in changes]

        async def applied() -> bool:
            async with self.engine.connect() as conn:
                n = await conn.scalar(
                    text(
                        "SELECT count(*) FROM outreach.inbox "
                        "WHERE change_id = ANY(CAST(:ids AS text[]))"
                    ),
                    {"ids": wanted},
                )
            return bool(n == len(wanted))

        await until(applied, 60, f"outreach applying {len(wanted)} changes")

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        assert self.api is not None
        resp = await self.api.request(method, path, headers=self.headers, **kw)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()

    async def rows(self, rule_id: str | None = None) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(
                await conn.execute(
                    text(
                        "SELECT * FROM outreach.actions "
                        "WHERE CAST(:r AS text) IS NULL OR rule_id = :r "
                        "ORDER BY customer_id, decided_at, occurrence"
                    ),
                    {"r": rule_id},
                )
            )

    async def settled(self) -> None:
        """Until nothing is pending: every action allowed out has been delivered."""

        async def none_pending() -> bool:
            return not [r for r in await self.rows() if r.status == "pending"]

        await until(none_pending, 60, "every due action delivered")


@asynccontextmanager
async def shop(settings: CommonSettings) -> AsyncIterator[Shop]:
    async with fresh_settings(settings) as own, WebhookReceiver() as hook:
        engine = make_engine(own, pool_size=3)
        try:
            _, key = await create_key(
                engine, "arms", [Scope.MARKETING_WRITE, Scope.OPS_READ, Scope.OPS_WRITE]
            )
            yield Shop(own, engine, {"Authorization": f"Bearer {key}"}, hook, FixedClock(T0))
        finally:
            await engine.dispose()


@asynccontextmanager
async def outreach(
    s: Shop, group: str = "outreach", **extra: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """An outreach process of the shop (a consumer group of its own when ``group`` differs)."""
    app = create_app(
        s.settings,
        OutreachSettings(
            consumer_group=f"{s.settings.topic_prefix}{group}",
            allow_private_webhooks=True,
            **extra,
        ),
        s.clock,
        periodic=False,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://outreach") as c,
    ):
        kafka = app.state.consumer._consumer

        async def assigned() -> bool:
            if len(kafka.assignment()) >= s.settings.topic_partitions:
                return True
            await kafka._client.force_metadata_update()
            return False

        await until(assigned, 30, "outreach's consumer owning its partitions")
        s.api = c
        try:
            yield c, app
        finally:
            s.api = None


async def set_up(s: Shop, rules: list[dict[str, Any]], policy: dict[str, Any]) -> None:
    await s.call("PUT", "/v1/policy", json=policy)
    await s.call(
        "POST",
        "/v1/channels",
        json={
            "id": "hook",
            "kind": "webhook",
            "config": {"url": s.hook.url},
            "secret": s.hook.secret,
        },
    )
    for rule in rules:
        await s.call("POST", "/v1/rules", json=rule)


def rule(
    rule_id: str, kind: str, channel: str = "web", control: float = 0, **more: Any
) -> dict[str, Any]:
    """A rule firing on a visit through ``channel``."""
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": {
            "type": "event",
            "event": "visit.recorded",
            "filters": {"eq": ["channel", channel]},
        },
        "action": {"kind": kind, "channel": "webhook", "template": {"body": f"{rule_id} hello"}},
        "control_percent": control,
        **more,
    }


def visit(
    customer: str,
    channel: str = "web",
    *,
    strategy: str = "develop",
    open_complaints: int = 0,
    at: datetime = T0,
) -> tuple[str, str, bytes]:
    """(customer, change id, change): a visit through ``channel`` with the customer's card."""
    data = {"visit_id": f"v-{uuid.uuid4()}", "channel": channel}
    return event_change(customer, "visit.recorded", data, strategy, open_complaints, at)


def order(customer: str, amount: str, at: datetime) -> tuple[str, str, bytes]:
    """(customer, change id, change): an order placed, with the customer's card."""
    data = {"order_id": f"o-{uuid.uuid4()}", "status": "placed", "amount": amount}
    return event_change(customer, "order.placed", {**data, "currency": "USD"}, "develop", 0, at)


def event_change(
    customer: str,
    event_type: str,
    data: dict[str, Any],
    strategy: str,
    open_complaints: int,
    at: datetime,
) -> tuple[str, str, bytes]:
    event_id = str(uuid.uuid4())
    change_id = change_id_for("event", event_id)
    card = copy.deepcopy(dict(SAMPLE_CARD))
    card.update(customer_id=customer, strategy=strategy)
    card["complaints"] = {**card["complaints"], "open": open_complaints}
    change = {
        "change_id": change_id,
        "customer_id": customer,
        "cause": "event",
        "at": at.isoformat(),
        "stage_change": None,
        "card": card,
        "event": {
            "event_id": event_id,
            "event_type": event_type,
            "schema_version": 1,
            "customer_id": customer,
            "occurred_at": at.isoformat(),
            "received_at": at.isoformat(),
            "source": "test",
            "data": data,
        },
    }
    return customer, change_id, orjson.dumps(change)


def split(rule_id: str, prefix: str, n: int) -> tuple[list[str], list[str]]:
    """``n`` customers of each arm of a rule holding out half (by the stable hash)."""
    control: list[str] = []
    treated: list[str] = []
    i = 0
    while len(control) < n or len(treated) < n:
        cid = f"{prefix}-{i}"
        arm = control if in_rule_control(rule_id, cid, 50) else treated
        if len(arm) < n:
            arm.append(cid)
        i += 1
    return control, treated


def delivered(s: Shop) -> set[str]:
    return {w.payload["action_id"] for w in s.hook.received}


async def test_control_rows_are_decided_listed_and_never_delivered(
    settings: CommonSettings,
) -> None:
    async with shop(settings) as s, outreach(s):
        await set_up(s, [rule("thanks", "greeting", control=50)], OPEN_POLICY)
        control, treated = split("thanks", "d", 4)
        await s.publish([visit(c) for c in [*control, *treated]])
        await s.settled()
        await s.hook.wait_for(len(treated), timeout=30)

        rows = {r.customer_id: r for r in await s.rows("thanks")}
        assert {c: rows[c].status for c in control} == dict.fromkeys(control, "control")
        assert {c: rows[c].status for c in treated} == dict.fromkeys(treated, "sent")
        assert delivered(s) == {rows[c].id for c in treated}
        assert all(rows[c].sent_at is None and rows[c].attempts == 0 for c in control)
        # The listing says which arm each action is in, and what it is measured by.
        page = await s.call("GET", "/v1/actions", params={"rule_id": "thanks", "limit": 50})
        listed = {a["customer_id"]: a for a in page["items"]}
        assert {c: listed[c]["arm"] for c in control} == dict.fromkeys(control, "control")
        assert {c: listed[c]["arm"] for c in treated} == dict.fromkeys(treated, "treatment")
        assert {a["strategy"] for a in listed.values()} == {"develop"}
        assert all(a["goal"]["event"] == "order.placed" for a in listed.values())

        # The actions stream says so too, for downstream analytics.
        async def streamed() -> list[Any] | None:
            topic = Topics.from_settings(s.settings).actions
            got = await read_all(s.settings.kafka_bootstrap_servers, topic)
            return got if len(got) >= len(rows) else None

        stream = await until(streamed, 30, "every decision on the actions stream")
        published = {orjson.loads(r.value)["customer_id"]: orjson.loads(r.value) for r in stream}
        assert {(published[c]["status"], published[c]["arm"]) for c in control} == {
            ("control", "control")
        }
        # The customer's export shows the control decision for what it is.
        export = await s.call("GET", f"/v1/customers/{control[0]}/export")
        [held] = export["actions"]
        assert (held["status"], held["arm"], held["sent_at"]) == ("control", "control", None)
        summary = await s.call("GET", "/v1/actions/summary")
        counts = {(r["status"], r["kind"]): r["count"] for r in summary["rows"]}
        assert counts == {("control", "greeting"): 4, ("sent", "greeting"): 4}


async def test_a_team_alert_s_hold_out_is_never_told_and_the_report_measures_the_calls(
    settings: CommonSettings,
) -> None:
    call = rule("call", "care", control=50)
    call["action"]["audience"] = "team"
    async with shop(settings) as s, outreach(s):
        await set_up(s, [call], OPEN_POLICY)
        control, treated = split("call", "t", 3)
        await s.publish([visit(c) for c in [*control, *treated]])
        await s.settled()
        await s.hook.wait_for(len(treated), timeout=30)

        rows = {r.customer_id: r for r in await s.rows("call")}
        held = dict.fromkeys(control, ("control", "control"))
        assert {c: (rows[c].status, rows[c].arm) for c in control} == held
        sent = dict.fromkeys(treated, ("sent", "treatment"))
        assert {c: (rows[c].status, rows[c].arm) for c in treated} == sent
        # The team hears of the customers to call, never of the held-out ones.
        assert delivered(s) == {rows[c].id for c in treated}

        # Two of the called customers order within the goal's window, one of the others.
        week = T0 + timedelta(days=7)
        buyers = [treated[0], treated[1], control[0]]
        await s.publish([order(c, "50.00", week) for c in buyers])
        s.clock.set(week + timedelta(hours=1))
        report = await s.call("GET", "/v1/outcomes", params={"by": "rule", "since": T0.isoformat()})
        [measured] = [g for g in report["groups"] if g["key"] == "call"]
        assert measured["baseline"] == "control_group"
        got = {arm: measured[arm] for arm in ("treatment", "control")}
        assert {arm: (f["customers"], f["conversions"]) for arm, f in got.items()} == {
            "treatment": (3, 2),
            "control": (3, 1),
        }
        assert got["treatment"]["revenue"] == "100.0000"


async def test_a_customer_keeps_their_arm_across_a_restart_a_rule_edit_and_a_rebuild(
    settings: CommonSettings,
) -> None:
    customers = [f"s-{i}" for i in range(16)]
    expected = {
        c: "control" if in_rule_control("thanks", c, 50) else "treatment" for c in customers
    }
    assert set(expected.values()) == {"control", "treatment"}

    async def arms(s: Shop, each: int) -> dict[str, str]:
        """Each customer's one arm over their ``each`` actions of the rule so far."""
        seen: dict[str, list[str]] = {}
        for r in await s.rows("thanks"):
            seen.setdefault(r.customer_id, []).append(r.arm)
        assert all(len(a) == each and len(set(a)) == 1 for a in seen.values()), seen
        return {c: a[0] for c, a in seen.items()}

    async with shop(settings) as s:
        async with outreach(s):
            await set_up(s, [rule("thanks", "greeting", control=50)], OPEN_POLICY)
            await s.publish([visit(c) for c in customers])
            assert await arms(s, 1) == expected
        # A restart: the same customers visit again.
        async with outreach(s):
            await s.publish([visit(c) for c in customers])
            assert await arms(s, 2) == expected
            # A rule edit (new wording, new priority): the arms stay.
            edited = rule("thanks", "greeting", control=50, priority=7)
            edited["action"]["template"]["body"] = "Thank you again"
            await s.call("PUT", "/v1/rules/thanks", json=edited)
            await s.publish([visit(c) for c in customers])
            assert await arms(s, 3) == expected
        before = {(r.customer_id, r.occurrence): r.arm for r in await s.rows()}
        assert len(before) == 3 * len(customers)
        # A rebuild: the ledger emptied and every change read again from the start.
        async with s.engine.begin() as conn:
            await conn.execute(text("TRUNCATE outreach.actions, outreach.inbox, outreach.outbox"))
        async with outreach(s, group="outreach-rebuilt"):

            async def rebuilt() -> bool:
                return len(await s.rows()) == len(before)

            await until(rebuilt, 60, "the ledger decided again from the changes")
            after = {(r.customer_id, r.occurrence): r.arm for r in await s.rows()}
        assert after == before


async def test_the_control_arm_is_decided_like_the_treated_one_and_released_as_control(
    settings: CommonSettings,
) -> None:
    async with shop(settings) as s, outreach(s):
        once = rule("recall", "recall", control=50, limits={"once": True})
        await set_up(
            s,
            [once, rule("greet", "greeting", channel="store")],
            {
                "quiet_hours": None,
                "frequency_cap": {"count": 1, "days": 7},
            },
        )
        [held_control], [held_treated] = split("recall", "h", 1)
        # An open complaint holds the recall in both arms.
        await s.publish([visit(c, open_complaints=1) for c in (held_control, held_treated)])
        rows = {r.customer_id: r for r in await s.rows("recall")}
        assert {c: (rows[c].status, rows[c].arm) for c in rows} == {
            held_control: ("held", "control"),
            held_treated: ("held", "treatment"),
        }
        # The complaint is resolved: the control arm's recall is recorded as control, never
        # pending; the treated one goes out.
        await s.publish([visit(c, "app") for c in (held_control, held_treated)])
        await s.settled()
        rows = {r.customer_id: r for r in await s.rows("recall")}
        assert rows[held_control].status == "control"
        assert rows[held_control].reason == "open_complaint"  # why it waited stays readable
        await s.hook.wait_for(1, timeout=30)
        assert delivered(s) == {rows[held_treated].id}
        # `once` counts the control decision like a sent one: a second recall is suppressed in
        # both arms. The cap (1 per 7 days) counts only the treated customer's recall, so the
        # control customer's greeting still goes.
        await s.publish([visit(c) for c in (held_control, held_treated)])
        await s.publish([visit(c, "store") for c in (held_control, held_treated)])
        await s.settled()
        second = [r for r in await s.rows("recall") if r.status != "control" and r.status != "sent"]
        assert {(r.customer_id, r.status, r.reason) for r in second} == {
            (held_control, "suppressed", "limit"),
            (held_treated, "suppressed", "limit"),
        }
        greets = {r.customer_id: (r.status, r.reason) for r in await s.rows("greet")}
        assert greets == {
            held_control: ("sent", None),
            held_treated: ("suppressed", "frequency_cap"),
        }


async def test_the_global_control_group_and_reduce_cost_customers_hear_no_promotion(
    settings: CommonSettings,
) -> None:
    members = [c for c in (f"g-{i}" for i in range(200)) if in_global_control(c, 20)][:2]
    others = [c for c in (f"g-{i}" for i in range(200)) if not in_global_control(c, 20)][:3]
    reduce_cost = others.pop()
    async with shop(settings) as s, outreach(s, global_control_percent=20):
        rules = [rule("greet", "greeting"), rule("care", "care"), rule("recall", "recall")]
        await set_up(s, rules, OPEN_POLICY)
        await s.publish([visit(c) for c in [*members, *others]])
        await s.publish([visit(reduce_cost, strategy="reduce_cost")])
        await s.settled()
        got = {(r.customer_id, r.rule_id): (r.status, r.reason, r.arm) for r in await s.rows()}
    for c in members:
        # Promotional kinds are held out; a transactional one still goes.
        assert got[c, "greet"] == ("control", "global_control", "global_control")
        assert got[c, "recall"] == ("control", "global_control", "global_control")
        assert got[c, "care"] == ("sent", None, "treatment")
    for c in others:
        assert {got[c, r][:2] for r in ("greet", "care", "recall")} == {("sent", None)}
    # Reduce cost: no promotion (a recall); a greeting is not promotional and goes.
    assert got[reduce_cost, "recall"] == ("suppressed", "reduce_cost", "treatment")
    assert got[reduce_cost, "greet"][0] == "sent"
    assert len(s.hook.received) == len(members) + 3 * len(others) + 2


async def test_a_promotion_over_the_balance_waits_for_a_service_contact(
    settings: CommonSettings,
) -> None:
    balance = {"promotions_per_service": 1, "days": 30}
    async with shop(settings) as s, outreach(s):
        rules = [rule("recall", "recall"), rule("follow-up", "follow_up", channel="store")]
        await set_up(s, rules, {**OPEN_POLICY, "balance": balance})
        # The first promotion goes (1 < 1 x (0 + 1) is false only from the second on).
        await s.publish([visit("b-1")])
        await s.settled()
        await s.publish([visit("b-1")])
        # (Both were decided at T0: the recall still waiting is told apart by its status.)
        recalls = {r.status: r for r in await s.rows("recall")}
        assert {(r.status, r.reason) for r in recalls.values()} == {
            ("sent", None),
            ("scheduled", "balance"),
        }
        waiting = recalls["scheduled"]
        assert waiting.not_before == T0 + timedelta(days=30)
        # A service contact (a follow-up after a store visit) lets it through now.
        await s.publish([visit("b-1", "store")])
        await s.settled()
        released = {r.id: r for r in await s.rows("recall")}
        assert [r.status for r in released.values()] == ["sent", "sent"]
        assert released[waiting.id].reason == "balance"  # why it waited stays readable
        await s.hook.wait_for(3, timeout=30)
        kinds = sorted(w.payload["kind"] for w in s.hook.received)
        assert kinds == ["follow_up", "recall", "recall"]


async def test_a_waiting_promotion_gives_its_cap_slot_to_a_later_higher_priority(
    settings: CommonSettings,
) -> None:
    # Two messages a week; the customer (in London) is in quiet hours until 18:00.
    policy = {"quiet_hours": {"start": "06:00", "end": "18:00"}, "frequency_cap": {"count": 2}}
    evening = datetime(2026, 6, 1, 17, tzinfo=UTC)  # 18:00 in London
    rules = [
        rule("news", "announcement", priority=20),
        rule("sale", "announcement", priority=15),
        rule("thanks", "follow_up", channel="app", priority=30),
        rule("tips", "follow_up", channel="store", priority=10),
    ]
    async with shop(settings) as s, outreach(s):
        await set_up(s, rules, policy)
        # A visit on the web: both announcements wait for the evening, and fill the week.
        await s.publish([visit("ada")])
        # Their previews say so first: the follow-up would take a waiting promotion's slot
        # (and wait for the evening itself), the store's tips would find the week full.
        thanks = await s.call("POST", "/v1/rules/thanks/preview")
        assert (thanks["outcomes"]["defer"], thanks["reasons"]) == (1, {"quiet_hours": 1})
        assert thanks["gives_way"] == 1
        tips = await s.call("POST", "/v1/rules/tips/preview")
        assert (tips["reasons"], tips["gives_way"]) == ({"frequency_cap": 1}, 0)
        # A visit in the app: the follow-up outranks the waiting sale and takes its slot.
        await s.publish([visit("ada", "app")])
        got = {r.rule_id: (r.status, r.reason, r.not_before) for r in await s.rows()}
        assert got["news"] == ("scheduled", "quiet_hours", evening)
        assert got["thanks"] == ("scheduled", "quiet_hours", evening)
        assert got["sale"] == ("suppressed", "lower_priority", None)
        [sale] = await s.rows("sale")
        assert sale.detail == (
            "gave its frequency-cap slot to thanks (priority 30) before it went out"
        )
        # A lower priority takes nothing: the store's tips find the week full.
        await s.publish([visit("ada", "store")])
        [tips] = await s.rows("tips")
        assert (tips.status, tips.reason) == ("suppressed", "frequency_cap")
        # The evening comes: the two that kept their slots go out, the sale never does.
        s.clock.set(evening)
        await s.call("POST", "/v1/ops/tick")
        await s.settled()
        await s.hook.wait_for(2, timeout=30)
        sent = {r.rule_id for r in await s.rows() if r.status == "sent"}
        assert sent == {"news", "thanks"}


async def test_a_waiting_promotion_within_its_horizon_waits_for_the_next_slot(
    settings: CommonSettings,
) -> None:
    # As above, but announcements may wait two weeks for the cap.
    policy = {
        "quiet_hours": {"start": "06:00", "end": "18:00"},
        "frequency_cap": {"count": 2},
        "cap_defer_days": {"announcement": 14, "follow_up": 3},
    }
    evening = datetime(2026, 6, 1, 17, tzinfo=UTC)  # 18:00 in London
    rules = [
        rule("news", "announcement", priority=20),
        rule("sale", "announcement", priority=15),
        rule("thanks", "follow_up", channel="app", priority=30),
    ]
    async with shop(settings) as s, outreach(s):
        await set_up(s, rules, policy)
        await s.publish([visit("bo")])
        await s.publish([visit("bo", "app")])
        got = {r.rule_id: r for r in await s.rows()}
        assert (got["thanks"].status, got["thanks"].not_before) == ("scheduled", evening)
        assert (got["news"].status, got["news"].not_before) == ("scheduled", evening)
        sale = got["sale"]
        # The sale waits for the week's next free slot: after the first two leave the window.
        assert (sale.status, sale.reason) == ("scheduled", "lower_priority")
        assert sale.not_before >= evening + timedelta(days=7)
        assert sale.detail == (
            "gave its frequency-cap slot to thanks (priority 30); waits for the next"
        )
