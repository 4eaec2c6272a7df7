"""Hostile and careless rules against the running outreach app, over the real PostgreSQL:
template bombs are refused at save naming the limit, and judged off the event loop; a
mixed-type `between` and a cron that never fires cannot be saved; a rule that raises while
matching is skipped for each change, then disabled, while the other rules keep firing.

Every rule here selects only this module's customers (``profile.attributes.run``), so the
session's other tests never meet them.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.app import create_app
from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.settings import OutreachSettings
from shared.changes import Change
from shared.clock import FixedClock
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)
# Judging a template may take this long here: long enough that a /healthz request is sent
# while a bomb is still being judged.
RENDER_MS = 2000


@dataclass
class Hostile:
    app: FastAPI
    client: httpx.AsyncClient
    keys: dict[str, str]
    tag: str

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def rid(self, name: str) -> str:
        return f"h-{self.tag}-{name}"

    @property
    def mine(self) -> dict[str, Any]:
        return {"eq": ["profile.attributes.run", self.tag]}

    def rule(self, name: str, body: str = "Thanks {{ customer.name }}", **extra: Any) -> Any:
        return {
            "id": self.rid(name),
            "name": f"hostile {name}",
            "trigger": {"type": "event", "event": "visit.recorded"},
            "conditions": self.mine,
            "action": {"kind": "follow_up", "channel": "webhook", "template": {"body": body}},
            **extra,
        }

    def change(self, n: int, *, x: Any = "7") -> Change:
        customer_id = f"h-{self.tag}-{n:02d}"
        card = copy.deepcopy(dict(SAMPLE_CARD))
        card["customer_id"] = customer_id
        card["profile"]["attributes"] = {"run": self.tag, "x": x}
        at = NOW.isoformat()
        return Change.model_validate(
            {
                "change_id": str(uuid.uuid4()),
                "customer_id": customer_id,
                "cause": "event",
                "at": at,
                "event": {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "visit.recorded",
                    "schema_version": 1,
                    "customer_id": customer_id,
                    "occurred_at": at,
                    "received_at": at,
                    "source": "test",
                    "data": {"visit_id": f"v-{customer_id}", "channel": "store"},
                },
                "card": card,
                "stage_change": None,
            }
        )


@pytest_asyncio.fixture(scope="module")
async def hostile(settings: CommonSettings, keys: dict[str, str]) -> AsyncIterator[Hostile]:
    app = create_app(
        settings,
        OutreachSettings(
            consumer_group=f"{settings.topic_prefix}outreach-hostile",
            template_render_ms=RENDER_MS,
            rule_failure_limit=5,
        ),
        FixedClock(NOW),
        periodic=False,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
            yield Hostile(app, client, keys, uuid.uuid4().hex[:10])


def errors(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {e["field"]: e["reason"] for e in response.json()["errors"]}


BOMBS = {
    "repeat": ("{{ 'x' * 10**10 }}", "text over 100000 characters"),
    "power": ("{{ 9**9**9 }}", "number over 64 bits"),
    "nested_loops": (
        "{% for i in range(20000) %}{% for j in range(3000) %}x{% endfor %}{% endfor %}",
        "range over 10000",
    ),
    "nested_loops_in_range": (
        "{% for i in range(5000) %}{% for j in range(3000) %}x{% endfor %}{% endfor %}",
        "loop iterations over 10000",
    ),
    "recursive_macro": (
        "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "recursion depth over 20",
    ),
    "doubling_list": (
        "{% set ns = namespace(x=[1]) %}{% for i in range(64) %}"
        "{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x|length }}",
        "list over 100000 items",
    ),
}


@pytest.mark.parametrize("name", BOMBS)
async def test_a_template_bomb_is_refused_at_save_naming_the_limit(
    hostile: Hostile, name: str
) -> None:
    source, limit = BOMBS[name]
    rule = hostile.rule(f"bomb-{name}", source)
    r = await hostile.client.post("/v1/rules", json=rule, headers=hostile.as_("marketing"))
    assert errors(r) == {"body.action.template.body": f"template_limit: {limit}"}
    r = await hostile.client.post("/v1/rules/preview", json=rule, headers=hostile.as_("ops_read"))
    assert errors(r) == {"body.action.template.body": f"template_limit: {limit}"}
    r = await hostile.client.get(f"/v1/rules/{rule['id']}", headers=hostile.as_("ops_read"))
    assert r.status_code == 404


async def test_health_is_answered_while_a_bomb_preview_is_judged(hostile: Hostile) -> None:
    # Nested loops within the iteration limit, each turn costly: only the time limit ends it.
    bomb = hostile.rule(
        "slow-bomb",
        "{% set s = 'x y ' * 20000 %}"
        "{% for i in range(100) %}{% for j in range(99) %}{{ s|wordcount }}{% endfor %}"
        "{% endfor %}",
    )
    answered: list[str] = []

    async def judge() -> None:
        r = await hostile.client.post(
            "/v1/rules/preview", json=bomb, headers=hostile.as_("ops_read")
        )
        assert errors(r) == {
            "body.action.template.body": f"template_limit: render time over {RENDER_MS} ms"
        }
        answered.append("bomb")

    async def health() -> None:
        await asyncio.sleep(0.2)  # the bomb is being judged by now (for RENDER_MS)
        r = await hostile.client.get("/healthz")
        assert r.status_code == 200
        answered.append("health")

    await asyncio.gather(judge(), health())
    assert answered == ["health", "bomb"]


async def test_a_mixed_type_between_cannot_be_saved(hostile: Hostile) -> None:
    mixed = {"all": [hostile.mine, {"between": ["profile.attributes.x", 1, "z"]}]}
    r = await hostile.client.post(
        "/v1/rules", json=hostile.rule("mixed", conditions=mixed), headers=hostile.as_("marketing")
    )
    assert errors(r) == {
        "body.conditions": "all[1].between: 'profile.attributes.x': mixes a number and a text; "
        "use one type"
    }


async def test_a_cron_that_never_fires_cannot_be_saved(hostile: Hostile) -> None:
    cron = {"type": "schedule", "kind": "cron", "expression": "0 9 31 2 *"}
    r = await hostile.client.post(
        "/v1/rules", json=hostile.rule("feb31", trigger=cron), headers=hostile.as_("marketing")
    )
    assert errors(r) == {
        "body.trigger.schedule.cron.expression": "never fires: no date matches within 8 years"
    }


async def _write_unchecked(engine: AsyncEngine, rule: dict[str, Any]) -> None:
    """Straight into the rules table, as a rule saved before the checks existed would be."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outreach.rules (id, version, definition, enabled, created_at, "
                "updated_at) VALUES (:id, 1, CAST(:d AS jsonb), true, now(), now())"
            ),
            {"id": rule["id"], "d": orjson.dumps(rule).decode()},
        )


async def test_a_rule_that_raises_is_skipped_then_disabled_while_others_fire(
    hostile: Hostile, engine: AsyncEngine
) -> None:
    good = hostile.rule("good")
    r = await hostile.client.post("/v1/rules", json=good, headers=hostile.as_("marketing"))
    assert r.status_code == 201, r.text
    # Raises TypeError when x is at least 1: a number cannot be ordered against "z".
    bad = hostile.rule(
        "bad", conditions={"all": [hostile.mine, {"between": ["profile.attributes.x", 1, "z"]}]}
    )
    await _write_unchecked(engine, bad)
    current = hostile.app.state.current
    await current.reload(engine)
    assert bad["id"] in current.rules
    applier = hostile.app.state.applier
    try:
        # Four changes, one batch each: the bad rule is skipped each time, the good one fires.
        for n in range(4):
            recorded = await applier.apply([hostile.change(n)])
            assert [a.rule_id for a in recorded] == [good["id"]]
        r = await hostile.client.get(f"/v1/rules/{bad['id']}", headers=hostile.as_("ops_read"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rule"]["enabled"] is True
        assert body["health"]["failures"] == 4
        assert "TypeError" in body["health"]["last_error"]
        # Its preview leaves out the customers it raises on, instead of failing.
        r = await hostile.client.post(
            f"/v1/rules/{bad['id']}/preview", headers=hostile.as_("ops_read")
        )
        assert r.status_code == 200, r.text
        # The fifth failure disables it; the good rule fired on that change all the same.
        recorded = await applier.apply([hostile.change(4), hostile.change(5, x="0")])
        assert sorted(a.rule_id for a in recorded) == [good["id"], good["id"]]
        r = await hostile.client.get(f"/v1/rules/{bad['id']}", headers=hostile.as_("ops_read"))
        body = r.json()
        assert body["rule"]["enabled"] is False
        assert body["version"] == 2
        assert body["health"]["failures"] == 5
        assert body["health"]["disabled_reason"].startswith(
            "disabled by outreach after 5 failures; last: match: TypeError"
        )
        assert bad["id"] not in {r.id for r in current.ruleset.rules}
        recorded = await applier.apply([hostile.change(6)])
        assert [a.rule_id for a in recorded] == [good["id"]]

        r = await hostile.client.get(
            "/v1/audit",
            params={"actor": "outreach", "limit": 500},
            headers=hostile.as_("ops_read"),
        )
        entries = [e for e in r.json()["items"] if e["subject"] == bad["id"]]
        assert [e["action"] for e in entries] == ["rule.disabled"]
        assert entries[0]["after"]["health"]["disabled_reason"].startswith("disabled by outreach")
        metrics = (await hostile.client.get("/metrics")).text
        assert f'tend_outreach_rules_disabled_total{{rule="{bad["id"]}"}} 1.0' in metrics
        assert f'tend_outreach_rule_failures_total{{rule="{bad["id"]}"}} 5.0' in metrics
    finally:
        for rule in (good, bad):
            await hostile.client.delete(f"/v1/rules/{rule['id']}", headers=hostile.as_("marketing"))


async def test_a_template_over_a_limit_for_one_customer_fails_that_action_only(
    hostile: Hostile,
) -> None:
    # Fine on the sample card (14 orders); over the range limit for a customer with 500.
    rule = hostile.rule("per-order", "{% for i in range(card.value.orders * 100) %}.{% endfor %}")
    r = await hostile.client.post("/v1/rules", json=rule, headers=hostile.as_("marketing"))
    assert r.status_code == 201, r.text
    try:
        big, small = hostile.change(20), hostile.change(21)
        big.card["value"]["orders"] = 500
        small.card["value"]["orders"] = 3
        recorded = await hostile.app.state.applier.apply([big, small])
        outcome = {a.customer_id: (a.status, a.reason) for a in recorded}
        assert outcome == {
            big.customer_id: ("failed", "template_limit"),
            small.customer_id: ("pending", None),
        }
        r = await hostile.client.get(
            "/v1/actions",
            params={"customer_id": big.customer_id},
            headers=hostile.as_("ops_read"),
        )
        [action] = r.json()["items"]
        assert action["detail"] == "body: template_limit: range over 10000"
        # The operator's signal: one template failure against the rule, with its reason.
        metrics = (await hostile.client.get("/metrics")).text
        expected = f'rule="{rule["id"]}"'
        [line] = [
            m
            for m in metrics.splitlines()
            if m.startswith("tend_outreach_template_failures_total{") and expected in m
        ]
        assert 'reason="template_limit"' in line and line.endswith(" 1.0")
    finally:
        await hostile.client.delete(f"/v1/rules/{rule['id']}", headers=hostile.as_("marketing"))


async def test_a_schedule_that_raises_is_skipped_then_disabled(
    hostile: Hostile, engine: AsyncEngine
) -> None:
    good = hostile.rule("visit-ok")
    r = await hostile.client.post("/v1/rules", json=good, headers=hostile.as_("marketing"))
    assert r.status_code == 201, r.text
    never = hostile.rule(
        "feb31-stored", trigger={"type": "schedule", "kind": "cron", "expression": "0 9 31 2 *"}
    )
    await _write_unchecked(engine, never)
    await hostile.app.state.current.reload(engine)
    try:
        for n in range(30, 35):
            recorded = await hostile.app.state.applier.apply([hostile.change(n)])
            assert [a.rule_id for a in recorded] == [good["id"]]
        r = await hostile.client.get(f"/v1/rules/{never['id']}", headers=hostile.as_("ops_read"))
        health = r.json()["health"]
        assert r.json()["rule"]["enabled"] is False
        assert health["last_error"].startswith("schedule: CroniterBadDateError")
    finally:
        for rule in (good, never):
            await hostile.client.delete(f"/v1/rules/{rule['id']}", headers=hostile.as_("marketing"))
