"""Ingest against the real broker and database: what a backend posting events relies on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from shared.events import Envelope
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def order(**overrides: Any) -> dict[str, Any]:
    body = {
        "order_id": _uid("o"),
        "customer_id": _uid("c"),
        "occurred_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "status": "paid",
        "amount": "59.90",
        "currency": "USD",
        "items": [{"sku": "TEA-1", "quantity": 2, "unit_price": "29.95"}],
    }
    body.update(overrides)
    return body


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def records_with(settings: CommonSettings, event_ids: set[str]) -> list[Any]:
    topic = Topics.from_settings(settings).events
    return [
        r
        for r in await read_all(settings.kafka_bootstrap_servers, topic)
        if orjson.loads(r.value)["event_id"] in event_ids
    ]


async def test_posted_order_is_on_the_topic_keyed_by_customer_with_the_full_envelope(
    ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    body = order()
    resp = await ingest.post("/v1/orders", json=body, headers=auth(keys["ingest"]))
    assert resp.status_code == 202, resp.text
    event_id = resp.json()["event_id"]
    assert resp.json() == {"status": "accepted", "event_id": event_id, "event_type": "order.paid"}

    [record] = await records_with(settings, {event_id})
    assert record.key == body["customer_id"].encode()
    envelope = Envelope.from_json(record.value)
    assert envelope.event_type == "order.paid"
    assert envelope.schema_version == 1
    assert envelope.customer_id == body["customer_id"]
    assert envelope.occurred_at == datetime.fromisoformat(body["occurred_at"])
    assert envelope.received_at >= envelope.occurred_at
    assert envelope.source == "test-ingest"
    assert str(envelope.data.amount) == "59.90"  # type: ignore[union-attr]
    assert dict(record.headers)["event_type"] == b"order.paid"


@pytest.mark.parametrize("how", ["body", "header", "derived"])
async def test_a_retry_is_a_duplicate_and_a_reused_id_with_other_payload_is_409(
    how: str, ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    body = order()
    headers = auth(keys["ingest"])
    if how == "body":
        body["event_id"] = _uid("evt")
    elif how == "header":
        headers["Idempotency-Key"] = _uid("idem")

    first = await ingest.post("/v1/orders", json=body, headers=headers)
    again = await ingest.post("/v1/orders", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    assert again.json()["event_id"] == first.json()["event_id"]

    changed = await ingest.post("/v1/orders", json={**body, "amount": "1.00"}, headers=headers)
    assert changed.status_code == 409, changed.text
    assert changed.json()["errors"][0]["field"] == "event_id"

    assert len(await records_with(settings, {first.json()["event_id"]})) == 1


async def test_partial_refunds_of_one_order_are_separate_events_by_refund_id(
    ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    paid = order()
    refund = {**paid, "status": "refunded", "amount": "10.00", "items": []}
    answers = [
        await ingest.post("/v1/orders", json=body, headers=auth(keys["ingest"]))
        for body in (
            paid,
            {**refund, "refund_id": "r-1"},
            {**refund, "refund_id": "r-2"},
            {**refund, "refund_id": "r-2"},  # a retry of the second refund
        )
    ]
    assert [a.status_code for a in answers] == [202, 202, 202, 200], [a.text for a in answers]
    ids = {a.json()["event_id"] for a in answers}
    assert len(ids) == 3
    refunds = await records_with(settings, ids)
    assert sorted(orjson.loads(r.value)["data"].get("refund_id") or "" for r in refunds) == [
        "",
        "r-1",
        "r-2",
    ]
    # A refund id on anything but a refund is refused, naming the field.
    bad = await ingest.post(
        "/v1/orders", json={**paid, "refund_id": "r-3"}, headers=auth(keys["ingest"])
    )
    assert bad.status_code == 422, bad.text
    assert [e["field"] for e in bad.json()["errors"]] == ["body.refund_id"]


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"amount": "1e3"}, "body.amount", "no exponent"),
        ({"amount": "1E+3"}, "body.amount", "no exponent"),
        ({"amount": "59.905"}, "body.amount", "at most 2 decimals in USD"),
        ({"amount": 0.30000000000000004}, "body.amount", "at most 2 decimals in USD"),
        ({"outstanding": "1.5e1"}, "body.outstanding", "no exponent"),
        (
            {"items": [{"sku": "TEA-1", "quantity": 1, "unit_price": "2.999"}]},
            "body.items",
            "item 0: unit_price: at most 2 decimals",
        ),
        ({"occurred_at": "1900-03-01T10:00:00Z"}, "body.occurred_at", "the earliest instant"),
        ({"occurred_at": "2999-01-01T00:00:00Z"}, "body.occurred_at", "in the future"),
    ],
)
async def test_money_and_times_a_shop_could_not_mean_are_refused_naming_the_field(
    overrides: dict[str, Any],
    field: str,
    reason: str,
    ingest: httpx.AsyncClient,
    keys: dict[str, str],
) -> None:
    resp = await ingest.post("/v1/orders", json=order(**overrides), headers=auth(keys["ingest"]))
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert error["field"] == field
    assert reason in error["reason"]


async def test_amounts_as_plain_decimals_or_json_numbers_are_accepted(
    ingest: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    for amount in ("59.90", "60", "0.5", 59.9, 1000):
        resp = await ingest.post(
            "/v1/orders", json=order(amount=amount), headers=auth(keys["ingest"])
        )
        assert resp.status_code == 202, (amount, resp.text)


async def test_a_customer_upsert_retried_without_occurred_at_is_still_a_duplicate(
    ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    body = {"customer_id": _uid("c"), "email": "ada@example.com", "timezone": "Europe/Paris"}
    first = await ingest.post("/v1/customers", json=body, headers=auth(keys["ingest"]))
    again = await ingest.post("/v1/customers", json=body, headers=auth(keys["ingest"]))
    assert (first.status_code, again.status_code) == (202, 200)
    [record] = await records_with(settings, {first.json()["event_id"]})
    # Only what was sent travels: an absent field must not erase a stored one downstream.
    assert set(orjson.loads(record.value)["data"]) == {"email", "timezone"}


async def test_a_batch_with_one_bad_item_accepts_the_others_and_names_the_bad_field(
    ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings
) -> None:
    customer = _uid("c")
    now = datetime.now(UTC).isoformat()
    events = [
        {"type": "order", **order(customer_id=customer)},
        {"type": "order", **order(customer_id=customer, amount="-3")},
        {
            "type": "visit",
            "visit_id": _uid("v"),
            "customer_id": customer,
            "occurred_at": now,
            "channel": "store",
        },
        {
            "type": "complaint",
            "complaint_id": _uid("k"),
            "customer_id": customer,
            "occurred_at": now,
            "status": "opened",
            "severity": "high",
            "text": "late",
        },
        {"type": "customer", "customer_id": customer, "name": "Ada", "tags": ["vip"]},
    ]
    resp = await ingest.post("/v1/events", json={"events": events}, headers=auth(keys["ingest"]))
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert (result["accepted"], result["duplicates"], result["rejected"]) == (4, 0, 1)
    bad = result["results"][1]
    assert bad["status"] == "rejected"
    assert bad["errors"] == [
        {"field": "events.1.amount", "reason": "Input should be greater than or equal to 0"}
    ]
    ids = {r["event_id"] for r in result["results"] if r["status"] == "accepted"}
    published = await records_with(settings, ids)
    assert {orjson.loads(r.value)["event_id"] for r in published} == ids
    assert {r.key for r in published} == {customer.encode()}

    again = await ingest.post("/v1/events", json={"events": events}, headers=auth(keys["ingest"]))
    assert (again.json()["accepted"], again.json()["duplicates"]) == (0, 4)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"occurred_at": "2026-01-01T10:00:00"}, "body.occurred_at"),
        ({"occurred_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, "body.occurred_at"),
        ({"amount": "-0.01"}, "body.amount"),
        ({"status": "shipped"}, "body.status"),
        ({"currency": "EUR"}, "body.currency"),
        ({"order_id": "x" * 200}, "body.order_id"),
        ({"colour": "red"}, "body.colour"),
        ({"customer_id": "has space"}, "body.customer_id"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    change: dict[str, Any], field: str, ingest: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    resp = await ingest.post("/v1/orders", json=order(**change), headers=auth(keys["ingest"]))
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "validation_error"
    assert field in [e["field"] for e in body["errors"]]
    assert all(e["reason"] for e in body["errors"])


async def test_oversized_and_non_json_bodies_are_refused(
    ingest: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    big = {
        "events": [order(order_id="x" * 100) for _ in range(1)] * 10 + [{"pad": "x" * 1_100_000}]
    }
    resp = await ingest.post("/v1/events", json=big, headers=auth(keys["ingest"]))
    assert resp.status_code == 413
    assert resp.json()["error"] == "payload_too_large"

    resp = await ingest.post(
        "/v1/orders",
        content=b"order_id=1",
        headers={**auth(keys["ingest"]), "content-type": "text/plain"},
    )
    assert resp.status_code == 415
    resp = await ingest.post(
        "/v1/orders",
        content=b"{not json",
        headers={**auth(keys["ingest"]), "content-type": "application/json"},
    )
    assert resp.status_code == 422
    too_many = {"events": [{"type": "visit"}] * 1001}
    resp = await ingest.post("/v1/events", json=too_many, headers=auth(keys["ingest"]))
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["field"] == "body.events"
