"""Complaints measured, over the real PostgreSQL and Kafka: the overdue list by tier, severity
and category on the card, resolution times per tier, the complaints table through a rebuild
and an erasure.

Events go in through scoring's real write path (the consumer's :class:`EventApplier`, or the
events topic); each test has a database of its own, since the list and the figures cover
every customer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
import pytest_asyncio
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.app import create_app
from services.scoring.core.card import Population
from services.scoring.core.state import CustomerState, to_micros
from services.scoring.settings import ScoringSettings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.rebuild import rebuild
from services.scoring.shell.refit import refit
from services.scoring.store import customers as customer_store
from shared.clock import FixedClock
from shared.db import create_database, drop_database, make_engine
from shared.events import Envelope
from shared.kafka import Record, publish_many, start_producer
from shared.migrate import ROOT, alembic_config
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.integration.conftest import wait_applied
from tests.integration.test_scoring_read_api import NOW, SCORED, Shop, auth, event, order
from tests.support.databases import fresh_settings
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


def opened(
    customer_id: str, complaint_id: str, at: datetime, severity: str, category: str | None = None
) -> Envelope:
    data: dict[str, Any] = {
        "complaint_id": complaint_id,
        "status": "opened",
        "severity": severity,
    }
    if category is not None:
        data["category"] = category
    return event(customer_id, "complaint.opened", at, data)


def resolved(customer_id: str, complaint_id: str, at: datetime) -> Envelope:
    data = {"complaint_id": complaint_id, "status": "resolved"}
    return event(customer_id, "complaint.resolved", at, data)


@pytest_asyncio.fixture
async def own_stack(settings: CommonSettings) -> AsyncIterator[tuple[Stack, FixedClock]]:
    clock = FixedClock(NOW)
    async with isolated_stack(settings, clock) as stack:
        yield stack, clock


async def tiers_of(stack: Stack, *customer_ids: str) -> list[str | None]:
    async with stack.engine.connect() as conn:
        result = await conn.execute(text("SELECT customer_id, tier FROM scoring.customers"))
        tiers = {cid: tier for cid, tier in result.tuples()}
    return [tiers[c] for c in customer_ids]


async def key_and_low(shop: Shop, stack: Stack) -> tuple[str, str]:
    """A key customer (large, frequent orders) and a low one (one small order)."""
    big, small = shop.cid(1), shop.cid(2)
    await shop.apply(
        *(order(big, NOW - timedelta(days=d), "900.00") for d in (40, 25, 10)),
        order(small, NOW - timedelta(days=30), "5.00"),
    )
    assert await tiers_of(stack, big, small) == ["key", "low"]
    return big, small


async def overdue(stack: Stack, **params: Any) -> dict[str, Any]:
    resp = await stack.scoring.get(
        "/v1/complaints/overdue", params=params, headers=auth(stack.keys["ops"])
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_a_key_customers_complaint_is_overdue_after_4_hours_a_low_ones_after_72(
    own_stack: tuple[Stack, FixedClock],
) -> None:
    stack, clock = own_stack
    shop = Shop(stack.scoring_app, clock, SCORED)
    big, small = await key_and_low(shop, stack)
    await shop.apply(
        opened(big, "k-big", ago(5), "high", "delivery"),
        opened(small, "k-small", ago(4.5), "high", "billing"),
    )

    body = await overdue(stack)
    assert body["next_cursor"] is None
    assert body["items"] == [
        {
            "customer_id": big,
            "complaint_id": "k-big",
            "severity": "high",
            "category": "delivery",
            "tier": "key",
            "opened_at": "2030-06-14T07:00:00Z",
            "due_at": "2030-06-14T11:00:00Z",
            "hours_overdue": 1.0,
        }
    ]

    # The card tells the severity and category of what is open.
    resp = await stack.scoring.get(f"/v1/customers/{big}", headers=auth(stack.keys["ops"]))
    assert resp.status_code == 200, resp.text
    complaints = resp.json()["complaints"]
    assert complaints["open_by_severity"] == {"low": 0, "medium": 0, "high": 1}
    assert complaints["overdue"] == 1
    assert complaints["open_items"] == [
        {
            "complaint_id": "k-big",
            "severity": "high",
            "category": "delivery",
            "opened_at": "2030-06-14T07:00:00Z",
            "due_at": "2030-06-14T11:00:00Z",
        }
    ]

    # Past the low tier's 72 hours both are overdue, oldest first, one page at a time.
    later = (NOW + timedelta(hours=70)).isoformat()
    first = await overdue(stack, as_of=later, limit=1)
    assert [i["complaint_id"] for i in first["items"]] == ["k-big"]
    second = await overdue(stack, as_of=later, limit=1, cursor=first["next_cursor"])
    assert [(i["complaint_id"], i["tier"]) for i in second["items"]] == [("k-small", "low")]
    assert second["items"][0]["hours_overdue"] == 2.5
    assert second["next_cursor"] is None

    bad = await stack.scoring.get(
        "/v1/complaints/overdue", params={"cursor": "xyz"}, headers=auth(stack.keys["ops"])
    )
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["query.cursor"]

    # Resolving takes it off the list and off the card.
    await shop.apply(resolved(big, "k-big", ago(0.5)))
    assert (await overdue(stack))["items"] == []
    resp = await stack.scoring.get(f"/v1/customers/{big}", headers=auth(stack.keys["ops"]))
    assert resp.json()["complaints"]["open_items"] == []
    assert [i["complaint_id"] for i in (await overdue(stack, as_of=later))["items"]] == ["k-small"]


async def test_a_history_loaded_before_the_first_fit_has_its_complaints_held_by_that_fit(
    own_stack: tuple[Stack, FixedClock],
) -> None:
    stack, clock = own_stack
    # A fresh deployment loads its history: nothing is fitted, so no card has a tier.
    shop = Shop(stack.scoring_app, clock, Population())
    buyers = [shop.cid(n) for n in range(10)]
    await shop.apply(
        *(order(cid, NOW - timedelta(days=60), "20.00") for cid in buyers[1:]),
        *(order(buyers[0], NOW - timedelta(days=d), "900.00") for d in (60, 40, 20)),
        opened(buyers[0], "k-imported", ago(48), "high", "delivery"),
    )
    [before] = (await overdue(stack))["items"]
    assert (before["complaint_id"], before["tier"]) == ("k-imported", None)
    # The first fit makes the big buyer key, and holds the complaint to key's 4 hours.
    settings = stack.scoring_app.state.settings
    await refit(stack.engine, clock, PopulationCache(), settings)
    assert await tiers_of(stack, buyers[0]) == ["key"]
    [after] = (await overdue(stack))["items"]
    assert (after["complaint_id"], after["tier"]) == ("k-imported", "key")
    assert after["due_at"] == (ago(48) + timedelta(hours=4)).isoformat().replace("+00:00", "Z")
    resp = await stack.scoring.get("/v1/stats/complaints", headers=auth(stack.keys["ops"]))
    assert resp.json()["by_tier"]["key"]["overdue"] == 1
    # Held in the stored state too: a later tier does not move it.
    async with stack.engine.connect() as conn:
        raw = await conn.scalar(
            text("SELECT state FROM scoring.customers WHERE customer_id = :c"), {"c": buyers[0]}
        )
    assert CustomerState.from_json(raw).complaint_tiers == {"k-imported": "key"}


async def test_resolution_times_by_tier_and_erasure_takes_the_customers_complaints(
    own_stack: tuple[Stack, FixedClock],
) -> None:
    stack, clock = own_stack
    shop = Shop(stack.scoring_app, clock, SCORED)
    big, small = await key_and_low(shop, stack)
    start = NOW - timedelta(days=5)
    events = []
    for n, took in enumerate([1, 2, 3, 4, 10]):
        events += [
            opened(big, f"kb-{n}", start, "medium"),
            resolved(big, f"kb-{n}", start + timedelta(hours=took)),
        ]
    for n, took in enumerate([24, 48]):
        events += [
            opened(small, f"ks-{n}", start, "low"),
            resolved(small, f"ks-{n}", start + timedelta(hours=took)),
        ]
    # Resolved before the window: not counted.
    events += [
        opened(big, "kb-old", start - timedelta(days=20), "high"),
        resolved(big, "kb-old", start - timedelta(days=19)),
        opened(big, "kb-open", ago(5), "high"),
        opened(small, "ks-open", ago(5), "high"),
    ]
    await shop.apply(*events)

    since = (start - timedelta(days=1)).date().isoformat()
    resp = await stack.scoring.get(
        "/v1/stats/complaints", params={"since": since}, headers=auth(stack.keys["ops"])
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["open"], body["overdue"], body["resolved"]) == (2, 1, 7)
    assert body["until"] == NOW.date().isoformat()
    assert body["by_tier"]["key"] == {
        "target_hours": 4.0,
        "open": 1,
        "overdue": 1,
        "resolved": 5,
        "median_hours": 3.0,
        "p90_hours": pytest.approx(7.6),
    }
    assert body["by_tier"]["low"] == {
        "target_hours": 72.0,
        "open": 1,
        "overdue": 0,
        "resolved": 2,
        "median_hours": 36.0,
        "p90_hours": pytest.approx(45.6),
    }
    assert body["by_tier"]["regular"] == {
        "target_hours": 24.0,
        "open": 0,
        "overdue": 0,
        "resolved": 0,
        "median_hours": None,
        "p90_hours": None,
    }
    bad = await stack.scoring.get(
        "/v1/stats/complaints",
        params={"since": "2030-06-20", "until": "2030-06-10"},
        headers=auth(stack.keys["ops"]),
    )
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["query.since"]

    await shop.apply(
        event(big, "customer.erased", NOW - timedelta(minutes=1), {"requested_by": "test"})
    )
    async with stack.engine.connect() as conn:
        left = (
            await conn.execute(
                text("SELECT DISTINCT customer_id FROM scoring.complaints ORDER BY 1")
            )
        ).scalars()
        assert list(left) == [small]
    assert (await overdue(stack))["items"] == []


async def _complaints_table(engine: AsyncEngine) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM scoring.complaints ORDER BY customer_id, complaint_id")
        )
        return [tuple(r) for r in rows]


async def test_a_rebuild_reproduces_the_complaints_table(settings: CommonSettings) -> None:
    tag = uuid.uuid4().hex[:8]
    big, small, prospect = (f"r-{tag}-{n}" for n in range(3))
    events = [
        *(order(big, NOW - timedelta(days=d), "900.00") for d in (40, 25, 10)),
        order(small, NOW - timedelta(days=30), "5.00"),
        opened(big, "k-1", ago(50), "high", "delivery"),
        resolved(big, "k-1", ago(40)),
        opened(big, "k-2", ago(5), "low"),
        opened(small, "k-1", ago(6), "medium", "billing"),
        opened(prospect, "k-9", ago(3), "high"),
    ]
    async with fresh_settings(settings) as own:
        engine = make_engine(own, pool_size=2)
        async with engine.begin() as conn:
            await customer_store.save_population(conn, SCORED)
        scoring_settings = ScoringSettings(consumer_group=f"{own.topic_prefix}scoring")
        producer = await start_producer(own)
        topic = Topics.from_settings(own).events
        await publish_many(
            producer,
            [Record(topic, e.customer_id.encode(), e.to_json()) for e in events],
            timeout=30,
        )
        await producer.stop()
        app = create_app(own, scoring_settings, FixedClock(NOW), periodic=False)
        async with app.router.lifespan_context(app):
            await wait_applied(engine, [e.event_id for e in events])
        before = await _complaints_table(engine)
        assert [(r[0], r[1], r[2], r[3], r[4]) for r in before] == [
            (big, "k-1", "high", "delivery", "key"),
            (big, "k-2", "low", None, "key"),
            (small, "k-1", "medium", "billing", "low"),
            (prospect, "k-9", "high", None, None),
        ]
        assert before[0][6] == ago(40) and all(r[6] is None for r in before[1:])

        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM scoring.complaints"))
        assert await rebuild(own, scoring_settings, FixedClock(NOW)) == len(events)
        assert await _complaints_table(engine) == before
        await engine.dispose()


async def test_upgrading_fills_the_complaints_table_from_the_stored_facts(
    settings: CommonSettings,
) -> None:
    name = f"tend_iso_{uuid.uuid4().hex[:10]}"
    own = await create_database(settings, name)
    engine = make_engine(own, pool_size=1)
    scoring_migrations = alembic_config("scoring", ROOT / "services/scoring/migrations", "")
    scoring_migrations.set_main_option("sqlalchemy.url", own.database_url.replace("%", "%%"))
    try:
        await asyncio.to_thread(command.upgrade, scoring_migrations, "scoring_0005")
        # A customer as the previous version stored them: complaint events without severity.
        old_state = {
            "v": 1,
            "customer_id": "c-old",
            "last_event_at": to_micros(ago(2)),
            "orders": {},
            "complaints": {
                "k-1": {
                    "e-1": ["opened", to_micros(ago(30))],
                    "e-2": ["resolved", to_micros(ago(6))],
                },
                "k-2": {"e-3": ["opened", to_micros(ago(2))]},
            },
            "visits": {"recent": {}, "older": 0, "older_last_at": None},
            "profile": {},
        }
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    """
                    INSERT INTO scoring.customers (customer_id, state, stage, tier, value_score,
                        lifetime_spend, updated_at)
                    VALUES ('c-old', CAST(:state AS json), 'prospect', 'key', 0, 0, now())
                    """
                ),
                {"state": orjson.dumps(old_state).decode()},
            )
        await asyncio.to_thread(command.upgrade, scoring_migrations, "head")
        expected = [
            ("c-old", "k-1", None, None, "key", ago(30), ago(6)),
            ("c-old", "k-2", None, None, "key", ago(2), None),
        ]
        assert await _complaints_table(engine) == expected

        # The old facts still read: a new complaint event is applied beside them.
        applier = EventApplier(
            engine, ScoringSettings(), FixedClock(NOW), PopulationCache(Population())
        )
        new = opened("c-old", "k-3", ago(1), "high", "delivery")
        assert await applier.apply([(new, new.to_json())]) == 1
        assert await _complaints_table(engine) == [
            *expected,
            # The card's tier now (no population here: none, so regular's target), while the
            # older ones keep the tier they were raised under.
            ("c-old", "k-3", "high", "delivery", None, ago(1), None),
        ]
        async with engine.connect() as conn:
            raw = await conn.scalar(text("SELECT state FROM scoring.customers"))
        state = CustomerState.from_json(raw)
        # Not held yet: with nothing fitted, the first fit holds it.
        assert state.complaint_tiers == {"k-1": "key", "k-2": "key"}
        assert state.complaints["k-3"][new.event_id].severity == "high"
    finally:
        await engine.dispose()
        await drop_database(settings, name)
