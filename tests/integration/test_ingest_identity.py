"""Ingest's identity map against the real broker and database: identifiers, merges, the
events of a merged customer, automatic merges on a verified identifier, and erasure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka.structs import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app
from services.ingest.identity import held_on
from services.ingest.settings import IngestSettings
from shared.events import Envelope
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _visit(customer_id: str, **more: Any) -> dict[str, Any]:
    return {
        "visit_id": _uid("v"),
        "customer_id": customer_id,
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "channel": "web",
        **more,
    }


def _order(customer_id: str, **more: Any) -> dict[str, Any]:
    return {
        "order_id": _uid("o"),
        "customer_id": customer_id,
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "status": "paid",
        "amount": "25.00",
        "currency": "USD",
        **more,
    }


async def _records(settings: CommonSettings) -> list[ConsumerRecord]:
    return await read_all(settings.kafka_bootstrap_servers, Topics.from_settings(settings).events)


def _merges_of(records: list[ConsumerRecord], survivor: str) -> list[Envelope]:
    return [
        e
        for e in (Envelope.from_json(r.value) for r in records)
        if e.event_type == "customer.merged" and e.customer_id == survivor
    ]


def _by_event_id(records: list[ConsumerRecord], event_id: str) -> ConsumerRecord:
    [record] = [r for r in records if orjson.loads(r.value)["event_id"] == event_id]
    return record


@pytest_asyncio.fixture(scope="module")
async def auto_ingest(settings: CommonSettings) -> AsyncIterator[httpx.AsyncClient]:
    """A second ingest on the same broker and database, merging on a verified email."""
    app = create_app(settings, IngestSettings(auto_merge="email"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            yield client


async def _post(client: httpx.AsyncClient, path: str, body: Any, key: str) -> httpx.Response:
    resp = await client.post(path, json=body, headers=_auth(key))
    assert resp.status_code in (200, 202), resp.text
    return resp


async def test_three_national_formats_of_one_phone_are_one_identifier(
    ingest: httpx.AsyncClient,
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
) -> None:
    customer = _uid("c")
    formats = ["(201) 555-0147", "201-555-0147", "201.555.0147"]
    events = [
        {"type": "visit", **_visit(customer, identifiers=[{"kind": "phone", "value": phone}])}
        for phone in formats
    ]
    resp = await _post(ingest, "/v1/events", {"events": events}, keys["ingest"])
    assert resp.json()["accepted"] == 3, resp.text
    ids = {r["event_id"] for r in resp.json()["results"]}
    published = [
        Envelope.from_json(r.value)
        for r in await _records(settings)
        if orjson.loads(r.value)["event_id"] in ids
    ]
    assert [[i.value for i in e.identifiers] for e in published] == [["+12015550147"]] * 3
    async with engine.connect() as conn:
        held = (
            await conn.execute(
                text("SELECT kind, value FROM ingest.identifiers WHERE customer_id = :c"),
                {"c": customer},
            )
        ).all()
    assert [tuple(r) for r in held] == [("phone", "+12015550147")]


async def test_a_bad_identifier_is_a_422_naming_it(
    ingest: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    bad = [
        {"kind": "email", "value": "ada@example.com"},
        {"kind": "phone", "value": "12"},
        {"kind": "external", "value": "loyalty-1"},
    ]
    one = await ingest.post(
        "/v1/visits", json=_visit(_uid("c"), identifiers=bad), headers=_auth(keys["ingest"])
    )
    assert one.status_code == 422, one.text
    fields = {e["field"]: e["reason"] for e in one.json()["errors"]}
    assert "possible phone number" in fields["body.identifiers.1.value"]
    assert "source" in fields["body.identifiers.2.source"]
    batch = await ingest.post(
        "/v1/events",
        json={"events": [{"type": "visit", **_visit(_uid("c"), identifiers=bad)}]},
        headers=_auth(keys["ingest"]),
    )
    [item] = batch.json()["results"]
    assert item["status"] == "rejected"
    assert {e["field"] for e in item["errors"]} == {
        "events.0.identifiers.1.value",
        "events.0.identifiers.2.source",
    }


async def test_an_explicit_merge_is_published_under_the_survivor_audited_and_redirects(
    ingest: httpx.AsyncClient,
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
) -> None:
    web, store = _uid("web"), _uid("store")
    for cid in (web, store):
        await _post(ingest, "/v1/orders", _order(cid), keys["ingest"])

    merge = await ingest.post(
        f"/v1/customers/{web}/merge",
        json={"from": [store], "reason": "same person, confirmed by phone"},
        headers=_auth(keys["ops"]),
    )
    assert merge.status_code == 202, merge.text
    merge_id = merge.json()["merge_event_id"]
    assert merge.json()["merged_ids"] == [store]

    record = _by_event_id(await _records(settings), merge_id)
    assert record.key == web.encode()
    envelope = Envelope.from_json(record.value)
    assert envelope.event_type == "customer.merged"
    assert envelope.data.merged_ids == [store]  # type: ignore[union-attr]
    assert envelope.data.actor == "test-ops"  # type: ignore[union-attr]
    async with engine.connect() as conn:
        audited = (
            await conn.execute(
                text(
                    "SELECT actor, action, after FROM auth.audit_log "
                    "WHERE service = 'ingest' AND subject = :s"
                ),
                {"s": web},
            )
        ).all()
    assert [(a.actor, a.action, a.after["event_id"]) for a in audited] == [
        ("test-ops", "customer.merged", merge_id)
    ]

    again = await ingest.post(
        f"/v1/customers/{web}/merge",
        json={"from": [store], "reason": "asked twice"},
        headers=_auth(keys["ops"]),
    )
    assert again.status_code == 200, again.text
    assert again.json()["merge_event_id"] == merge_id

    # A later event for the merged id goes under the survivor, saying whom it was sent for.
    later = await _post(ingest, "/v1/orders", _order(store), keys["ingest"])
    record = _by_event_id(await _records(settings), later.json()["event_id"])
    assert record.key == web.encode()
    envelope = Envelope.from_json(record.value)
    assert (envelope.customer_id, envelope.addressed_to) == (web, store)
    assert len(_merges_of(await _records(settings), web)) == 1


async def test_merges_that_cannot_be_made_say_why(
    ingest: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    a, b, c = _uid("a"), _uid("b"), _uid("c")
    for cid in (a, b, c):
        await _post(ingest, "/v1/visits", _visit(cid), keys["ingest"])
    ops = _auth(keys["ops"])

    async def merge(into: str, *ids: str) -> httpx.Response:
        return await ingest.post(
            f"/v1/customers/{into}/merge", json={"from": list(ids), "reason": "t"}, headers=ops
        )

    itself = await merge(a, b, a)
    assert itself.status_code == 422 and itself.json()["errors"][0]["field"] == "body.from.1"
    unknown = await merge(a, _uid("never"))
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "body.from.0"
    assert (await merge(_uid("never"), a)).status_code == 404
    assert (await merge(a, b)).status_code == 202
    elsewhere = await merge(c, b)
    assert elsewhere.status_code == 409 and a in elsewhere.json()["message"]
    into_alias = await merge(b, c)
    assert into_alias.status_code == 409 and a in into_alias.json()["message"]
    reader = await ingest.post(
        f"/v1/customers/{c}/merge",
        json={"from": [a], "reason": "t"},
        headers=_auth(keys["ops_read"]),
    )
    assert reader.status_code == 403


async def test_chains_resolve_to_the_last_survivor(
    ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    x, y, z = _uid("x"), _uid("y"), _uid("z")
    for cid in (x, y, z):
        await _post(ingest, "/v1/visits", _visit(cid), keys["ingest"])
    ops = _auth(keys["ops"])
    first = await ingest.post(
        f"/v1/customers/{y}/merge", json={"from": [x], "reason": "t"}, headers=ops
    )
    assert first.status_code == 202, first.text
    second = await ingest.post(
        f"/v1/customers/{z}/merge", json={"from": [y], "reason": "t"}, headers=ops
    )
    assert second.status_code == 202, second.text
    assert second.json()["merged_ids"] == sorted([x, y])

    later = await _post(ingest, "/v1/visits", _visit(x), keys["ingest"])
    envelope = Envelope.from_json(
        _by_event_id(await _records(settings), later.json()["event_id"]).value
    )
    assert (envelope.customer_id, envelope.addressed_to) == (z, x)


async def test_a_verified_email_of_another_customer_merges_them_before_the_event(
    auto_ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    web, store = _uid("web"), _uid("store")
    email = f"{_uid('ada')}@example.com"
    await _post(auto_ingest, "/v1/customers", {"customer_id": web, "email": email}, keys["ingest"])
    order = _order(store, identifiers=[{"kind": "email", "value": email.upper(), "verified": True}])
    placed = await _post(auto_ingest, "/v1/orders", order, keys["ingest"])

    records = await _records(settings)
    [merge] = _merges_of(records, web)
    assert merge.data.merged_ids == [store]  # type: ignore[union-attr]
    assert merge.data.actor == "auto:email"  # type: ignore[union-attr]
    assert email not in merge.data.reason  # type: ignore[union-attr]
    event = _by_event_id(records, placed.json()["event_id"])
    merge_record = _by_event_id(records, merge.event_id)
    # One key, one partition: the merge comes first.
    assert event.key == merge_record.key == web.encode()
    assert event.partition == merge_record.partition and merge_record.offset < event.offset
    envelope = Envelope.from_json(event.value)
    assert (envelope.customer_id, envelope.addressed_to) == (web, store)


async def test_automatic_merges_are_off_by_default(
    ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    web, store = _uid("web"), _uid("store")
    email = f"{_uid('bob')}@example.com"
    await _post(ingest, "/v1/customers", {"customer_id": web, "email": email}, keys["ingest"])
    order = _order(store, identifiers=[{"kind": "email", "value": email, "verified": True}])
    placed = await _post(ingest, "/v1/orders", order, keys["ingest"])
    records = await _records(settings)
    assert _merges_of(records, web) == [] and _merges_of(records, store) == []
    assert _by_event_id(records, placed.json()["event_id"]).key == store.encode()


async def test_two_racing_requests_make_one_merge(
    auto_ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    web, store = _uid("web"), _uid("store")
    email = f"{_uid('cy')}@example.com"
    await _post(auto_ingest, "/v1/customers", {"customer_id": web, "email": email}, keys["ingest"])
    verified = [{"kind": "email", "value": email, "verified": True}]
    answers = await asyncio.gather(
        *(
            auto_ingest.post(
                "/v1/orders",
                json=_order(store, identifiers=verified),
                headers=_auth(keys["ingest"]),
            )
            for _ in range(4)
        )
    )
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    records = await _records(settings)
    assert len(_merges_of(records, web)) == 1
    for a in answers:
        assert _by_event_id(records, a.json()["event_id"]).key == web.encode()


async def test_erasing_an_alias_erases_the_person_and_clears_the_map(
    ingest: httpx.AsyncClient,
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
) -> None:
    web, store = _uid("web"), _uid("store")
    phone = "+1 201 555 0199"
    await _post(ingest, "/v1/customers", {"customer_id": web, "phone": phone}, keys["ingest"])
    ids = [{"kind": "external", "source": "store", "value": _uid("card")}]
    await _post(ingest, "/v1/visits", _visit(store, identifiers=ids), keys["ingest"])
    merged = await ingest.post(
        f"/v1/customers/{web}/merge",
        json={"from": [store], "reason": "t"},
        headers=_auth(keys["ops"]),
    )
    assert merged.status_code == 202, merged.text
    # What the export's ingest part shows of the person (the whole export needs the peers).
    held = await held_on(engine, store)
    assert held is not None and held["survivor"] == web
    assert sorted(held["customer_ids"]) == sorted([web, store])
    assert {(i["kind"], i["value"]) for i in held["identifiers"]} == {
        ("phone", "+12015550199"),
        ("external", ids[0]["value"]),
    }

    erased = await ingest.delete(f"/v1/customers/{store}", headers=_auth(keys["ops"]))
    assert erased.status_code == 202, erased.text
    assert erased.json()["customer_id"] == web
    assert sorted(erased.json()["erased_ids"]) == sorted([web, store])
    tombstone = _by_event_id(await _records(settings), erased.json()["erasure_id"])
    assert tombstone.key == web.encode()
    assert Envelope.from_json(tombstone.value).addressed_to == store

    async with engine.connect() as conn:
        left = await conn.scalar(
            text(
                "SELECT (SELECT count(*) FROM ingest.identities "
                "        WHERE customer_id = ANY(CAST(:ids AS text[])) "
                "           OR survivor_id = ANY(CAST(:ids AS text[]))) "
                "     + (SELECT count(*) FROM ingest.identifiers "
                "        WHERE customer_id = ANY(CAST(:ids AS text[])) OR value = '+12015550199') "
                "     + (SELECT count(*) FROM auth.audit_log "
                "        WHERE subject = ANY(CAST(:ids AS text[])) "
                "           OR after::text LIKE '%' || :store || '%')"
            ),
            {"ids": [web, store], "store": store},
        )
    assert left == 0
    # Events of the alias from before the erasure are refused like the survivor's.
    late = await ingest.post(
        "/v1/visits",
        json=_visit(store, occurred_at=(datetime.now(UTC) - timedelta(hours=1)).isoformat()),
        headers=_auth(keys["ingest"]),
    )
    assert late.status_code == 422 and "erased" in late.text
