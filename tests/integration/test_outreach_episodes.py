"""Stage rules act once per stage episode, whenever the episode is seen: a shop that loads its
history wins back the key customers it lost recently, once, and not those lost long ago."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from sqlalchemy import text

from cli.replay import ReplayReport, post_events
from services.outreach.settings import OutreachSettings
from shared.db import create_database, drop_database, make_engine
from shared.kafka import Record, publish_many, start_producer
from shared.migrate import alembic_config
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all
from tests.support.pipeline import (
    consumers_assigned,
    outreach_caught_up,
    scoring_op,
    until,
)
from tests.support.receivers import SmtpReceiver
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def _profile(cid: str) -> dict[str, Any]:
    return {
        "type": "customer",
        "customer_id": cid,
        "occurred_at": (NOW - timedelta(days=2000)).isoformat(),
        "name": cid,
        "email": f"{cid}@example.com",
        "timezone": "UTC",
        "consent": {"email": True, "sms": False, "marketing": True},
    }


def _orders(cid: str, days_ago: list[int], amount: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "order",
            "order_id": f"{cid}-{n}",
            "customer_id": cid,
            "occurred_at": (NOW - timedelta(days=d)).isoformat(),
            "status": "paid",
            "amount": amount,
            "currency": "USD",
        }
        for n, d in enumerate(days_ago)
    ]


def history() -> list[dict[str, Any]]:
    """Three big customers and twenty small ones, in time order as an export would be."""
    events = [_profile(c) for c in ("lost-60", "lost-400", "slow")]
    # Buying every 20 days, last 150 days ago: churned after 90 silent days, ~60 days ago.
    events += _orders("lost-60", [150 + 20 * i for i in range(10)], "500.00")
    # The same customer, last seen 490 days ago: lost ~400 days ago.
    events += _orders("lost-400", [490 + 20 * i for i in range(10)], "500.00")
    # A big, slow distributor: every 120 days; churned after 365 silent days, ~30 days ago.
    events += _orders("slow", [396 + 120 * i for i in range(5)], "2000.00")
    for i in range(20):
        cid = f"small-{i:02d}"
        events.append(_profile(cid))
        events += _orders(cid, [5 + 30 * k for k in range(6)], f"{10 + i}.00")
    events.sort(key=lambda e: e["occurred_at"])
    return events


async def winbacks(stack: Stack) -> dict[str, int]:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT customer_id, count(*) FROM outreach.actions "
                "WHERE rule_id = 'winback-churned' GROUP BY customer_id"
            )
        )
        return {r[0]: r[1] for r in rows}


async def ledger_size(stack: Stack) -> int:
    async with stack.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM outreach.actions")) or 0)


async def test_an_imported_history_wins_back_the_key_customers_lost_recently_once(
    settings: CommonSettings,
) -> None:
    events = history()
    async with (
        SmtpReceiver() as smtp,
        isolated_stack(settings, outreach=OutreachSettings(smtp_port=smtp.port)) as stack,
    ):
        assert stack.outreach is not None
        await consumers_assigned(stack)
        resp = await stack.outreach.post("/v1/rule-packs/default", headers=stack.auth("marketing"))
        assert resp.status_code == 200, resp.text
        stack.ingest.headers.update(stack.auth("ingest"))
        report = ReplayReport()
        await post_events(stack.ingest, list(enumerate(events, start=1)), report)
        assert (report.accepted, report.bad) == (len(events), [])

        async def all_scored() -> bool:
            o = await stack.scoring.get("/v1/stats/overview", headers=stack.auth("ops"))
            return bool(o.json()["customers"] == 23)

        await until(all_scored, 60, "scoring every customer")
        await outreach_caught_up(stack, 60)
        # No population yet, so no tiers: a history alone decides no win-back.
        assert await winbacks(stack) == {}

        await scoring_op(stack, "refit")
        cards = {
            c: (await stack.scoring.get(f"/v1/customers/{c}", headers=stack.auth("ops"))).json()
            for c in ("lost-60", "lost-400", "slow")
        }
        assert {c: (v["stage"], v["tier"]) for c, v in cards.items()} == {
            "lost-60": ("churned", "key"),
            "lost-400": ("churned", "key"),
            "slow": ("churned", "key"),
        }

        async def decided() -> dict[str, int] | None:
            found = await winbacks(stack)
            return found if len(found) >= 2 else None

        assert await until(decided, 60, "the win-backs") == {"lost-60": 1, "slow": 1}
        await outreach_caught_up(stack, 60)
        size = await ledger_size(stack)

        # A backtest over the imported history tells the same story, each decision placed
        # when it would have happened: the orders at their own (old) times.
        marketing = stack.auth("marketing")
        winback = await stack.outreach.post("/v1/rules/winback-churned/backtest", headers=marketing)
        assert winback.status_code == 200, winback.text
        assert winback.json()["decided"] == 2
        thanks = {
            "id": "order-thanks",
            "name": "Thanks for an order",
            "trigger": {"type": "event", "event": "order.paid"},
            "action": {"kind": "care", "channel": "webhook", "template": {"body": "thanks"}},
        }
        orders = await stack.outreach.post("/v1/rules/backtest", json=thanks, headers=marketing)
        assert orders.status_code == 200, orders.text
        body = orders.json()
        assert body["decided"] == sum(1 for e in events if e["type"] == "order")
        first_order = min(e["occurred_at"] for e in events if e["type"] == "order")
        assert datetime.fromisoformat(body["decisions_from"]) == datetime.fromisoformat(first_order)
        assert "the event's own time" in body["time_basis"]

        # Every change delivered again, as to an outreach that lost its inbox and restarted
        # from offset zero: the ledger's episode keys decide nothing twice.
        topic = Topics.from_settings(stack.settings).changes
        records = await read_all(stack.settings.kafka_bootstrap_servers, topic)
        async with stack.engine.begin() as conn:
            await conn.execute(text("DELETE FROM outreach.inbox"))
        producer = await start_producer(stack.settings)
        try:
            await publish_many(
                producer, [Record(topic, r.key, r.value) for r in records], timeout=30
            )
        finally:
            await producer.stop()
        await outreach_caught_up(stack, 60)
        assert await winbacks(stack) == {"lost-60": 1, "slow": 1}
        assert await ledger_size(stack) == size
        # The redelivered changes were applied, not dropped by an inbox (scoring may have
        # published a change or two since they were read: those are applied as well).
        async with stack.engine.connect() as conn:
            applied = set((await conn.scalars(text("SELECT change_id FROM outreach.inbox"))).all())
        redelivered = {orjson.loads(r.value)["change_id"] for r in records}
        assert redelivered <= applied, sorted(redelivered - applied)[:5]


async def test_upgrading_keys_the_stage_decisions_already_made_by_their_episode(
    settings: CommonSettings,
) -> None:
    name = f"tend_iso_{uuid.uuid4().hex[:10]}"
    own = await create_database(settings, name)
    engine = make_engine(own, pool_size=1)
    migrations = alembic_config("outreach", ROOT / "services/outreach/migrations", "")
    migrations.set_main_option("sqlalchemy.url", own.database_url.replace("%", "%%"))
    trigger = {"type": "stage", "from": [], "to": ["churned"]}
    rule = {"id": "winback", "trigger": trigger}
    try:
        await asyncio.to_thread(command.upgrade, migrations, "outreach_0005")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outreach.rules (id, version, definition, enabled, created_at, "
                    "updated_at) VALUES ('winback', 1, CAST(:d AS jsonb), true, now(), now())"
                ),
                {"d": orjson.dumps(rule).decode()},
            )
            for cid, stage, since in (
                ("still-lost", "churned", "2026-10-01"),
                ("came-back", "reactivated", "2026-11-20"),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO outreach.cards (customer_id, card, complaint_open, "
                        "change_at) VALUES (:c, CAST(:card AS jsonb), false, now())"
                    ),
                    {
                        "c": cid,
                        "card": orjson.dumps({"stage": stage, "stage_since": since}).decode(),
                    },
                )
                await conn.execute(
                    text(
                        "INSERT INTO outreach.actions (id, rule_id, customer_id, occurrence, "
                        "kind, channel, priority, status, decided_at) VALUES (:id, 'winback', :c, "
                        ":occ, 'winback', 'email', 60, 'sent', '2026-10-01T00:00:00Z')"
                    ),
                    {"id": str(uuid.uuid4()), "c": cid, "occ": str(uuid.uuid4())},
                )
        await asyncio.to_thread(command.upgrade, migrations, "head")
        async with engine.connect() as conn:
            keys = dict(
                (await conn.execute(text("SELECT customer_id, occurrence FROM outreach.actions")))
                .tuples()
                .all()
            )
        # The customer still in the churn it was won back from: keyed by that episode, so the
        # new matching (which keys by episode) finds it decided. The one who came back keeps
        # its old key: that episode is over and never matched again.
        assert keys["still-lost"] == "churned@2026-10-01"
        assert "@" not in keys["came-back"]
    finally:
        await engine.dispose()
        await drop_database(settings, name)
