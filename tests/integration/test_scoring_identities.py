"""Scoring applies merges on the real broker and database: one card over both histories, the
merged id answering 301, events racing the merge counted once, the same state after a
rebuild, and one erasure for the person. Events go straight onto the events topic, as ingest
publishes them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.app import create_app
from services.scoring.settings import ScoringSettings
from services.scoring.shell.rebuild import rebuild
from shared.changes import Change
from shared.clock import FixedClock
from shared.db import make_engine
from shared.events import Envelope
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.integration.conftest import wait_applied
from tests.support.databases import fresh_settings
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def event(cid: str, kind: str, at: datetime, data: dict[str, Any], **more: Any) -> Envelope:
    return Envelope.model_validate(
        {
            "event_id": uuid.uuid4().hex,
            "event_type": kind,
            "customer_id": cid,
            "occurred_at": at,
            "received_at": at,
            "source": "test-identities",
            "data": data,
            **more,
        }
    )


def order(cid: str, at: datetime, amount: str) -> Envelope:
    data = {"order_id": uuid.uuid4().hex, "status": "paid", "amount": amount, "currency": "USD"}
    return event(cid, "order.paid", at, data)


def merge(survivor: str, merged: list[str], at: datetime) -> Envelope:
    data = {"merged_ids": merged, "reason": "same verified email", "actor": "auto:email"}
    return event(survivor, "customer.merged", at, data)


async def publish(settings: CommonSettings, events: Sequence[Envelope]) -> None:
    topic = Topics.from_settings(settings).events
    producer = await start_producer(settings)
    try:
        await publish_many(
            producer,
            [Record(topic, e.customer_id.encode(), e.to_json()) for e in events],
            timeout=30,
        )
    finally:
        await producer.stop()


async def applied_to(engine: AsyncEngine, event_id: str, customer_id: str) -> None:
    """Until the event is applied for ``customer_id`` (not merely forwarded to it)."""
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        async with engine.connect() as conn:
            found = await conn.scalar(
                text(
                    "SELECT count(*) FROM scoring.inbox WHERE event_id = :e "
                    "AND customer_id = :c AND forwarded_to IS NULL"
                ),
                {"e": event_id, "c": customer_id},
            )
        if found:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{event_id} never applied"
        await asyncio.sleep(0.2)


async def copies_on_topic(settings: CommonSettings, event_id: str) -> list[Envelope]:
    topic = Topics.from_settings(settings).events
    return [
        Envelope.from_json(r.value)
        for r in await read_all(settings.kafka_bootstrap_servers, topic)
        if orjson.loads(r.value)["event_id"] == event_id
    ]


async def test_a_merge_folds_both_histories_into_the_survivors_card(
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
    scoring_clock: FixedClock,
) -> None:
    client, _ = scoring
    tag = uuid.uuid4().hex[:8]
    web, store = f"web-{tag}", f"store-{tag}"
    now = scoring_clock.now()
    email = {"kind": "email", "value": f"ada-{tag}@example.com", "verified": True}
    first = [
        event(
            web,
            "customer.updated",
            now - timedelta(days=40),
            {"name": "Ada", "consent": {"email": True, "sms": True, "marketing": False}},
            identifiers=[email],
        ),
        order(web, now - timedelta(days=30), "40.00"),
        event(
            store,
            "customer.updated",
            now - timedelta(days=20),
            {"name": "Ada Lovelace", "consent": {"email": False, "sms": True, "marketing": True}},
            identifiers=[email],
        ),
        order(store, now - timedelta(days=10), "60.00"),
        order(store, now - timedelta(days=5), "25.00"),
    ]
    await publish(settings, first)
    await wait_applied(engine, [e.event_id for e in first])
    merged = merge(web, [store], now - timedelta(days=1))
    await publish(settings, [merged])
    await applied_to(engine, merged.event_id, web)

    card = (await client.get(f"/v1/customers/{web}", headers=_auth(keys["ops_read"]))).json()
    assert card["value"]["orders"] == 3
    assert card["value"]["lifetime_spend"] == "125.00"
    assert card["profile"]["name"] == "Ada Lovelace"  # the newest value of the field
    consent = card["profile"]["consent"]
    # The most restrictive answer per channel, whichever record is newer.
    assert (consent["email"], consent["sms"], consent["marketing"]) == (False, True, False)

    # The merged id answers with the survivor's card; so do its other routes.
    resp = await client.get(
        f"/v1/customers/{store}",
        params={"as_of": now.isoformat()},
        headers=_auth(keys["ops_read"]),
    )
    assert resp.status_code == 301, resp.text
    assert resp.headers["location"].startswith(f"/v1/customers/{web}?as_of=")
    assert resp.json()["survivor_id"] == web
    resp = await client.get("/v1/customers", params={"q": store}, headers=_auth(keys["ops_read"]))
    assert [i["customer_id"] for i in resp.json()["items"]] == [web]  # found by the alias
    resp = await client.get(f"/v1/customers/{store}/history", headers=_auth(keys["ops_read"]))
    assert resp.status_code == 301 and resp.headers["location"] == f"/v1/customers/{web}/history"

    # One change for the survivor, whose event is the merge; none for the merged id since.
    changes = [
        Change.from_json(r.value)
        for r in await read_all(
            settings.kafka_bootstrap_servers, Topics.from_settings(settings).changes
        )
        if r.key in (web.encode(), store.encode())
    ]
    merge_changes = [c for c in changes if c.event and c.event.event_id == merged.event_id]
    assert [c.customer_id for c in merge_changes] == [web]
    assert merge_changes[0].event is not None
    assert merge_changes[0].event.event_type == "customer.merged"
    assert merge_changes[0].card["value"]["orders"] == 3

    # The same merge again (another event saying so) changes nothing.
    again = merge(web, [store], now)
    await publish(settings, [again])
    await applied_to(engine, again.event_id, web)
    card = (await client.get(f"/v1/customers/{web}", headers=_auth(keys["ops_read"]))).json()
    assert card["value"]["orders"] == 3 and card["value"]["lifetime_spend"] == "125.00"


async def test_an_event_racing_the_merge_is_applied_once_to_the_survivor(
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
    scoring_clock: FixedClock,
) -> None:
    client, _ = scoring
    tag = uuid.uuid4().hex[:8]
    web, store, fresh = f"web-{tag}", f"store-{tag}", f"app-{tag}"
    now = scoring_clock.now()
    before = [
        order(web, now - timedelta(days=9), "10.00"),
        order(store, now - timedelta(days=8), "20.00"),
    ]
    await publish(settings, before)
    await wait_applied(engine, [e.event_id for e in before])

    # The merge and an order under each merged id (one known, one never seen), all at once.
    merged = merge(web, [store, fresh], now - timedelta(days=2))
    racing = [
        order(store, now - timedelta(days=3), "30.00"),
        order(fresh, now - timedelta(days=3), "5.00"),
    ]
    await publish(settings, [merged, *racing])
    await applied_to(engine, merged.event_id, web)
    for e in racing:
        await applied_to(engine, e.event_id, web)

    # A late one after the merge is forwarded: same id, the survivor as customer, the alias it
    # was addressed to kept. Delivered twice, it is forwarded and counted once.
    late = order(store, now - timedelta(days=1), "7.00")
    await publish(settings, [late, late])
    await applied_to(engine, late.event_id, web)
    marker = order(store, now - timedelta(hours=1), "1.00")  # same partition as the repeat
    await publish(settings, [marker])
    await applied_to(engine, marker.event_id, web)
    forwarded = [c for c in await copies_on_topic(settings, late.event_id) if c.customer_id == web]
    assert len(forwarded) == 1
    assert forwarded[0].addressed_to == store

    card = (await client.get(f"/v1/customers/{web}", headers=_auth(keys["ops_read"]))).json()
    assert card["value"]["orders"] == 6
    assert card["value"]["lifetime_spend"] == "73.00"
    async with engine.connect() as conn:
        rows = await conn.scalar(
            text("SELECT count(*) FROM scoring.customers WHERE customer_id = ANY(:ids)"),
            {"ids": [store, fresh]},
        )
    assert rows == 0  # nothing is kept under a merged id


async def _snapshot(engine: AsyncEngine) -> dict[str, Any]:
    async with engine.connect() as conn:
        return {
            name: [tuple(r) for r in await conn.execute(text(sql))]
            for name, sql in {
                "states": "SELECT customer_id, state::text FROM scoring.customers ORDER BY 1",
                "aliases": "SELECT customer_id, survivor_id FROM scoring.customer_ids "
                "WHERE survivor_id IS NOT NULL ORDER BY 1",
                "identifiers": "SELECT * FROM scoring.identifiers ORDER BY 1, 2, 3, 4",
                "orders": "SELECT * FROM scoring.order_facts ORDER BY 1, 2",
            }.items()
        }


async def test_a_rebuild_reaches_the_same_merged_state_and_one_erasure_forgets_the_person(
    settings: CommonSettings,
) -> None:
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:6]
    web, store, app_id, other = f"w-{tag}", f"s-{tag}", f"a-{tag}", f"o-{tag}"
    phone = {"kind": "phone", "value": "+12025550143", "verified": True}
    async with fresh_settings(settings) as own:
        engine = make_engine(own, pool_size=2)
        scoring_settings = ScoringSettings(consumer_group=f"{own.topic_prefix}scoring")
        history = [
            order(web, now - timedelta(days=50), "10.00"),
            event(store, "customer.updated", now - timedelta(days=45), {"email": "A@x.io"}),
            order(store, now - timedelta(days=40), "20.00"),
            event(
                app_id,
                "visit.recorded",
                now - timedelta(days=3),
                {"visit_id": f"v-{tag}", "channel": "app"},
                identifiers=[phone],
            ),
            order(other, now - timedelta(days=30), "99.00"),
        ]
        merges = [
            merge(store, [app_id], now - timedelta(days=4)),
            merge(web, [store], now - timedelta(days=2)),
        ]
        after = [
            order(app_id, now - timedelta(days=1), "5.00"),
            order(store, now - timedelta(hours=5), "6.00"),
        ]
        app = create_app(own, scoring_settings, periodic=False)
        async with app.router.lifespan_context(app):
            await publish(own, history)
            await wait_applied(engine, [e.event_id for e in history])
            for m in merges:
                await publish(own, [m])
                await applied_to(engine, m.event_id, m.customer_id)
            await publish(own, after)
            for e in after:
                await applied_to(engine, e.event_id, web)
        live = await _snapshot(engine)
        assert [a for a in live["aliases"]] == sorted([(app_id, web), (store, web)])
        assert (web, "email", "", "a@x.io") in live["identifiers"]
        assert (web, "phone", "", "+12025550143") in live["identifiers"]

        await rebuild(own, scoring_settings)
        assert await _snapshot(engine) == live

        # One erasure, under the survivor, forgets the person under every id they had; an
        # event from before it under an alias, delivered late, brings nobody back.
        erased = event(web, "customer.erased", now, {"requested_by": "test"})
        stale = order(store, now - timedelta(minutes=1), "3.00")
        marker = order(store, now + timedelta(seconds=1), "2.00")  # a new customer's, after
        app = create_app(own, scoring_settings, periodic=False)
        async with app.router.lifespan_context(app):
            await publish(own, [erased])
            deadline = asyncio.get_running_loop().time() + 30
            while (await _snapshot(engine))["aliases"]:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
            await publish(own, [stale, marker])
            await applied_to(engine, marker.event_id, store)
        left = await _snapshot(engine)
        await engine.dispose()
    states = dict(left["states"])
    assert set(states) == {other, store}
    assert list(orjson.loads(states[store])["orders"]) == [marker.data.order_id]  # type: ignore[union-attr]
    assert all(i[0] != web for i in left["identifiers"])


async def test_search_finds_a_customer_by_id_by_any_identifier_and_by_a_phone_in_any_format(
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
    scoring_clock: FixedClock,
) -> None:
    client, _ = scoring
    tag = uuid.uuid4().hex[:8]
    cid = f"grace-{tag}"
    line = f"{int(tag[:4], 16) % 9000 + 1000:04d}"
    now = scoring_clock.now()
    events = [
        event(
            cid,
            "customer.updated",
            now - timedelta(days=3),
            {"name": "Grace", "phone": f"(415) 555-{line}"},
            identifiers=[
                {"kind": "email", "value": f"g.hopper-{tag}@navy.mil", "verified": True},
                {"kind": "external", "source": "store", "value": f"S-{tag}"},
            ],
        )
    ]
    await publish(settings, events)
    await wait_applied(engine, [e.event_id for e in events])

    async def found(q: str) -> list[str]:
        resp = await client.get(
            "/v1/customers", params={"q": q, "limit": 500}, headers=_auth(keys["ops_read"])
        )
        assert resp.status_code == 200, resp.text
        return [i["customer_id"] for i in resp.json()["items"]]

    for q in (
        cid,
        f"G.Hopper-{tag}@NAVY.mil",
        f"S-{tag}",
        f"+1 415 555 {line}",
        f"1-415-555-{line}",
        f"+1415555{line}",
        f"(415) 555-{line}",
    ):
        assert await found(q) == [cid], q
    assert (
        await found(f"+1 415 555 {line[:3]}9" if line[3] != "9" else f"+1 415 555 {line[:3]}8")
        == []
    )


async def test_the_duplicates_report_finds_a_pair_sharing_an_email_not_a_namesake(
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
    scoring_clock: FixedClock,
) -> None:
    client, _ = scoring
    tag = uuid.uuid4().hex[:8]
    a, b, c = f"dup-{tag}-a", f"dup-{tag}-b", f"dup-{tag}-c"
    now = scoring_clock.now()
    email = f"ada-{tag}@example.com"
    events = [
        event(a, "customer.updated", now, {"name": "Ada King", "email": email}),
        event(b, "customer.updated", now, {"name": "Ada  king", "email": email.upper()}),
        event(
            c,
            "customer.updated",
            now,
            {"name": "Ada King", "email": f"other-{tag}@example.com", "phone": "+44 20 7946 0000"},
        ),
    ]
    await publish(settings, events)
    await wait_applied(engine, [e.event_id for e in events])

    async def report() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            resp = await client.get(
                "/v1/duplicates", params=params, headers=_auth(keys["ops_read"])
            )
            assert resp.status_code == 200, resp.text
            items += resp.json()["items"]
            if resp.json()["next_cursor"] is None:
                return [i for i in items if tag in i["pair"][0]]
            params["cursor"] = resp.json()["next_cursor"]

    [pair] = await report()
    assert pair["pair"] == [a, b]
    assert pair["shared"] == [{"kind": "email", "value": email}]
    assert pair["name_likeness"] == 1.0

    resp = await client.post(
        "/v1/duplicates/dismiss", json={"pair": [a, a]}, headers=_auth(keys["ops"])
    )
    assert resp.status_code == 422 and resp.json()["errors"][0]["field"].startswith("body")
    resp = await client.post(
        "/v1/duplicates/dismiss", json={"pair": [b, a]}, headers=_auth(keys["ops_read"])
    )
    assert resp.status_code == 403
    resp = await client.post(
        "/v1/duplicates/dismiss", json={"pair": [b, a]}, headers=_auth(keys["ops"])
    )
    assert resp.status_code == 200 and resp.json() == {"pair": [a, b], "dismissed": True}
    assert await report() == []
    async with engine.connect() as conn:
        audited = await conn.scalar(
            text(
                "SELECT count(*) FROM auth.audit_log WHERE action = 'duplicate.dismissed' "
                "AND subject = :s"
            ),
            {"s": f"{a} {b}"},
        )
    assert audited == 1


async def test_a_merge_made_on_ingest_gives_one_card_over_both_histories(
    ingest: httpx.AsyncClient,
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    engine: AsyncEngine,
) -> None:
    client, _ = scoring
    tag = uuid.uuid4().hex[:8]
    web, store = f"web-{tag}", f"store-{tag}"
    at = (datetime.now(UTC) - timedelta(days=2)).isoformat()

    async def buy(cid: str, amount: str) -> str:
        body = {
            "order_id": uuid.uuid4().hex,
            "customer_id": cid,
            "occurred_at": at,
            "status": "paid",
            "amount": amount,
            "currency": "USD",
        }
        resp = await ingest.post("/v1/orders", json=body, headers=_auth(keys["ingest"]))
        assert resp.status_code == 202, resp.text
        return str(resp.json()["event_id"])

    await wait_applied(engine, [await buy(web, "10.00"), await buy(store, "20.00")])
    resp = await ingest.post(
        f"/v1/customers/{web}/merge",
        json={"from": [store], "reason": "same person"},
        headers=_auth(keys["ops"]),
    )
    assert resp.status_code == 202, resp.text
    await applied_to(engine, resp.json()["merge_event_id"], web)
    # Ingest sends a later event for the merged id under the survivor.
    await applied_to(engine, await buy(store, "5.00"), web)

    card = (await client.get(f"/v1/customers/{web}", headers=_auth(keys["ops_read"]))).json()
    assert (card["value"]["orders"], card["value"]["lifetime_spend"]) == (3, "35.00")
    resp = await client.get(f"/v1/customers/{store}", headers=_auth(keys["ops_read"]))
    assert resp.status_code == 301 and resp.json()["survivor_id"] == web
