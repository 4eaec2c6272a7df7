"""A property of the ingest → scoring path, on the real broker and database: for any batch of
valid and invalid items, every valid item is accepted and every invalid one rejected naming
its field; exactly the accepted events reach the topic, once each; and scoring's card of every
customer equals the card computed from those events alone."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.core.card import build_card
from services.scoring.core.state import CustomerState, apply
from shared.clock import FixedClock
from shared.events import Envelope
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.integration.conftest import wait_applied
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration

_run = itertools.count()
BASE = datetime.now(UTC).replace(microsecond=0)

# A corruption, and the field a client must be told about.
CORRUPTIONS: dict[str, tuple[str, Any]] = {
    "negative_amount": ("amount", "-5.00"),
    "naive_time": ("occurred_at", "2026-01-01T10:00:00"),
    "future_time": ("occurred_at", (BASE + timedelta(days=2)).isoformat()),
    "unknown_field": ("colour", "blue"),
    "bad_status": ("status", "shipped"),
    "bad_customer_id": ("customer_id", "has spaces"),
}


@st.composite
def item(draw: st.DrawFn, customers: list[str]) -> dict[str, Any]:
    cid = draw(st.sampled_from(customers))
    at = BASE - timedelta(days=draw(st.integers(0, 400)), minutes=draw(st.integers(0, 1440)))
    kind = draw(st.sampled_from(["order", "complaint", "visit", "customer"]))
    uid = uuid.uuid4().hex[:10]
    common = {"type": kind, "customer_id": cid, "occurred_at": at.isoformat()}
    if kind == "order":
        return {
            **common,
            # A small pool of order ids so placed/paid/refunded/cancelled meet on one order.
            "order_id": f"{cid}-o{draw(st.integers(1, 3))}",
            "status": draw(st.sampled_from(["placed", "paid", "refunded", "cancelled"])),
            "amount": str(draw(st.decimals(0, 500, places=2))),
            "currency": "USD",
        }
    if kind == "complaint":
        return {
            **common,
            "complaint_id": f"{cid}-c{draw(st.integers(1, 2))}",
            "status": draw(st.sampled_from(["opened", "resolved"])),
            "severity": draw(st.sampled_from(["low", "medium", "high"])),
        }
    if kind == "visit":
        return {
            **common,
            "visit_id": f"v-{uid}",
            "channel": draw(st.sampled_from(["store", "web", "app", "phone", "sales_call"])),
        }
    return {
        **common,
        "name": draw(
            st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=20)
        )
        or "N",
        "consent": {"email": draw(st.booleans()), "marketing": draw(st.booleans())},
    }


@st.composite
def batch(draw: st.DrawFn) -> list[tuple[dict[str, Any], str | None]]:
    """Items with the corruption applied to each (None: valid)."""
    run = next(_run)
    customers = [f"prop-{run}-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    items = draw(st.lists(item(customers), min_size=1, max_size=25))
    # One event per natural id and status: a second with another payload would be a 409. A
    # profile update's id comes from its content, so the same update twice is one event (the
    # second a duplicate): each update drawn is kept once.
    seen: set[tuple[str, str, str]] = set()
    out: list[tuple[dict[str, Any], str | None]] = []
    for it in items:
        natural = (
            it["type"],
            str(it.get("order_id") or it.get("complaint_id") or it.get("visit_id")),
            str(it.get("status")),
        )
        if it["type"] == "customer":
            natural = ("customer", repr(sorted(it.items())), "")
        if natural in seen:
            continue
        seen.add(natural)
        corruption = draw(st.one_of(st.none(), st.sampled_from(sorted(CORRUPTIONS))))
        if corruption == "negative_amount" and it["type"] != "order":
            corruption = None
        if corruption == "bad_status" and it["type"] not in ("order", "complaint"):
            corruption = None
        if corruption is not None:
            field, value = CORRUPTIONS[corruption]
            it = {**it, field: value}
        out.append((it, corruption))
    return out


@examples(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(items=batch())
async def test_valid_items_are_applied_exactly_and_invalid_ones_rejected_by_field(
    items: list[tuple[dict[str, Any], str | None]],
    ingest: httpx.AsyncClient,
    scoring: tuple[httpx.AsyncClient, FastAPI],
    scoring_clock: FixedClock,
    engine: AsyncEngine,
    keys: dict[str, str],
    settings: CommonSettings,
) -> None:
    scoring_client, scoring_app = scoring
    resp = await ingest.post(
        "/v1/events",
        json={"events": [it for it, _ in items]},
        headers={"Authorization": f"Bearer {keys['ingest']}"},
    )
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    accepted: dict[str, dict[str, Any]] = {}
    for (it, corruption), result in zip(items, results, strict=True):
        if corruption is None:
            assert result["status"] == "accepted", (it, result)
            accepted[result["event_id"]] = it
        else:
            assert result["status"] == "rejected", (it, result)
            field = CORRUPTIONS[corruption][0]
            assert any(e["field"].split(".")[-1] == field for e in result["errors"]), result

    # Exactly the accepted events are on the topic, once each.
    topic = Topics.from_settings(settings).events
    customers = {it["customer_id"] for it, corruption in items if corruption != "bad_customer_id"}
    on_topic = [
        Envelope.from_json(r.value)
        for r in await read_all(settings.kafka_bootstrap_servers, topic)
        if r.key is not None and r.key.decode() in customers
    ]
    assert sorted(e.event_id for e in on_topic) == sorted(accepted)

    # Scoring's cards are the cards of exactly those events.
    await wait_applied(engine, accepted)
    population = scoring_app.state.population.current
    by_customer: dict[str, CustomerState] = {}
    for envelope in on_topic:
        by_customer[envelope.customer_id], _ = apply(
            by_customer.get(envelope.customer_id), envelope, scoring_app.state.settings
        )
    for cid in customers:
        got = await scoring_client.get(
            f"/v1/customers/{cid}", headers={"Authorization": f"Bearer {keys['ops']}"}
        )
        if cid not in by_customer:
            assert got.status_code == 404
            continue
        assert got.status_code == 200, got.text
        want = build_card(
            by_customer[cid], scoring_clock.now(), population, scoring_app.state.settings
        )
        assert orjson.loads(want.model_dump_json()) == got.json()


async def test_a_nul_character_is_refused_at_the_door_naming_the_field(
    ingest: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # PostgreSQL's jsonb cannot hold U+0000: accepted, such an event could never be applied.
    cid = f"nul-{uuid.uuid4().hex[:8]}"
    resp = await ingest.post(
        "/v1/customers",
        json={"customer_id": cid, "name": "Ada\u0000Lovelace"},
        headers={"Authorization": f"Bearer {keys['ingest']}"},
    )
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["errors"]
    assert error["field"].endswith("name") and "NUL" in error["reason"]
    batch = await ingest.post(
        "/v1/events",
        json={"events": [{"type": "customer", "customer_id": cid, "attributes": {"k": "\u0000"}}]},
        headers={"Authorization": f"Bearer {keys['ingest']}"},
    )
    [result] = batch.json()["results"]
    assert result["status"] == "rejected" and "NUL" in result["errors"][0]["reason"]
