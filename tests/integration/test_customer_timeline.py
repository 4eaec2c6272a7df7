"""A customer's timeline and their card explained, through scoring's HTTP API over the real
PostgreSQL: the facts go in through scoring's real write path (the consumer's applier), so
the stage history the timeline reads is the one production writes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.scoring.core.card import Population
from shared.clock import FixedClock
from tests.integration.test_scoring_read_api import NOW, Shop, auth, event, order, profile

pytestmark = pytest.mark.integration


async def _all(client: httpx.AsyncClient, path: str, key: str, **params: Any) -> list[Any]:
    """Every entry, following cursors."""
    items: list[Any] = []
    query: dict[str, Any] = {"limit": 4, **params}
    while True:
        resp = await client.get(path, params=query, headers=auth(key))
        assert resp.status_code == 200, resp.text
        items += resp.json()["items"]
        if resp.json()["next_cursor"] is None:
            return items
        query["cursor"] = resp.json()["next_cursor"]


async def test_a_timeline_lists_every_fact_newest_first_a_page_at_a_time(
    scoring: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str]
) -> None:
    client, app = scoring
    shop = Shop(app, FixedClock(NOW), Population())
    cid = shop.cid(1)
    t = NOW - timedelta(days=60)

    def complaint(at_day: int, status: str, severity: str) -> Any:
        data = {"complaint_id": "k1", "status": status, "severity": severity, "text": "broken"}
        return event(cid, f"complaint.{status}", t + timedelta(days=at_day), data)

    def visit(at_day: int, visit_id: str) -> Any:
        data = {"visit_id": visit_id, "channel": "web"}
        return event(cid, "visit.recorded", t + timedelta(days=at_day, hours=1), data)

    await shop.apply(
        profile(cid, t, name="Ada Lovelace", email="ada@example.com"),
        order(cid, t + timedelta(days=1), "120.00", "placed", order_id="o1"),
        order(cid, t + timedelta(days=1, hours=2), "120.00", "paid", order_id="o1"),
        order(cid, t + timedelta(days=20), "80.00", "paid", order_id="o2"),
        event(
            cid,
            "order.refunded",
            t + timedelta(days=22),
            {"order_id": "o2", "status": "refunded", "amount": "30.00", "currency": "USD"},
        ),
        order(cid, t + timedelta(days=30), "15.00", "placed", order_id="o3"),
        event(
            cid,
            "order.cancelled",
            t + timedelta(days=31),
            {"order_id": "o3", "status": "cancelled", "amount": "15.00", "currency": "USD"},
        ),
        complaint(40, "opened", "medium"),
        complaint(41, "opened", "high"),
        complaint(43, "resolved", "high"),
        visit(50, "v1"),
        visit(55, "v2"),
    )
    key = keys["ops_read"]
    path = f"/v1/customers/{cid}/timeline"
    entries = await _all(client, path, key)
    stage_moves = [e for e in entries if e["type"] == "stage.changed"]
    assert [(e["data"]["from_stage"], e["data"]["to_stage"]) for e in stage_moves][-1] == (
        "prospect",
        "new",
    )
    facts = [e for e in entries if e["type"] != "stage.changed"]
    assert [e["type"] for e in facts] == [
        "visit.recorded",
        "visit.recorded",
        "complaint.resolved",
        "complaint.updated",
        "complaint.opened",
        "order.cancelled",
        "order.placed",
        "order.refunded",
        "order.paid",
        "order.paid",
        "order.placed",
        "profile.updated",
    ]
    ats = [(e["at"], e["id"]) for e in entries]
    assert ats == sorted(ats, reverse=True) and len(set(ats)) == len(ats)
    by_type = {e["type"]: e for e in facts}  # the oldest of each type wins
    assert by_type["order.refunded"]["data"] == {"order_id": "o2", "amount": "30.00"}
    assert by_type["order.placed"]["data"] == {
        "order_id": "o1",
        "amount": "120.00",
        "outstanding": "0.00",
    }
    assert by_type["order.cancelled"]["data"] == {"order_id": "o3"}
    assert by_type["complaint.opened"]["data"]["severity"] == "medium"
    assert by_type["complaint.updated"]["data"] == {
        "complaint_id": "k1",
        "severity": "high",
        "category": None,
    }
    assert by_type["visit.recorded"]["data"] == {"visit_id": "v1"}
    # Field names, never their values.
    assert by_type["profile.updated"]["data"] == {"fields": ["email", "name"]}
    assert by_type["profile.updated"]["at"] == t.isoformat().replace("+00:00", "Z")
    assert "ada@example.com" not in str(entries) and "broken" not in str(entries)

    complaints = await _all(
        client, path, key, type=["complaint.opened", "complaint.updated", "complaint.resolved"]
    )
    assert [e["id"] for e in complaints] == [
        by_type[t]["id"] for t in ("complaint.resolved", "complaint.updated", "complaint.opened")
    ]

    missing = await client.get("/v1/customers/nobody-ever/timeline", headers=auth(key))
    assert missing.status_code == 404
    bad_type = await client.get(path, params={"type": "order.lost"}, headers=auth(key))
    assert bad_type.status_code == 422
    assert bad_type.json()["errors"][0]["field"] == "query.type.0"
    bad_cursor = await client.get(path, params={"cursor": "abc"}, headers=auth(key))
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["errors"][0]["field"] == "query.cursor"
    assert (await client.get(path)).status_code == 401


async def test_the_explanation_gives_the_cards_own_verdicts_with_reasons(
    scoring: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str]
) -> None:
    client, app = scoring
    shop = Shop(app, FixedClock(NOW), Population())
    cid = shop.cid(2)
    # Four purchase days two weeks apart: mature on their own rhythm, whatever the population.
    await shop.apply(
        *(order(cid, NOW - timedelta(days=50 - 14 * n), "60.00") for n in range(4)),
    )
    key = keys["ops_read"]
    at = {"as_of": NOW.isoformat()}
    card = (await client.get(f"/v1/customers/{cid}", params=at, headers=auth(key))).json()
    resp = await client.get(f"/v1/customers/{cid}/explanation", params=at, headers=auth(key))
    assert resp.status_code == 200, resp.text
    why = resp.json()
    assert why["customer_id"] == cid
    assert why["stage"]["value"] == card["stage"] == "mature"
    assert why["tier"]["value"] == card["tier"]
    assert why["strategy"]["value"] == card["strategy"]
    assert why["segment"]["value"] == (card["rfm"]["segment"] if card["rfm"] else None)
    main = why["stage"]["reasons"][0]
    assert main["code"] == "stage.rhythm"
    assert main["facts"]["purchase_days"] == 4 and main["facts"]["silent_days"] == 8
    assert main["text"].startswith(
        "4 purchase days; last purchase 8 days ago, within the 30 days (never before 30"
    )
    assert main["text"].endswith("→ mature")
    for verdict in ("tier", "segment", "strategy"):
        assert why[verdict]["reasons"] and all(r["text"] for r in why[verdict]["reasons"])

    missing = await client.get("/v1/customers/nobody-ever/explanation", headers=auth(key))
    assert missing.status_code == 404
    bad = await client.get(
        f"/v1/customers/{cid}/explanation", params={"as_of": "yesterday"}, headers=auth(key)
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.as_of"
