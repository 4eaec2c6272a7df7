"""``GET /v1/customers/{id}/schedule``: what outreach will do next for one customer — the
schedule rules' next instants and the decided actions still waiting — from the real ledger."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.api.schedule import router
from services.outreach.core.rules import Rule, RuleSet
from services.outreach.shell.current import Current
from services.outreach.shell.service import OutreachState
from shared.auth import KeyStore
from shared.http import create_app, no_lifespan
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)


@pytest_asyncio.fixture
async def outreach(engine: AsyncEngine) -> OutreachState:
    state = OutreachState()
    state.engine = engine
    state.keys = KeyStore(engine, 0)
    state.current = Current()
    return state


@pytest_asyncio.fixture
async def api(
    outreach: OutreachState, settings: CommonSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        service="schedule-test",
        title="schedule",
        description="the customer schedule under test",
        lifespan=no_lifespan,
        readiness=lambda _: {},
        max_body=settings.max_body_bytes,
    )
    app.include_router(router)
    app.state = outreach
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
        yield client


async def test_a_customers_schedule_and_waiting_actions_soonest_first(
    api: httpx.AsyncClient, engine: AsyncEngine, keys: dict[str, str]
) -> None:
    tag = uuid.uuid4().hex[:8]
    customer, other = f"sch-{tag}", f"sch-{tag}-other"
    rule = f"sch-{tag}-birthday"
    definition = {"id": rule, "action": {"kind": "greeting", "channel": "email"}}
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outreach.rules (id, version, definition, enabled, created_at, "
                "updated_at) VALUES (:id, 1, CAST(:d AS jsonb), true, :at, :at)"
            ),
            {"id": rule, "d": orjson.dumps(definition).decode(), "at": NOW},
        )
        # The customer waits in the birthday rule's line since yesterday (its daily limit
        # passed them over).
        for rule_id, who, due, waiting_since in (
            (rule, customer, NOW + timedelta(days=30), NOW - timedelta(days=1)),
            (f"sch-{tag}-gone", customer, NOW + timedelta(days=2), None),  # its rule is no more
            (rule, other, NOW + timedelta(days=1), None),
        ):
            await conn.execute(
                text(
                    "INSERT INTO outreach.schedule (rule_id, customer_id, due_at, waiting_since) "
                    "VALUES (:r, :c, :due, :w)"
                ),
                {"r": rule_id, "c": who, "due": due, "w": waiting_since},
            )
        ids = {}
        for name, who, status, reason, not_before, next_at in (
            ("quiet", customer, "scheduled", "quiet_hours", NOW + timedelta(hours=8), None),
            ("held", customer, "held", "open_complaint", None, None),
            ("due", customer, "pending", None, None, NOW - timedelta(minutes=1)),
            ("sent", customer, "sent", None, None, None),
            ("theirs", other, "scheduled", "quiet_hours", NOW, None),
        ):
            ids[name] = str(uuid.uuid4())
            await conn.execute(
                text(
                    "INSERT INTO outreach.actions (id, rule_id, customer_id, occurrence, kind, "
                    "channel, priority, status, reason, decided_at, not_before, next_attempt_at) "
                    "VALUES (:id, :rule, :c, :id, 'recall', 'email', 50, :status, :reason, "
                    ":decided, :nb, :next)"
                ),
                {
                    "id": ids[name],
                    "rule": rule,
                    "c": who,
                    "status": status,
                    "reason": reason,
                    "decided": NOW - timedelta(hours=2),
                    "nb": not_before,
                    "next": next_at,
                },
            )
    try:
        resp = await api.get(
            f"/v1/customers/{customer}/schedule", headers={"X-API-Key": keys["ops_read"]}
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["customer_id"] == customer
        assert [(s["rule_id"], s["kind"]) for s in body["scheduled"]] == [
            (f"sch-{tag}-gone", None),
            (rule, "greeting"),
        ]
        assert body["scheduled"][1]["due_at"] == "2030-07-14T12:00:00Z"
        assert [s["waiting_since"] for s in body["scheduled"]] == [None, "2030-06-13T12:00:00Z"]
        waiting = body["waiting"]
        assert [w["id"] for w in waiting] == [ids["due"], ids["quiet"], ids["held"]]
        assert [(w["status"], w["reason"]) for w in waiting] == [
            ("pending", None),
            ("scheduled", "quiet_hours"),
            ("held", "open_complaint"),
        ]
        assert waiting[1]["not_before"] == "2030-06-14T20:00:00Z"

        nobody = await api.get(
            f"/v1/customers/nobody-{tag}/schedule", headers={"X-API-Key": keys["ops_read"]}
        )
        assert nobody.json() == {"customer_id": f"nobody-{tag}", "scheduled": [], "waiting": []}
        assert (await api.get(f"/v1/customers/{customer}/schedule")).status_code == 401
        ingest_only = await api.get(
            f"/v1/customers/{customer}/schedule", headers={"X-API-Key": keys["ingest"]}
        )
        assert ingest_only.status_code == 403
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM outreach.actions WHERE id = ANY(CAST(:ids AS text[]))"),
                {"ids": list(ids.values())},
            )
            await conn.execute(
                text("DELETE FROM outreach.schedule WHERE customer_id IN (:a, :b)"),
                {"a": customer, "b": other},
            )
            await conn.execute(text("DELETE FROM outreach.rules WHERE id = :id"), {"id": rule})


async def test_each_scheduled_rule_says_whether_it_would_act_for_the_customer_now(
    api: httpx.AsyncClient, outreach: OutreachState, engine: AsyncEngine, keys: dict[str, str]
) -> None:
    # A low-tier customer has a row for every schedule rule (the index is kept for everyone,
    # conditions are judged when a row comes due) and one in a win-back's line.
    tag = uuid.uuid4().hex[:8]
    customer = f"sch-{tag}"
    daily: dict[str, object] = {"type": "schedule", "kind": "cron", "expression": "0 10 * * *"}

    def rule(name: str, trigger: dict[str, object], **conditions: object) -> Rule:
        return Rule.model_validate(
            {
                "id": f"{tag}-{name}",
                "name": name,
                "trigger": trigger,
                "conditions": conditions or None,
                "action": {
                    "kind": "recall",
                    "channel": "email",
                    "template": {"subject": "Hello", "body": "We miss you"},
                },
            }
        )

    rules = [
        rule("key", daily, eq=["tier", "key"]),
        rule("low", daily, eq=["tier", "low"]),
        rule("winback", {"type": "stage", "to": ["churned"]}),
        rule("declining", {"type": "stage", "to": ["declining"]}),
    ]
    outreach.current.ruleset = RuleSet(rules)
    outreach.current.rules = {r.id: r for r in rules}
    card = {
        "customer_id": customer,
        "profile": {"consent": {"email": False, "marketing": True}},
        "tier": "low",
        "stage": "churned",
        "stage_since": "2030-05-01T00:00:00Z",
        "previous_stage": "declining",
        "as_of": "2030-06-14T12:00:00Z",
    }
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outreach.cards (customer_id, card, complaint_open, change_at) "
                "VALUES (:c, CAST(:card AS jsonb), false, :at)"
            ),
            {"c": customer, "card": orjson.dumps(card).decode(), "at": NOW},
        )
        for n, rule_id in enumerate((*(r.id for r in rules), f"{tag}-gone")):
            await conn.execute(
                text(
                    "INSERT INTO outreach.schedule (rule_id, customer_id, due_at) "
                    "VALUES (:r, :c, :due)"
                ),
                {"r": rule_id, "c": customer, "due": NOW + timedelta(hours=n + 1)},
            )
    try:
        resp = await api.get(
            f"/v1/customers/{customer}/schedule", headers={"X-API-Key": keys["ops_read"]}
        )
        assert resp.status_code == 200, resp.text
        assert [(s["rule_id"], s["conditions_hold"]) for s in resp.json()["scheduled"]] == [
            (f"{tag}-key", False),  # a rule for key customers does nothing for a low one
            (f"{tag}-low", True),
            (f"{tag}-winback", True),  # they are churned: the win-back's line is theirs
            (f"{tag}-declining", False),  # they are no longer declining
            (f"{tag}-gone", None),  # a rule no longer in force says nothing
        ]
        # Every rule here writes email, to which they have not consented: the rules that
        # would act say it would be held back; those that would not say nothing of it.
        assert [s["held_back"] for s in resp.json()["scheduled"]] == [
            None,
            {"reason": "no_consent", "detail": "no email consent"},
            {"reason": "no_consent", "detail": "no email consent"},
            None,
            None,
        ]
        # Once they consent, nothing in their standing holds the messages back.
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE outreach.cards SET card = jsonb_set(card, '{profile,consent,email}', "
                    "'true') WHERE customer_id = :c"
                ),
                {"c": customer},
            )
        resp = await api.get(
            f"/v1/customers/{customer}/schedule", headers={"X-API-Key": keys["ops_read"]}
        )
        assert [s["held_back"] for s in resp.json()["scheduled"]] == [None] * 5
        # On the suppression list, every message that would go is held back.
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outreach.suppressions (customer_id, reason, source, created_at) "
                    "VALUES (:c, 'asked by phone', 'api', :at)"
                ),
                {"c": customer, "at": NOW},
            )
        resp = await api.get(
            f"/v1/customers/{customer}/schedule", headers={"X-API-Key": keys["ops_read"]}
        )
        assert [(s["held_back"] or {}).get("reason") for s in resp.json()["scheduled"]] == [
            None,
            "suppressed",
            "suppressed",
            None,
            None,
        ]
    finally:
        async with engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM outreach.schedule WHERE customer_id = :c"), {"c": customer}
            )
            await conn.execute(
                text("DELETE FROM outreach.cards WHERE customer_id = :c"), {"c": customer}
            )
            await conn.execute(
                text("DELETE FROM outreach.suppressions WHERE customer_id = :c"), {"c": customer}
            )
