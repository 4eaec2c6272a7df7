"""Outreach's HTTP APIs (rules, previews, broadcasts, policy, suppressions, unsubscribe,
actions, the scheduler lever) over the real PostgreSQL and Kafka.

Cards reach the replica through the consumer's real write path (``ChangeApplier.apply``).
The database is the session's, shared with other tests: every test owns its customers and
rules through a unique token, and every rule it creates selects only its own customers
(``profile.attributes.run``), so other tests' cards never fall into its audiences.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.app import create_app
from services.outreach.core.arms import in_rule_control
from services.outreach.core.policy import Policy
from services.outreach.core.rule_pack import default_pack
from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.core.unsubscribe import LINK_PLACEHOLDER, token_for
from services.outreach.settings import OutreachSettings
from services.outreach.shell import broadcast
from shared.changes import Change
from shared.clock import FixedClock
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

# 12:00 UTC: 13:00 in London (the sample card's zone), midnight in Auckland (quiet hours).
NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Outreach:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FixedClock
    keys: dict[str, str]

    def as_(self, role: str) -> dict[str, str]:
        return auth(self.keys[role])


@pytest_asyncio.fixture(scope="module")
async def outreach(settings: CommonSettings, keys: dict[str, str]) -> AsyncIterator[Outreach]:
    """The outreach app in-process, its clock fixed at NOW, under the default policy (the one
    found in the database is put back afterwards)."""
    clock = FixedClock(NOW)
    app = create_app(
        settings,
        OutreachSettings(
            consumer_group=f"{settings.topic_prefix}outreach-api", allow_private_webhooks=True
        ),
        clock,
        periodic=False,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
            o = Outreach(app, client, clock, keys)
            before = (await client.get("/v1/policy", headers=o.as_("ops_read"))).json()
            default = Policy().model_dump(mode="json")
            assert (
                await client.put("/v1/policy", json=default, headers=o.as_("marketing"))
            ).is_success
            try:
                yield o
            finally:
                await client.put("/v1/policy", json=before, headers=o.as_("marketing"))


class Shop:
    """This test's customers and rules, all marked with one token."""

    def __init__(self, o: Outreach) -> None:
        self.o = o
        self.tag = uuid.uuid4().hex[:10]

    def cid(self, n: int) -> str:
        return f"c-{self.tag}-{n:02d}"

    def rid(self, name: str) -> str:
        return f"t-{self.tag}-{name}"

    @property
    def mine(self) -> dict[str, Any]:
        """A condition that holds for this test's customers only."""
        return {"eq": ["profile.attributes.run", self.tag]}

    def card(
        self,
        n: int,
        *,
        tier: str = "key",
        stage: str = "mature",
        email: bool = True,
        marketing: bool = True,
        complaints_open: int = 0,
        timezone: str = "Europe/London",
        **value: Any,
    ) -> dict[str, Any]:
        card = copy.deepcopy(dict(SAMPLE_CARD))
        card.update(customer_id=self.cid(n), tier=tier, stage=stage)
        profile = card["profile"]
        profile.update(name=f"Customer {n}", email=f"{self.cid(n)}@example.com", timezone=timezone)
        profile["consent"] = {"email": email, "sms": False, "marketing": marketing}
        profile["attributes"] = {**profile["attributes"], "run": self.tag}
        card["complaints"] = {**card["complaints"], "open": complaints_open}
        card["value"] = {**card["value"], **value}
        return card

    async def put(self, *cards: dict[str, Any]) -> None:
        """Into the replica through the consumer's write path, as scoring's changes would."""
        at = self.o.clock.now().isoformat()
        await self.o.app.state.applier.apply(
            [
                Change.model_validate(
                    {
                        "change_id": str(uuid.uuid4()),
                        "customer_id": c["customer_id"],
                        "cause": "event",
                        "at": at,
                        "event": None,
                        "card": c,
                        "stage_change": None,
                    }
                )
                for c in cards
            ]
        )

    def rule(
        self,
        name: str,
        *,
        trigger: dict[str, Any] | None = None,
        conditions: dict[str, Any] | None = None,
        kind: str = "announcement",
        channel: str = "webhook",
        **extra: Any,
    ) -> dict[str, Any]:
        return {
            "id": self.rid(name),
            "name": f"test rule {name}",
            "trigger": trigger or {"type": "broadcast"},
            "conditions": {"all": [self.mine, conditions]} if conditions else self.mine,
            "action": {
                "kind": kind,
                "channel": channel,
                "template": {"subject": "Hello", "body": "Hello {{ customer.name }}"},
            },
            **extra,
        }

    async def create(self, rule: dict[str, Any]) -> dict[str, Any]:
        r = await self.o.client.post("/v1/rules", json=rule, headers=self.o.as_("marketing"))
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def launch(self, rule_id: str, launch_id: str | None = None) -> dict[str, Any]:
        payload = {"rule_id": rule_id} | ({"launch_id": launch_id} if launch_id else {})
        r = await self.o.client.post(
            "/v1/broadcasts", json=payload, headers=self.o.as_("marketing")
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def actions(self, **params: Any) -> list[dict[str, Any]]:
        r = await self.o.client.get("/v1/actions", params=params, headers=self.o.as_("ops_read"))
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items


def fields(response: httpx.Response) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


async def remove_pack(o: Outreach) -> None:
    """The default pack acts on every customer: take it away again for the tests after."""
    for rule in default_pack():
        await o.client.delete(f"/v1/rules/{rule.id}", headers=o.as_("marketing"))


# -- rules ------------------------------------------------------------------------------------


async def test_rule_lifecycle_versions_enable_disable_delete(outreach: Outreach) -> None:
    o, shop = outreach, Shop(outreach)
    c, w, r = o.client, o.as_("marketing"), o.as_("ops_read")
    rule = shop.rule("crud", trigger={"type": "event", "event": "order.placed"})
    rid = rule["id"]

    created = await shop.create(rule)
    assert created["version"] == 1
    assert created["rule"]["id"] == rid and created["rule"]["enabled"] is True
    assert rid in o.app.state.current.rules  # this process sees it at once

    again = await c.post("/v1/rules", json=rule, headers=w)
    assert again.status_code == 409 and fields(again) == ["body.id"]

    got = await c.get(f"/v1/rules/{rid}", headers=r)
    assert got.status_code == 200 and got.json()["rule"] == created["rule"]
    listed = (await c.get("/v1/rules", headers=r)).json()["items"]
    assert [x["version"] for x in listed if x["rule"]["id"] == rid] == [1]

    renamed = {**rule, "name": "renamed"}
    put = await c.put(f"/v1/rules/{rid}", json=renamed, headers=w)
    assert put.status_code == 200 and put.json()["version"] == 2
    assert put.json()["rule"]["name"] == "renamed"
    assert o.app.state.current.rules[rid].name == "renamed"

    mismatch = await c.put(f"/v1/rules/{rid}", json={**rule, "id": shop.rid("other")}, headers=w)
    assert mismatch.status_code == 422 and fields(mismatch) == ["body.id"]
    absent = await c.put(
        f"/v1/rules/{shop.rid('nope')}", json={**rule, "id": shop.rid("nope")}, headers=w
    )
    assert absent.status_code == 404

    disabled = await c.post(f"/v1/rules/{rid}/disable", headers=w)
    assert disabled.status_code == 200
    assert (disabled.json()["version"], disabled.json()["rule"]["enabled"]) == (3, False)
    assert o.app.state.current.rules[rid].enabled is False
    assert (await c.post(f"/v1/rules/{rid}/disable", headers=w)).json()["version"] == 3
    enabled = await c.post(f"/v1/rules/{rid}/enable", headers=w)
    assert (enabled.json()["version"], enabled.json()["rule"]["enabled"]) == (4, True)

    versions = await c.get(f"/v1/rules/{rid}/versions", headers=r)
    assert versions.status_code == 200
    items = versions.json()["items"]
    assert [v["version"] for v in items] == [1, 2, 3, 4]
    assert [v["enabled"] for v in items] == [True, True, False, True]
    assert [v["definition"]["name"] for v in items] == [rule["name"], *["renamed"] * 3]
    assert {v["actor"] for v in items} == {"test-marketing"}

    # A customer the rule's daily limit left in its line while it was paused (due never):
    # counted as waiting, and gone with the rule.
    line = "SELECT count(*) FROM outreach.schedule WHERE rule_id = :r"
    async with o.app.state.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outreach.schedule (rule_id, customer_id, waiting_since) "
                "VALUES (:r, 'crud-waiting', :at)"
            ),
            {"r": rid, "at": NOW},
        )
    assert (await c.get(f"/v1/rules/{rid}", headers=r)).json()["waiting_for_a_slot"] == 1
    deleted = await c.delete(f"/v1/rules/{rid}", headers=w)
    assert deleted.status_code == 204
    async with o.app.state.engine.connect() as conn:
        assert await conn.scalar(text(line), {"r": rid}) == 0
    assert (await c.get(f"/v1/rules/{rid}", headers=r)).status_code == 404
    assert (await c.delete(f"/v1/rules/{rid}", headers=w)).status_code == 404
    assert (await c.post(f"/v1/rules/{rid}/enable", headers=w)).status_code == 404
    listed = (await c.get("/v1/rules", headers=r)).json()["items"]
    assert rid not in {x["rule"]["id"] for x in listed}
    assert rid not in o.app.state.current.rules
    # The history outlives the rule, and a new rule of that id continues it.
    assert len((await c.get(f"/v1/rules/{rid}/versions", headers=r)).json()["items"]) == 4
    assert (await shop.create(rule))["version"] == 5
    assert (await c.delete(f"/v1/rules/{rid}", headers=w)).status_code == 204
    assert (await c.get(f"/v1/rules/{shop.rid('never')}/versions", headers=r)).status_code == 404


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"conditions": {"eq": ["value.order", 3]}}, "body.conditions", "value.order"),
        ({"conditions": {"gt": ["tier", 3]}}, "body.conditions", "cannot be ordered"),
        (
            {
                "action": {
                    "kind": "greeting",
                    "channel": "webhook",
                    "template": {"body": "Hello {{ customer.nickname }}"},
                }
            },
            "body.action.template.body",
            "nickname",
        ),
        (
            {
                "action": {
                    "kind": "greeting",
                    "channel": "webhook",
                    "template": {"body": "{{ ''.__class__.__mro__ }}"},
                }
            },
            "body.action.template.body",
            "not allowed in a template",
        ),
        (
            {"action": {"kind": "greeting", "channel": "email", "template": {"body": "Hi"}}},
            "body.action.template",
            "subject",
        ),
        ({"colour": "red"}, "body.colour", ""),
        (
            {"trigger": {"type": "schedule", "kind": "cron", "expression": "*/5 * * * *"}},
            "body.trigger.schedule.cron.expression",
            "once a day",
        ),
    ],
)
async def test_an_invalid_rule_is_422_naming_the_field(
    outreach: Outreach, change: dict[str, Any], field: str, says: str
) -> None:
    o, shop = outreach, Shop(outreach)
    rule = {**shop.rule("bad"), **change}
    for path in ("/v1/rules", "/v1/rules/preview"):
        r = await o.client.post(path, json=rule, headers=o.as_("marketing"))
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "validation_error"
        errors = [e for e in body["errors"] if e["field"] == field]
        assert errors, body
        assert says in errors[0]["reason"]
    assert (
        await o.client.get(f"/v1/rules/{rule['id']}", headers=o.as_("ops_read"))
    ).status_code == 404


async def test_a_template_renders_on_one_real_customer_as_they_would_get_it(
    outreach: Outreach,
) -> None:
    o, shop = outreach, Shop(outreach)
    await shop.put(shop.card(1, tier="regular"))
    cid = shop.cid(1)

    async def render(template: dict[str, Any], **extra: Any) -> httpx.Response:
        payload = {"customer_id": cid, "template": template, **extra}
        return await o.client.post("/v1/templates/render", json=payload, headers=o.as_("marketing"))

    done = await render(
        {
            "subject": "Hi {{ customer.name }},\nyour {{ card.tier }} perks",
            "body": "Use {{ offer.code }}. Leave: {{ unsubscribe_url }}",
        },
        offer={"code": "TEN"},
    )
    assert done.status_code == 200, done.text
    assert done.json() == {
        "customer_id": cid,
        # This customer's own card, the subject folded onto one line as when deciding.
        "subject": "Hi Customer 1, your regular perks",
        "body": f"Use TEN. Leave: {LINK_PLACEHOLDER}",
    }
    # The template's errors on this customer's card name the part.
    missing = await render({"subject": "Hi", "body": "{{ card.no_such_field.x }}"})
    assert missing.status_code == 422
    assert fields(missing) == ["body.template.body"]
    bomb = await render({"subject": "{% for i in range(10**9) %}x{% endfor %}", "body": "b"})
    assert bomb.status_code == 422
    [error] = bomb.json()["errors"]
    assert error["field"] == "body.template.subject"
    assert error["reason"].startswith("template_limit")
    syntax = await render({"subject": "Hi", "body": "{{ customer.name "})
    assert syntax.status_code == 422 and fields(syntax) == ["body.template.body"]
    # No card for the customer: a 404 naming them; a malformed request names the field.
    unknown = await o.client.post(
        "/v1/templates/render",
        json={"customer_id": shop.cid(99), "template": {"body": "x"}},
        headers=o.as_("ops_read"),
    )
    assert unknown.status_code == 404 and shop.cid(99) in unknown.text
    empty = await render({"subject": "Hi", "body": ""})
    assert empty.status_code == 422 and fields(empty) == ["body.template.body"]
    # A calendar greeting renders with the holiday it names; without one `holiday` is null.
    greeting = {"subject": "{% if holiday %}Happy {{ holiday.name }}{% else %}Hello{% endif %}"}
    greeting["body"] = "{{ holiday.date if holiday else 'any day' }}"
    festive = await render(greeting, holiday={"calendar": "CN", "date": "2027-09-15"})
    assert festive.status_code == 200, festive.text
    assert (festive.json()["subject"], festive.json()["body"]) == (
        "Happy Mid-Autumn Festival",
        "2027-09-15",
    )
    plain = await render(greeting)
    assert (plain.json()["subject"], plain.json()["body"]) == ("Hello", "any day")
    no_such_day = await render(greeting, holiday={"calendar": "CN", "date": "2027-09-16"})
    assert no_such_day.status_code == 422 and fields(no_such_day) == ["body.holiday.date"]
    assert "CN" in no_such_day.text and "2027-09-16" in no_such_day.text
    unknown_calendar = await render(greeting, holiday={"calendar": "XX", "date": "2027-09-15"})
    assert unknown_calendar.status_code == 422
    assert fields(unknown_calendar) == ["body.holiday.calendar"]
    # Nothing was decided for the customer.
    assert await shop.actions(customer_id=cid) == []


async def test_default_rule_pack_installs_and_replaces(outreach: Outreach) -> None:
    o = outreach
    ids = [r.id for r in default_pack()]
    try:
        first = await o.client.post("/v1/rule-packs/default", headers=o.as_("marketing"))
        assert first.status_code == 200 and first.json() == {"installed": ids}
        before = (await o.client.get(f"/v1/rules/{ids[0]}", headers=o.as_("ops_read"))).json()
        assert set(ids) <= set(o.app.state.current.rules)
        again = await o.client.post("/v1/rule-packs/default", headers=o.as_("marketing"))
        assert again.json() == {"installed": ids}
        after = (await o.client.get(f"/v1/rules/{ids[0]}", headers=o.as_("ops_read"))).json()
        assert after["version"] == before["version"] + 1
        assert after["rule"] == before["rule"]
        history = (
            await o.client.get(f"/v1/rules/{ids[0]}/versions", headers=o.as_("ops_read"))
        ).json()["items"]
        assert history[-1]["actor"] == "test-marketing"
    finally:
        await remove_pack(o)
    assert not set(ids) & set(o.app.state.current.rules)


# -- previews -----------------------------------------------------------------------------------


async def test_preview_counts_the_audience_and_what_the_policy_holds_back(
    outreach: Outreach,
) -> None:
    o, shop = outreach, Shop(outreach)
    await shop.put(
        shop.card(0, stage="declining"),  # sent
        shop.card(1, stage="declining", email=False),  # no email consent
        shop.card(2, stage="declining", complaints_open=1),  # a recall waits for the complaint
        shop.card(3, stage="mature"),  # not in the stage
        shop.card(4, stage="declining", tier="low"),  # not in the conditions
        shop.card(5, stage="declining"),  # suppressed
        shop.card(6, stage="declining", timezone="Pacific/Auckland"),  # midnight there
    )
    added = await o.client.post(
        "/v1/suppressions",
        headers=o.as_("marketing"),
        json={"customer_id": shop.cid(5), "reason": "asked by phone"},
    )
    assert added.status_code == 201
    rule = shop.rule(
        "recall",
        trigger={"type": "stage", "to": ["declining"]},
        conditions={"in": ["tier", ["key", "regular"]]},
        kind="recall",
        channel="email",
    )
    unsaved = await o.client.post("/v1/rules/preview", json=rule, headers=o.as_("ops_read"))
    assert unsaved.status_code == 200, unsaved.text
    got = unsaved.json()
    assert got["matched"] == 5
    assert [s["customer_id"] for s in got["sample"]] == [shop.cid(n) for n in (0, 1, 2, 5, 6)]
    assert got["sample"][0]["name"] == "Customer 0"
    assert got["outcomes"] == {"send": 1, "defer": 1, "hold": 1, "suppress": 2}
    assert got["reasons"] == {
        "no_consent": 1,
        "open_complaint": 1,
        "quiet_hours": 1,
        "suppressed": 1,
    }
    assert got["held_back"] == 4
    assert got["as_of"].startswith("2030-06-14T12:00:00")

    await shop.create(rule)
    saved = await o.client.post(f"/v1/rules/{rule['id']}/preview", headers=o.as_("ops_read"))
    assert saved.status_code == 200 and saved.json() == got
    missing = await o.client.post(
        f"/v1/rules/{shop.rid('nope')}/preview", headers=o.as_("ops_read")
    )
    assert missing.status_code == 404

    # An event rule is judged by its conditions only: the mature customer counts too.
    event = {
        **rule,
        "id": shop.rid("on-order"),
        "trigger": {"type": "event", "event": "order.placed"},
    }
    by_event = (
        await o.client.post("/v1/rules/preview", json=event, headers=o.as_("ops_read"))
    ).json()
    assert by_event["matched"] == 6 and by_event["outcomes"]["send"] == 2
    # Nothing was recorded.
    assert await shop.actions(customer_id=shop.cid(0)) == []
    await o.client.delete(f"/v1/rules/{rule['id']}", headers=o.as_("marketing"))


async def test_preview_reads_the_whole_history_of_a_once_rule(outreach: Outreach) -> None:
    o, shop = outreach, Shop(outreach)
    # Deferred (midnight in Auckland), so the actions wait as `scheduled` whatever delivery does.
    await shop.put(*(shop.card(n, timezone="Pacific/Auckland") for n in range(2)))
    rule = shop.rule("once", limits={"once": True})
    await shop.create(rule)
    try:
        o.clock.set(NOW - timedelta(days=30))  # far outside the frequency cap's 7 days
        assert (await shop.launch(rule["id"]))["statuses"] == {"scheduled": 2}
    finally:
        o.clock.set(NOW)
    got = (await o.client.post(f"/v1/rules/{rule['id']}/preview", headers=o.as_("ops_read"))).json()
    assert got["matched"] == 2
    assert got["outcomes"]["suppress"] == 2 and got["reasons"] == {"limit": 2}


async def test_a_preview_holds_back_what_the_daily_limit_would_and_the_launch_agrees(
    outreach: Outreach, monkeypatch: pytest.MonkeyPatch
) -> None:
    o, shop = outreach, Shop(outreach)
    # A launch decides two customers at a time, in id order: the most valuable come last.
    monkeypatch.setattr(broadcast, "BROADCAST_CHUNK", 2)
    # Five customers at midnight in Auckland (each would be deferred past quiet hours), the
    # value score rising with the number; the rule takes two a day.
    cards = [shop.card(n, timezone="Pacific/Auckland") for n in range(5)]
    for n, card in enumerate(cards):
        card["value_score"] = float(n)
    await shop.put(*cards)
    rule = shop.rule("two-a-day", limits={"max_per_day": 2})
    await shop.create(rule)
    path = f"/v1/rules/{rule['id']}/preview"
    got = (await o.client.post(path, headers=o.as_("ops_read"))).json()
    assert got["matched"] == 5
    assert got["outcomes"] == {"send": 0, "defer": 2, "hold": 0, "suppress": 3}
    assert got["reasons"] == {"quiet_hours": 2, "daily_limit": 3}
    assert got["held_back"] == 5
    # The launch decides what the preview said, for the two most valuable of the audience;
    # the three others wait in the rule's line for the next days' slots, not recorded.
    launched = await shop.launch(rule["id"])
    assert (launched["statuses"], launched["waiting"]) == ({"scheduled": 2}, 3)
    waiting = await shop.actions(rule_id=rule["id"], status="scheduled")
    assert sorted(a["customer_id"] for a in waiting) == [shop.cid(3), shop.cid(4)]
    assert await shop.actions(rule_id=rule["id"], reason="daily_limit") == []
    async with o.app.state.engine.connect() as conn:
        lined = await conn.scalars(
            text("SELECT customer_id FROM outreach.schedule WHERE rule_id = :r"),
            {"r": rule["id"]},
        )
        assert sorted(lined) == [shop.cid(n) for n in range(3)]
    # The rule's launches say the same, with who launched it.
    listed = await o.client.get(
        "/v1/broadcasts", params={"rule_id": rule["id"]}, headers=o.as_("ops_read")
    )
    assert listed.status_code == 200, listed.text
    [one] = listed.json()["items"]
    assert one["launch_id"] == launched["launch_id"]
    assert (one["statuses"], one["waiting"], one["items"]) == ({"scheduled": 2}, 3, 0)
    assert one["actor"] == "test-marketing"
    # The day's two slots are taken: a preview now holds every one back.
    again = (await o.client.post(path, headers=o.as_("ops_read"))).json()
    assert again["outcomes"] == {"send": 0, "defer": 0, "hold": 0, "suppress": 5}
    assert again["reasons"] == {"daily_limit": 5}
    await o.client.delete(f"/v1/rules/{rule['id']}", headers=o.as_("marketing"))


async def test_a_preview_counts_who_the_control_group_holds_out_and_the_launch_agrees(
    outreach: Outreach,
) -> None:
    o, shop = outreach, Shop(outreach)
    rule = shop.rule("half-held", control_percent=50)
    # Three customers of each arm (the arm is a stable hash of the rule and the customer).
    held = [n for n in range(100) if in_rule_control(rule["id"], shop.cid(n), 50)][:3]
    sent = [n for n in range(100) if not in_rule_control(rule["id"], shop.cid(n), 50)][:3]
    # And one of the hold-out's whom the policy stops anyway: not counted as held out.
    refused = next(n for n in range(100, 200) if in_rule_control(rule["id"], shop.cid(n), 50))
    await shop.put(*(shop.card(n) for n in held + sent), shop.card(refused, marketing=False))
    await shop.create(rule)
    path = f"/v1/rules/{rule['id']}/preview"
    got = (await o.client.post(path, headers=o.as_("ops_read"))).json()
    assert (got["matched"], got["outcomes"]["send"], got["held_out"]) == (7, 6, 3)
    # The launch records exactly those as the control arm, and sends the others.
    assert (await shop.launch(rule["id"]))["statuses"] == {
        "control": 3,
        "pending": 3,
        "suppressed": 1,
    }
    controlled = await shop.actions(rule_id=rule["id"], status="control")
    assert sorted(a["customer_id"] for a in controlled) == [shop.cid(n) for n in sorted(held)]
    await o.client.delete(f"/v1/rules/{rule['id']}", headers=o.as_("marketing"))


# -- broadcasts ---------------------------------------------------------------------------------


async def test_broadcast_decides_its_audience_once_per_launch(outreach: Outreach) -> None:
    shop = Shop(outreach)
    await shop.put(
        shop.card(0),  # pending
        shop.card(1, complaints_open=1),  # held: a promotion during a complaint
        shop.card(2, marketing=False),  # suppressed: no marketing consent
        shop.card(3, tier="regular"),  # not in the audience
    )
    rule = shop.rule("news", conditions={"eq": ["tier", "key"]})
    await shop.create(rule)
    launch_id = f"launch-{shop.tag}"

    first = await shop.launch(rule["id"], launch_id)
    assert first == {
        "rule_id": rule["id"],
        "launch_id": launch_id,
        "audience": 3,
        "decided": 3,
        "statuses": {"held": 1, "pending": 1, "suppressed": 1},
        "waiting": 0,
    }
    second = await shop.launch(rule["id"], launch_id)
    assert (second["audience"], second["decided"], second["statuses"]) == (3, 0, {})
    ledger = await shop.actions(rule_id=rule["id"])
    assert sorted(a["customer_id"] for a in ledger) == [shop.cid(n) for n in (0, 1, 2)]
    assert {a["occurrence"] for a in ledger} == {launch_id}
    by_customer = {a["customer_id"]: a for a in ledger}
    assert (by_customer[shop.cid(1)]["status"], by_customer[shop.cid(1)]["reason"]) == (
        "held",
        "open_complaint",
    )
    assert by_customer[shop.cid(2)]["reason"] == "no_consent"
    assert by_customer[shop.cid(0)]["subject"] == "Hello"

    fresh = await shop.launch(rule["id"])  # no launch id: a new launch
    assert fresh["launch_id"] != launch_id and fresh["decided"] == 3
    assert len(await shop.actions(rule_id=rule["id"])) == 6


async def test_broadcast_refuses_what_it_cannot_launch(outreach: Outreach) -> None:
    o, shop = outreach, Shop(outreach)
    on_event = shop.rule("event", trigger={"type": "event", "event": "order.placed"})
    off = {**shop.rule("off"), "enabled": False}
    await shop.create(on_event)
    await shop.create(off)
    for rule_id, says in (
        (on_event["id"], "event trigger"),
        (off["id"], "disabled"),
        (shop.rid("missing"), "no rule"),
    ):
        r = await o.client.post(
            "/v1/broadcasts", json={"rule_id": rule_id}, headers=o.as_("marketing")
        )
        assert r.status_code == 422, r.text
        assert fields(r) == ["body.rule_id"] and says in r.json()["errors"][0]["reason"]
    await o.client.delete(f"/v1/rules/{on_event['id']}", headers=o.as_("marketing"))


# -- policy and suppressions --------------------------------------------------------------------


async def test_policy_round_trip(outreach: Outreach) -> None:
    o = outreach
    c, w, r = o.client, o.as_("marketing"), o.as_("ops_read")
    assert (await c.get("/v1/policy", headers=r)).json() == Policy().model_dump(mode="json")
    custom = {
        "frequency_cap": {"count": 5, "days": 30},
        "quiet_hours": None,
        "transactional_kinds": ["apology"],
        "promotional_kinds": ["winback"],
        "marketing_consent_required": False,
        "default_timezone": "Europe/Paris",
    }
    try:
        put = await c.put("/v1/policy", json=custom, headers=w)
        assert put.status_code == 200, put.text
        got = (await c.get("/v1/policy", headers=r)).json()
        assert Policy.model_validate(got) == Policy.model_validate(custom)
        assert o.app.state.current.policy == Policy.model_validate(custom)
        bad = await c.put("/v1/policy", json={**custom, "default_timezone": "Mars/Base"}, headers=w)
        assert bad.status_code == 422 and fields(bad) == ["body.default_timezone"]
    finally:
        await c.put("/v1/policy", json=Policy().model_dump(mode="json"), headers=w)
    assert o.app.state.current.policy == Policy()


async def test_suppressions_add_list_delete(outreach: Outreach) -> None:
    o, shop = outreach, Shop(outreach)
    c, w, r = o.client, o.as_("marketing"), o.as_("ops_read")
    for n in range(3):
        added = await c.post(
            "/v1/suppressions",
            headers=w,
            json={"customer_id": shop.cid(n), "reason": f"request {n}"},
        )
        assert added.status_code == 201, added.text
        assert added.json()["source"] == "api"
    again = await c.post(
        "/v1/suppressions", json={"customer_id": shop.cid(0), "reason": "x"}, headers=w
    )
    assert again.status_code == 200 and again.json()["reason"] == "request 0"

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(1000):
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await c.get("/v1/suppressions", params=params, headers=r)).json()
        seen += [s["customer_id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))
    assert [x for x in seen if shop.tag in x] == [shop.cid(n) for n in range(3)]

    bad = await c.get("/v1/suppressions", params={"cursor": "!!"}, headers=r)
    assert bad.status_code == 422 and fields(bad) == ["query.cursor"]
    missing_reason = await c.post("/v1/suppressions", json={"customer_id": "x"}, headers=w)
    assert missing_reason.status_code == 422 and fields(missing_reason) == ["body.reason"]

    assert (await c.delete(f"/v1/suppressions/{shop.cid(1)}", headers=w)).status_code == 204
    assert (await c.delete(f"/v1/suppressions/{shop.cid(1)}", headers=w)).status_code == 404
    page = (await c.get("/v1/suppressions", params={"limit": 1000}, headers=r)).json()
    assert [s["customer_id"] for s in page["items"] if shop.tag in s["customer_id"]] == [
        shop.cid(0),
        shop.cid(2),
    ]


async def test_one_click_unsubscribe(outreach: Outreach, engine: AsyncEngine) -> None:
    o, shop = outreach, Shop(outreach)
    await shop.put(
        shop.card(0, complaints_open=1),  # its announcement is held
        shop.card(1, timezone="Pacific/Auckland"),  # its announcement is deferred
    )
    rule = shop.rule("promo")
    await shop.create(rule)
    launched = await shop.launch(rule["id"])
    assert launched["statuses"] == {"held": 1, "scheduled": 1}
    secret = o.app.state.settings.unsubscribe_secret.get_secret_value()
    token = token_for(shop.cid(0), secret, o.clock.now())
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    refused = await o.client.post(
        "/v1/unsubscribe",
        params={"token": tampered},
        content="List-Unsubscribe=One-Click",
        headers=form,
    )
    assert refused.status_code == 422 and fields(refused) == ["query.token"]
    assert "not valid" in refused.json()["errors"][0]["reason"]
    assert (await o.client.get("/v1/unsubscribe", params={"token": "garbage"})).status_code == 422

    page = await o.client.get("/v1/unsubscribe", params={"token": token})
    assert page.status_code == 200 and 'method="post"' in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert (await shop.actions(customer_id=shop.cid(0)))[0][
        "status"
    ] == "held"  # GET changes nothing

    done = await o.client.post(
        "/v1/unsubscribe",
        params={"token": token},
        content="List-Unsubscribe=One-Click",
        headers=form,
    )
    assert done.status_code == 200, done.text
    assert done.json() == {"unsubscribed": True, "suppressed_actions": 1}
    [action] = await shop.actions(customer_id=shop.cid(0))
    assert (action["status"], action["reason"]) == ("suppressed", "unsubscribed")
    async with engine.connect() as conn:
        source = await conn.scalar(
            text("SELECT source FROM outreach.suppressions WHERE customer_id = :c"),
            {"c": shop.cid(0)},
        )
    assert source == "unsubscribe"
    assert (
        "You are unsubscribed"
        in (await o.client.get("/v1/unsubscribe", params={"token": token})).text
    )
    repeat = await o.client.post(
        "/v1/unsubscribe",
        params={"token": token},
        content="List-Unsubscribe=One-Click",
        headers=form,
    )
    assert repeat.json() == {"unsubscribed": True, "suppressed_actions": 0}

    # The link as messages carry it: /v1/unsubscribe/<token>; a browser gets a page back.
    link = f"/v1/unsubscribe/{token_for(shop.cid(1), secret, o.clock.now())}"
    assert 'method="post"' in (await o.client.get(link)).text
    browser = await o.client.post(
        link, content="List-Unsubscribe=One-Click", headers={**form, "Accept": "text/html"}
    )
    assert browser.status_code == 200 and "You are unsubscribed" in browser.text
    [deferred] = await shop.actions(customer_id=shop.cid(1))
    assert (deferred["status"], deferred["reason"]) == ("suppressed", "unsubscribed")
    bad_link = await o.client.post(link[:-2], content="List-Unsubscribe=One-Click", headers=form)
    assert bad_link.status_code == 422 and fields(bad_link) == ["path.token"]

    # Later decisions know too.
    later = await shop.launch(rule["id"])
    assert later["statuses"] == {"suppressed": 2}
    reasons = {a["reason"] for a in await shop.actions(rule_id=rule["id"], status="suppressed")}
    assert "suppressed" in reasons


async def test_links_expire_and_a_browser_gets_a_page_for_a_bad_one(outreach: Outreach) -> None:
    o, shop = outreach, Shop(outreach)
    secret = o.app.state.settings.unsubscribe_secret.get_secret_value()
    now = o.clock.now()
    browser = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}

    # Older than the 60 days links last: refused, with why.
    old = f"/v1/unsubscribe/{token_for(shop.cid(0), secret, now - timedelta(days=60, hours=1))}"
    expired = await o.client.post(old)
    assert expired.status_code == 422 and fields(expired) == ["path.token"]
    assert "expired" in expired.json()["errors"][0]["reason"]
    for method in ("GET", "POST"):
        page = await o.client.request(method, old, headers=browser)
        assert page.status_code == 422, method
        assert page.headers["content-type"].startswith("text/html"), method
        assert "expired" in page.text and "{" not in page.text, method
    async with o.app.state.engine.connect() as conn:
        assert (
            await conn.scalar(
                text("SELECT count(*) FROM outreach.suppressions WHERE customer_id = :c"),
                {"c": shop.cid(0)},
            )
            == 0
        )

    # A tampered link shows a browser a page, not JSON.
    good = token_for(shop.cid(0), secret, now)
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    for method in ("GET", "POST"):
        page = await o.client.request(method, f"/v1/unsubscribe/{tampered}", headers=browser)
        assert page.status_code == 422 and "not valid" in page.text, method
        assert page.headers["content-type"].startswith("text/html"), method

    # A mail provider's one-click POST may come as multipart/form-data (RFC 8058 allows it).
    boundary = "tend-test-boundary"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    )
    recent = token_for(shop.cid(1), secret, now - timedelta(days=59))
    done = await o.client.post(
        f"/v1/unsubscribe/{recent}",
        content=multipart,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert done.status_code == 200, done.text
    assert done.json() == {"unsubscribed": True, "suppressed_actions": 0}


async def test_a_held_message_gets_its_link_when_sent(
    outreach: Outreach, engine: AsyncEngine
) -> None:
    shop = Shop(outreach)
    await shop.put(shop.card(0, complaints_open=1))
    rule = shop.rule("held-link")
    rule["action"]["template"]["body"] = "Stop: {{ unsubscribe_url }}"
    await shop.create(rule)
    assert (await shop.launch(rule["id"]))["statuses"] == {"held": 1}
    # Decided now, sent perhaps weeks later: no link is minted (and stored) yet; delivery
    # mints it (tests/integration/test_delivery.py).
    async with engine.connect() as conn:
        body = await conn.scalar(
            text("SELECT body FROM outreach.actions WHERE customer_id = :c"), {"c": shop.cid(0)}
        )
    assert body == f"Stop: {LINK_PLACEHOLDER}"


# -- actions ------------------------------------------------------------------------------------


async def test_actions_filters_cursor_and_touchpoints(outreach: Outreach) -> None:
    o, shop = outreach, Shop(outreach)
    await shop.put(*(shop.card(n, complaints_open=1 if n < 3 else 0) for n in range(12)))
    news = shop.rule("news")
    care = shop.rule("care", kind="care")
    await shop.create(news)
    await shop.create(care)
    try:
        await shop.launch(news["id"])
        o.clock.advance(timedelta(hours=1))
        await shop.launch(care["id"])
    finally:
        o.clock.set(NOW)
    half = (NOW + timedelta(minutes=30)).isoformat()

    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params = {"rule_id": news["id"], "limit": 5} | ({"cursor": cursor} if cursor else {})
        r = await o.client.get("/v1/actions", params=params, headers=o.as_("ops_read"))
        assert r.status_code == 200, r.text
        pages.append(r.json()["items"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [5, 5, 2]
    flat = [a for p in pages for a in p]
    assert sorted(a["customer_id"] for a in flat) == [shop.cid(n) for n in range(12)]
    keys = [(a["decided_at"], a["id"]) for a in flat]
    assert keys == sorted(keys, reverse=True)
    assert set(flat[0]) == {
        "id",
        "rule_id",
        "customer_id",
        "occurrence",
        "kind",
        "channel",
        "channel_id",
        "audience",
        "status",
        "reason",
        "detail",
        "decided_at",
        "not_before",
        "sent_at",
        "attempts",
        "subject",
        "arm",
        "tier",
        "strategy",
        "baseline",
        "goal",
        "merged_from",
    }

    held = await shop.actions(rule_id=news["id"], status="held")
    assert sorted(a["customer_id"] for a in held) == [shop.cid(n) for n in range(3)]
    assert len(await shop.actions(rule_id=news["id"], status=["held", "suppressed"])) == 3
    assert len(await shop.actions(customer_id=shop.cid(0), kind="care")) == 1
    assert {a["rule_id"] for a in await shop.actions(customer_id=shop.cid(0), since=half)} == {
        care["id"]
    }
    assert {a["rule_id"] for a in await shop.actions(customer_id=shop.cid(0), until=half)} == {
        news["id"]
    }
    mine = await shop.actions(customer_id=shop.cid(0))
    assert [a["rule_id"] for a in mine] == [care["id"], news["id"]]  # newest first

    for bad in ("garbage!", "eyJhdCI6IDF9", "bm90IGpzb24"):
        r = await o.client.get("/v1/actions", params={"cursor": bad}, headers=o.as_("ops_read"))
        assert r.status_code == 422 and fields(r) == ["query.cursor"], r.text
    wrong = await o.client.get("/v1/actions", params={"status": "lost"}, headers=o.as_("ops_read"))
    assert wrong.status_code == 422 and fields(wrong) == ["query.status.0"]

    touch = await o.client.get(
        f"/v1/customers/{shop.cid(0)}/touchpoints", headers=o.as_("ops_read")
    )
    assert touch.status_code == 200
    assert [a["rule_id"] for a in touch.json()["items"]] == [care["id"], news["id"]]
    nobody = await o.client.get(
        f"/v1/customers/{shop.cid(99)}/touchpoints", headers=o.as_("ops_read")
    )
    assert nobody.status_code == 200 and nobody.json() == {"items": [], "next_cursor": None}

    preview = (
        await o.client.post(f"/v1/rules/{news['id']}/preview", headers=o.as_("ops_read"))
    ).json()
    assert preview["matched"] == 12 and len(preview["sample"]) == 10


async def test_tick_fires_due_schedules(outreach: Outreach) -> None:
    o, shop = outreach, Shop(outreach)
    rule = shop.rule(
        "follow-up",
        trigger={
            "type": "schedule",
            "kind": "days_after",
            "since": "value.last_order_at",
            "days": 7,
        },
        kind="follow_up",
    )
    await shop.create(rule)
    # Ordered six days ago: due tomorrow at 09:00 London time (08:00 UTC).
    await shop.put(shop.card(0, last_order_at=(NOW - timedelta(days=6)).isoformat()))
    ops = o.as_("ops")
    try:
        early = await o.client.post("/v1/ops/tick", headers=ops)
        assert early.status_code == 200, early.text
        assert await shop.actions(rule_id=rule["id"]) == []
        o.clock.set(datetime(2030, 6, 15, 8, 30, tzinfo=UTC))
        due = await o.client.post("/v1/ops/tick", headers=ops)
        assert due.status_code == 200 and due.json()["decided"] >= 1
        assert due.json()["at"].startswith("2030-06-15T08:30")
        [action] = await shop.actions(rule_id=rule["id"])
        assert (action["occurrence"], action["kind"]) == ("2030-06-15", "follow_up")
        await o.client.post("/v1/ops/tick", headers=ops)
        assert len(await shop.actions(rule_id=rule["id"])) == 1
    finally:
        o.clock.set(NOW)
        await o.client.delete(f"/v1/rules/{rule['id']}", headers=o.as_("marketing"))


# -- who may call what --------------------------------------------------------------------------


async def test_scope_matrix(outreach: Outreach) -> None:
    o, shop = outreach, Shop(outreach)
    rule = shop.rule("scopes")
    rid, cid = rule["id"], shop.cid(0)
    policy = Policy().model_dump(mode="json")
    read, write, operate = ("ops_read", "ingest"), ("marketing", "ops"), ("ops", "marketing")
    routes: list[tuple[str, str, Any, tuple[str, str], int]] = [
        ("POST", "/v1/rules", rule, write, 201),
        ("GET", "/v1/rules", None, read, 200),
        ("GET", f"/v1/rules/{rid}", None, read, 200),
        ("PUT", f"/v1/rules/{rid}", rule, write, 200),
        ("GET", f"/v1/rules/{rid}/versions", None, read, 200),
        ("POST", f"/v1/rules/{rid}/disable", None, write, 200),
        ("POST", f"/v1/rules/{rid}/enable", None, write, 200),
        ("POST", "/v1/rules/preview", rule, read, 200),
        ("POST", f"/v1/rules/{rid}/preview", None, read, 200),
        ("POST", "/v1/broadcasts", {"rule_id": rid}, write, 200),
        ("GET", "/v1/policy", None, read, 200),
        ("PUT", "/v1/policy", policy, write, 200),
        ("GET", "/v1/suppressions", None, read, 200),
        ("POST", "/v1/suppressions", {"customer_id": cid, "reason": "test"}, write, 201),
        # An operator may lift a suppression too (a customer's own unsubscribe, only they).
        ("DELETE", f"/v1/suppressions/{cid}", None, ("marketing", "ops_read"), 204),
        ("GET", "/v1/actions", None, read, 200),
        ("GET", f"/v1/customers/{cid}/touchpoints", None, read, 200),
        ("POST", "/v1/ops/tick", None, operate, 200),
        ("DELETE", f"/v1/rules/{rid}", None, write, 204),
        ("POST", "/v1/rule-packs/default", None, write, 200),
    ]
    try:
        for method, path, body, (right, wrong), ok in routes:
            what = f"{method} {path}"
            kw: dict[str, Any] = {"json": body} if body is not None else {}
            none = await o.client.request(method, path, **kw)
            assert none.status_code == 401, what
            assert none.json()["error"] == "unauthorized", what
            bad_key = await o.client.request(method, path, headers=auth("tend_nope"), **kw)
            assert bad_key.status_code == 401, what
            denied = await o.client.request(method, path, headers=o.as_(wrong), **kw)
            assert denied.status_code == 403, what
            assert denied.json()["error"] == "forbidden", what
            allowed = await o.client.request(method, path, headers=o.as_(right), **kw)
            assert allowed.status_code == ok, f"{what}: {allowed.text}"
    finally:
        await remove_pack(o)

    # Unsubscribing needs no key: the token is the credential.
    secret = o.app.state.settings.unsubscribe_secret.get_secret_value()
    token = token_for(cid, secret, o.clock.now())
    assert (await o.client.get("/v1/unsubscribe", params={"token": token})).status_code == 200
    posted = await o.client.post("/v1/unsubscribe", params={"token": token})
    assert posted.status_code == 200 and posted.json()["unsubscribed"] is True
