"""Scoring's read API for operations (`ops:read`): the customer listing, stage history,
overview and flow, over the real PostgreSQL.

Data goes in through scoring's real write path (the consumer's :class:`EventApplier`), so the
columns and the stage history are exactly what production writes. Listing tests share the
session database and see only their own customers (a unique token in every name and id); the
overview, the flow and the history (which runs the sweep) cover every customer, so they run
on a database of their own.
"""

from __future__ import annotations

import base64
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.core.card import Population
from services.scoring.core.predict import BgNbdParams, GammaGammaParams
from services.scoring.core.rfm import RfmBreakpoints
from services.scoring.core.tiers import TierBreakpoints
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from services.scoring.store import queries
from services.scoring.store.tables import customers
from shared.card import Segment, Stage, Strategy, Tier
from shared.clock import FixedClock
from shared.events import Envelope
from shared.settings import CommonSettings
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

# A population with every part, so cards carry a tier, a segment, a strategy, CLV and
# P(alive); handed to the applier directly, so the session's stored population is untouched.
SCORED = Population(
    rfm=RfmBreakpoints(
        recency_days=(5.0, 15.0, 40.0, 90.0),
        frequency=(1.0, 1.0, 2.0, 3.0),
        monetary=(20.0, 50.0, 100.0, 250.0),
    ),
    tiers=TierBreakpoints(low_cut=1.5, key_cut=4.0, composite_median=2.5, clv_median=40.0),
    bg=BgNbdParams(r=0.24, alpha=4.41, a=0.79, b=2.43),
    gg=GammaGammaParams(p=6.25, q=3.74, v=15.45),
)
NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=UTC)


class Shop:
    """This test's customers: builds their events and applies them through scoring's write
    path at the moment ``clock`` says."""

    def __init__(self, app: FastAPI, clock: FixedClock, population: Population) -> None:
        s = app.state
        self.applier = EventApplier(s.engine, s.settings, clock, PopulationCache(population))
        self.tag = uuid.uuid4().hex[:10]

    def cid(self, n: int) -> str:
        # A fixed-width numeric suffix: id order is the same in Python and in any collation.
        return f"c-{self.tag}-{n:03d}"

    async def apply(self, *events: Envelope) -> None:
        assert await self.applier.apply([(e, e.to_json()) for e in events]) == len(events)


def event(customer_id: str, event_type: str, at: datetime, data: dict[str, Any]) -> Envelope:
    return Envelope.model_validate(
        {
            "event_id": uuid.uuid4().hex,
            "event_type": event_type,
            "customer_id": customer_id,
            "occurred_at": at,
            "received_at": at,
            "source": "test-read-api",
            "data": data,
        }
    )


def order(
    customer_id: str, at: datetime, amount: str, status: str = "paid", order_id: str | None = None
) -> Envelope:
    data = {
        "order_id": order_id or uuid.uuid4().hex,
        "status": status,
        "amount": amount,
        "currency": "USD",
    }
    return event(customer_id, f"order.{status}", at, data)


def profile(customer_id: str, at: datetime, **fields: Any) -> Envelope:
    return event(customer_id, "customer.updated", at, fields)


async def listing(client: httpx.AsyncClient, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every customer the listing returns for ``params``, following cursors."""
    items: list[dict[str, Any]] = []
    query = {"limit": 500, **params}
    while True:
        resp = await client.get("/v1/customers", params=query, headers=auth(key))
        assert resp.status_code == 200, resp.text
        items += resp.json()["items"]
        cursor = resp.json()["next_cursor"]
        if cursor is None:
            return items
        query["cursor"] = cursor


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["customer_id"] for i in items]


@pytest_asyncio.fixture
async def shared(
    scoring: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str]
) -> tuple[httpx.AsyncClient, FastAPI, str]:
    client, app = scoring
    return client, app, keys["ops_read"]


async def test_filters_are_anded_and_repeated_values_are_alternatives(
    shared: tuple[httpx.AsyncClient, FastAPI, str],
) -> None:
    client, app, key = shared
    shop = Shop(app, FixedClock(NOW), SCORED)
    day = NOW.date()
    prospect, new, big_new, growing, declining = (shop.cid(n) for n in range(5))
    await shop.apply(
        profile(prospect, NOW - timedelta(days=3), name=f"{shop.tag} Pat"),
        order(new, noon(day - timedelta(days=2)), "12.00"),
        order(big_new, noon(day - timedelta(days=1)), "900.00"),
        order(growing, noon(day - timedelta(days=20)), "80.00"),
        order(growing, noon(day - timedelta(days=4)), "95.00"),
        order(declining, noon(day - timedelta(days=100)), "30.00"),
        order(declining, noon(day - timedelta(days=80)), "30.00"),
        *(
            profile(c, NOW - timedelta(days=1), name=f"{shop.tag} customer")
            for c in (new, big_new, growing, declining)
        ),
    )
    mine = {i["customer_id"]: i for i in await listing(client, key, q=shop.tag)}
    assert set(mine) == {prospect, new, big_new, growing, declining}
    assert {c: mine[c]["stage"] for c in mine} == {
        prospect: "prospect",
        new: "new",
        big_new: "new",
        growing: "growing",
        declining: "declining",
    }

    async def chosen(**params: Any) -> set[str]:
        return set(ids(await listing(client, key, q=shop.tag, **params)))

    assert await chosen(stage="new") == {new, big_new}
    assert await chosen(stage=["new", "declining"]) == {new, big_new, declining}
    # Every other filter selects exactly the customers whose column holds the value; the
    # data must spread over several values for that to mean something.
    for name, values in (("tier", Tier), ("segment", Segment), ("strategy", Strategy)):
        held = Counter(i[name] for i in mine.values())
        assert len([v for v in held if v is not None]) >= 2, (name, held)
        for value in values:
            expected = {c for c, i in mine.items() if i[name] == value.value}
            assert await chosen(**{name: value.value}) == expected, (name, value)
    key_tier = {c for c, i in mine.items() if i["tier"] == "key"}
    assert key_tier and await chosen(stage="new", tier="key") == key_tier & {new, big_new}
    assert await chosen(stage="mature") == set()

    resp = await client.get("/v1/customers", params={"stage": "asleep"}, headers=auth(key))
    assert resp.status_code == 422
    assert [e["field"] for e in resp.json()["errors"]] == ["query.stage.0"]


async def test_q_finds_name_email_or_phone_in_any_case_and_wildcards_are_literal(
    shared: tuple[httpx.AsyncClient, FastAPI, str],
) -> None:
    client, app, key = shared
    shop = Shop(app, FixedClock(NOW), Population())
    ada, sale = shop.cid(1), shop.cid(2)
    digits = str(uuid.uuid4().int)[:9]
    await shop.apply(
        profile(
            ada,
            NOW - timedelta(days=1),
            name=f"{shop.tag} Ada Lovelace",
            email=f"ada.{shop.tag}@Example.com",
            phone=f"+44 {digits}",
        ),
        profile(sale, NOW - timedelta(days=1), name=f"{shop.tag} sale 100%_off"),
    )

    async def found(q: str) -> list[str]:
        return ids(await listing(client, key, q=q))

    assert await found(f"{shop.tag} ADA LOVELACE") == [ada]
    assert await found(f"ADA.{shop.tag}@example") == [ada]
    assert await found(digits) == [ada]
    [item] = await listing(client, key, q=digits)
    assert (item["name"], item["email"]) == (
        f"{shop.tag} Ada Lovelace",
        f"ada.{shop.tag}@Example.com",
    )
    assert set(await found(shop.tag.upper())) == {ada, sale}
    assert await found(f"{shop.tag} sale 100%_off") == [sale]
    # As wildcards, these would match "<tag> ada lovelace" and "<tag> sale".
    assert await found(f"{shop.tag} a%e") == []
    assert await found(f"{shop.tag} ____") == []


async def test_tag_finds_the_customers_whose_profile_has_it_exactly(
    shared: tuple[httpx.AsyncClient, FastAPI, str],
) -> None:
    client, app, key = shared
    shop = Shop(app, FixedClock(NOW), SCORED)
    vip, vip_buyer, other, untagged, dropped = (shop.cid(n) for n in range(5))
    day = NOW.date()
    tag, other_tag = f"vip-{shop.tag}", f"newsletter-{shop.tag}"
    await shop.apply(
        profile(vip, NOW - timedelta(days=3), name=f"{shop.tag} a", tags=[other_tag, tag]),
        order(vip_buyer, noon(day - timedelta(days=2)), "40.00"),
        profile(vip_buyer, NOW - timedelta(days=3), name=f"{shop.tag} b", tags=[tag]),
        profile(other, NOW - timedelta(days=3), name=f"{shop.tag} c", tags=[other_tag]),
        profile(untagged, NOW - timedelta(days=3), name=f"{shop.tag} d"),
        profile(dropped, NOW - timedelta(days=5), name=f"{shop.tag} e", tags=[tag]),
        # The latest word wins: this customer's tags were replaced.
        profile(dropped, NOW - timedelta(days=4), tags=[other_tag]),
    )

    async def tagged(value: str, **params: Any) -> set[str]:
        return set(ids(await listing(client, key, tag=value, **params)))

    assert await tagged(tag) == {vip, vip_buyer}
    assert await tagged(other_tag) == {vip, other, dropped}
    # Exactly the tag: not another case, not a part of it.
    assert await tagged(tag.upper()) == set()
    assert await tagged(f"vip-{shop.tag[:5]}") == set()
    # With the other filters, all must hold.
    assert await tagged(tag, stage="new") == {vip_buyer}
    assert await tagged(tag, q=f"{shop.tag} a") == {vip}
    # A later update that clears the tags takes the customer out.
    await shop.apply(profile(vip, NOW - timedelta(days=1), tags=[]))
    assert await tagged(tag) == {vip_buyer}

    for bad in ("", "x" * 65):
        resp = await client.get("/v1/customers", params={"tag": bad}, headers=auth(key))
        assert resp.status_code == 422, bad
        assert [e["field"] for e in resp.json()["errors"]] == ["query.tag"]


async def test_the_tag_filter_is_answered_by_the_index_of_tagged_customers(
    engine: AsyncEngine,
) -> None:
    """The GIN index on tags holds only customers who have one (most have none, and each
    write of theirs would add an entry no filter can match); the filter says the same, so
    the planner can use the index. Sequential scans are forbidden here, so a filter the
    index cannot answer would show as a plan without it."""
    where = queries.conditions(queries.Filters(tag="vip"))
    query = select(customers.c.customer_id).where(*where).compile(dialect=engine.dialect)
    params = query.construct_params()
    async with engine.connect() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        found = await conn.exec_driver_sql(
            f"EXPLAIN {query}", tuple(params[name] for name in query.positiontup or ())
        )
        plan = found.scalars().all()
    assert any("ix_customers_tags" in line for line in plan), plan


async def test_name_sort_is_alphabetical_in_any_case_with_the_nameless_last(
    shared: tuple[httpx.AsyncClient, FastAPI, str],
) -> None:
    client, app, key = shared
    shop = Shop(app, FixedClock(NOW), Population())
    tag = f"t-{shop.tag}"
    names = ["carol", "Alice", "bob", "Dave", "alice"]
    await shop.apply(
        *(
            profile(shop.cid(n), NOW - timedelta(days=1), name=name, tags=[tag])
            for n, name in enumerate(names)
        ),
        profile(shop.cid(9), NOW - timedelta(days=1), tags=[tag]),  # no name
    )
    # Ties ("Alice", "alice") by id, in the same direction.
    ascending = [shop.cid(n) for n in (1, 4, 2, 0, 3)] + [shop.cid(9)]
    descending = [shop.cid(n) for n in (3, 0, 2, 4, 1)] + [shop.cid(9)]
    for order_, expected in (("asc", ascending), ("desc", descending)):
        assert ids(await listing(client, key, tag=tag, sort="name", order=order_)) == expected
        walked: list[str] = []
        params: dict[str, Any] = {"tag": tag, "sort": "name", "order": order_, "limit": 2}
        while True:
            resp = await client.get("/v1/customers", params=params, headers=auth(key))
            assert resp.status_code == 200, resp.text
            walked += ids(resp.json()["items"])
            if resp.json()["next_cursor"] is None:
                break
            params["cursor"] = resp.json()["next_cursor"]
        assert walked == expected, order_


async def _sortable_customers(shop: Shop) -> None:
    """Buyers with distinct and with equal figures (ties), and prospects without any."""
    day = NOW.date()
    events: list[Envelope] = []
    amounts = [
        "500.00",
        "20.00",
        "20.00",
        "75.50",
        "75.50",
        "75.50",
        "9.99",
        "250.00",
        "20.00",
        "130.00",
        "45.00",
        "45.00",
        "60.00",
        "310.00",
        "15.00",
        "15.00",
    ]
    for n, amount in enumerate(amounts):
        cid = shop.cid(n)
        # Equal amounts bought on the same day tie on every figure.
        bought = noon(day - timedelta(days=3 + 7 * (amounts.index(amount))))
        events.append(order(cid, bought, amount))
        if n % 5 == 0:
            events.append(order(cid, bought + timedelta(days=2), amount))
    # Everyone gets the tag in their name; the last three are prospects, known by it alone.
    for n in range(len(amounts) + 3):
        events.append(profile(shop.cid(n), NOW - timedelta(days=1), name=f"{shop.tag} x"))
    await shop.apply(*events)


SORT_FIELDS = {
    "value": "value_score",
    "clv": "clv",
    "p_alive": "p_alive",
    "last_order": "last_order_at",
}


def expected_order(items: list[dict[str, Any]], field: str, descending: bool) -> list[str]:
    """Sorted on ``field``, ties by id, in the same direction; customers without it last."""

    def value(item: dict[str, Any]) -> Any:
        v = item[field]
        return datetime.fromisoformat(v) if field == "last_order_at" else float(v)

    present = [i for i in items if i[field] is not None]
    absent = [i for i in items if i[field] is None]
    present.sort(key=lambda i: (value(i), i["customer_id"]), reverse=descending)
    absent.sort(key=lambda i: i["customer_id"], reverse=descending)
    return ids(present + absent)


async def test_each_sort_in_both_orders_puts_customers_without_the_figure_last(
    shared: tuple[httpx.AsyncClient, FastAPI, str],
) -> None:
    client, app, key = shared
    shop = Shop(app, FixedClock(NOW), SCORED)
    await _sortable_customers(shop)
    for sort, field in SORT_FIELDS.items():
        for order_ in ("asc", "desc"):
            items = await listing(client, key, q=shop.tag, sort=sort, order=order_)
            assert len(items) == 19
            assert ids(items) == expected_order(items, field, order_ == "desc"), (sort, order_)
            values = [i[field] for i in items]
            # Prospects have no figures; one-time buyers no P(alive) in the list either (the
            # model judges it from repeat purchases): only the four who bought twice have one.
            unknown = 15 if field == "p_alive" else 3
            if field != "value_score":
                assert values[-unknown:] == [None] * unknown, (sort, order_)
                assert None not in values[:-unknown], (sort, order_)
    default = await listing(client, key, q=shop.tag)
    assert ids(default) == expected_order(default, "value_score", True)


async def test_cursor_pages_cover_every_customer_once_in_order(
    shared: tuple[httpx.AsyncClient, FastAPI, str],
) -> None:
    client, app, key = shared
    shop = Shop(app, FixedClock(NOW), SCORED)
    await _sortable_customers(shop)
    for sort in SORT_FIELDS:
        for order_ in ("asc", "desc"):
            whole = ids(await listing(client, key, q=shop.tag, sort=sort, order=order_))
            walked: list[str] = []
            params: dict[str, Any] = {"q": shop.tag, "sort": sort, "order": order_, "limit": 4}
            pages = 0
            while True:
                resp = await client.get("/v1/customers", params=params, headers=auth(key))
                assert resp.status_code == 200, resp.text
                page = resp.json()
                pages += 1
                assert len(page["items"]) <= 4
                walked += ids(page["items"])
                if page["next_cursor"] is None:
                    break
                params["cursor"] = page["next_cursor"]
            assert walked == whole, (sort, order_)
            assert len(set(walked)) == 19
            assert pages == 5  # 19 customers: four full pages and one of three


async def test_a_bad_cursor_or_limit_is_a_422_naming_it(
    shared: tuple[httpx.AsyncClient, FastAPI, str],
) -> None:
    client, app, key = shared
    shop = Shop(app, FixedClock(NOW), SCORED)
    await _sortable_customers(shop)
    first = await client.get("/v1/customers", params={"q": shop.tag, "limit": 2}, headers=auth(key))
    cursor = first.json()["next_cursor"]
    assert cursor

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    bad = [
        ({"cursor": "not a cursor!"}, "not a cursor"),
        ({"cursor": b64(b"[1, 2]")}, "not a cursor"),
        ({"cursor": b64(b'{"s": "value", "o": "desc", "k": "high", "id": "c"}')}, "not a cursor"),
        (
            {
                "cursor": b64(b'{"s": "last_order", "o": "desc", "k": 3.5, "id": "c"}'),
                "sort": "last_order",
            },
            "not a cursor",
        ),
        ({"cursor": cursor, "sort": "clv"}, "sort=value&order=desc"),
        ({"cursor": cursor, "order": "asc"}, "sort=value&order=desc"),
    ]
    for params, reason in bad:
        resp = await client.get(
            "/v1/customers", params={"q": shop.tag, **params}, headers=auth(key)
        )
        assert resp.status_code == 422, (params, resp.text)
        body = resp.json()
        assert body["error"] == "validation_error"
        [error] = body["errors"]
        assert error["field"] == "query.cursor"
        assert reason in error["reason"]
    for limit in (0, 501):
        resp = await client.get("/v1/customers", params={"limit": limit}, headers=auth(key))
        assert resp.status_code == 422
        assert [e["field"] for e in resp.json()["errors"]] == ["query.limit"]


async def test_unknown_customer_history_is_a_404_naming_the_id(
    shared: tuple[httpx.AsyncClient, FastAPI, str],
) -> None:
    client, _, key = shared
    cid = f"c-{uuid.uuid4().hex}"
    resp = await client.get(f"/v1/customers/{cid}/history", headers=auth(key))
    assert resp.status_code == 404
    assert resp.json() == {
        "error": "not_found",
        "message": f"no customer with id {cid!r} has been seen",
        "errors": [],
    }


@pytest.mark.parametrize(
    "path",
    ["/v1/customers", "/v1/customers/c-1/history", "/v1/stats/overview", "/v1/stats/flow"],
)
async def test_reading_needs_a_key_with_ops_read(
    path: str, scoring: tuple[httpx.AsyncClient, FastAPI], keys: dict[str, str]
) -> None:
    client, _ = scoring
    missing = await client.get(path)
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    wrong = await client.get(path, headers=auth(keys["ingest"]))
    assert wrong.status_code == 403
    assert "'ops:read'" in wrong.json()["message"]
    for role in ("ops_read", "marketing", "ops"):
        resp = await client.get(path, headers=auth(keys[role]))
        assert resp.status_code in (200, 404), (role, resp.text)  # c-1 may not exist


@pytest_asyncio.fixture
async def own_stack(settings: CommonSettings) -> AsyncIterator[tuple[Stack, FixedClock]]:
    """A database and topics of this test's own, for figures over every customer."""
    clock = FixedClock(NOW)
    async with isolated_stack(settings, clock) as stack:
        yield stack, clock


async def test_history_follows_new_growing_declining_growing_churned_reactivated(
    own_stack: tuple[Stack, FixedClock],
) -> None:
    # Its own database: the sweep that moves the stage with time looks at every customer.
    stack, clock = own_stack
    key = stack.keys["ops"]
    d0 = date(2030, 3, 4)
    clock.set(noon(d0))
    shop = Shop(stack.scoring_app, clock, Population())  # the default 30-day rhythm
    cid = shop.cid(1)

    async def history() -> dict[str, Any]:
        resp = await stack.scoring.get(f"/v1/customers/{cid}/history", headers=auth(key))
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        assert body["customer_id"] == cid
        return body

    def day(n: int) -> str:
        return (d0 + timedelta(days=n)).isoformat()

    await shop.apply(profile(cid, noon(d0) - timedelta(days=5), name="Lin"))
    assert await history() == {
        "customer_id": cid,
        "stage": "prospect",
        "stage_since": None,
        "transitions": [],
    }

    await shop.apply(order(cid, noon(d0) - timedelta(hours=2), "40.00"))
    steps = [{"from_stage": "prospect", "to_stage": "new", "at": day(0)}]
    assert await history() == {
        "customer_id": cid,
        "stage": "new",
        "stage_since": day(0),
        "transitions": steps,
    }

    clock.set(noon(d0 + timedelta(days=10)))
    await shop.apply(order(cid, clock.now() - timedelta(hours=1), "55.00"))
    steps.append({"from_stage": "new", "to_stage": "growing", "at": day(10)})
    assert await history() == {
        "customer_id": cid,
        "stage": "growing",
        "stage_since": day(10),
        "transitions": steps,
    }

    # Silent for more than two rhythms (60 days) after day 10: declining from day 71, which
    # the sweep records when it runs on day 80.
    clock.set(noon(d0 + timedelta(days=80)))
    swept = await stack.scoring.post("/v1/ops/sweep", headers=auth(key))
    assert swept.status_code == 200, swept.text
    assert swept.json()["moved"] == 1
    steps.append({"from_stage": "growing", "to_stage": "declining", "at": day(71)})
    assert await history() == {
        "customer_id": cid,
        "stage": "declining",
        "stage_since": day(71),
        "transitions": steps,
    }

    # An order while declining ends the slip: back to growing, not reactivated.
    clock.set(noon(d0 + timedelta(days=100)))
    await shop.apply(order(cid, clock.now() - timedelta(hours=1), "25.00"))
    steps.append({"from_stage": "declining", "to_stage": "growing", "at": day(100)})
    assert await history() == {
        "customer_id": cid,
        "stage": "growing",
        "stage_since": day(100),
        "transitions": steps,
    }

    # Own rhythm now 50 days (gaps 10 and 90): declining after 100 silent days, churned after
    # 200; the sweep on day 310 records both.
    clock.set(noon(d0 + timedelta(days=310)))
    swept = await stack.scoring.post("/v1/ops/sweep", headers=auth(key))
    assert swept.status_code == 200, swept.text
    steps.append({"from_stage": "growing", "to_stage": "declining", "at": day(201)})
    steps.append({"from_stage": "declining", "to_stage": "churned", "at": day(301)})
    assert (await history())["transitions"] == steps

    # Back after being lost: that is a reactivation.
    clock.set(noon(d0 + timedelta(days=320)))
    await shop.apply(order(cid, clock.now() - timedelta(hours=1), "30.00"))
    steps.append({"from_stage": "churned", "to_stage": "reactivated", "at": day(320)})
    assert await history() == {
        "customer_id": cid,
        "stage": "reactivated",
        "stage_since": day(320),
        "transitions": steps,
    }


async def test_overview_counts_every_value_and_the_top_fifth_share_of_revenue(
    own_stack: tuple[Stack, FixedClock],
) -> None:
    stack, clock = own_stack
    key = stack.keys["ops"]
    empty = await stack.scoring.get("/v1/stats/overview", headers=auth(key))
    assert empty.status_code == 200, empty.text
    assert empty.json()["customers"] == 0
    assert empty.json()["top20_revenue_share"] is None
    assert set(empty.json()["by_stage"]) == {s.value for s in Stage}
    assert set(empty.json()["by_stage"].values()) == {0}

    shop = Shop(stack.scoring_app, clock, SCORED)
    day = NOW.date()
    singles = [
        "500.00",
        "310.50",
        "120.00",
        "80.25",
        "60.00",
        "40.00",
        "30.00",
        "20.00",
        "10.00",
        "5.00",
    ]
    net: dict[str, Decimal] = {}
    events: list[Envelope] = []
    for n, amount in enumerate(singles):
        events.append(order(shop.cid(n), noon(day - timedelta(days=n + 1)), amount))
        net[shop.cid(n)] = Decimal(amount)
    repeat = shop.cid(20)  # two orders, part of the second refunded: net 100.00
    events += [
        order(repeat, noon(day - timedelta(days=25)), "70.00"),
        order(repeat, noon(day - timedelta(days=5)), "45.50", order_id=f"{repeat}-2"),
        order(
            repeat,
            noon(day - timedelta(days=4)),
            "15.50",
            status="refunded",
            order_id=f"{repeat}-2",
        ),
    ]
    net[repeat] = Decimal("100.00")
    cancelled = shop.cid(30)  # an order cancelled before payment: no live order
    events += [
        order(
            cancelled,
            noon(day - timedelta(days=3)),
            "99.00",
            status="placed",
            order_id=f"{cancelled}-1",
        ),
        order(
            cancelled,
            noon(day - timedelta(days=2)),
            "99.00",
            status="cancelled",
            order_id=f"{cancelled}-1",
        ),
    ]
    events += [profile(shop.cid(n), NOW - timedelta(days=1), name="lead") for n in (40, 41)]
    await shop.apply(*events)

    resp = await stack.scoring.get("/v1/stats/overview", headers=auth(key))
    assert resp.status_code == 200, resp.text
    body = resp.json()

    spends = sorted(net.values(), reverse=True)
    top = math.ceil(len(spends) / 5)  # 11 buyers: the top 3
    assert top == 3
    assert body["customers"] == 14
    assert body["buyers"] == 11
    assert Decimal(body["lifetime_revenue"]) == sum(spends)
    assert body["top20_revenue_share"] == pytest.approx(float(sum(spends[:top]) / sum(spends)))

    expected_stages = {s.value: 0 for s in Stage} | {"prospect": 3, "new": 10, "growing": 1}
    assert body["by_stage"] == expected_stages
    # Tier, segment and strategy as the listing shows them, customer by customer.
    items = await listing(stack.scoring, key)
    assert len(items) == 14
    for name, values, breakdown in (
        ("tier", Tier, "by_tier"),
        ("segment", Segment, "by_segment"),
        ("strategy", Strategy, "by_strategy"),
    ):
        held = Counter(i[name] for i in items)
        assert body[breakdown] == {v.value: held.get(v.value, 0) for v in values}
        assert body["unscored"][name] == held.get(None, 0)
    # The three without a live order have nothing to rank: no tier, segment or strategy.
    assert body["unscored"] == {"tier": 3, "segment": 3, "strategy": 3}


async def test_flow_counts_transitions_per_week_with_empty_weeks_as_zeros(
    own_stack: tuple[Stack, FixedClock],
) -> None:
    stack, clock = own_stack
    key = stack.keys["ops"]
    monday = date(2031, 1, 6)

    def on(n: int) -> datetime:
        return noon(monday + timedelta(days=n))

    clock.set(on(40))
    shop = Shop(stack.scoring_app, clock, Population())  # the default 30-day rhythm
    a, b, c, d = (shop.cid(n) for n in range(4))
    await shop.apply(
        order(a, on(2), "10.00"),  # new in week 0
        order(b, on(3), "10.00"),  # new in week 0
        order(b, on(16), "10.00"),  # growing: not part of the flow
        # New on day -140, declining on -79, churned on -19 (week -3), reactivated on 9
        # (week 1), back to growing on 39.
        order(c, on(-140), "10.00"),
        order(c, on(9), "10.00"),
        order(d, on(22), "10.00"),  # new in week 3
    )

    async def flow(**params: Any) -> dict[str, Any]:
        resp = await stack.scoring.get("/v1/stats/flow", params=params, headers=auth(key))
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        # The transitions only (the base and the money: test_scoring_flow.py).
        moves = ("start", "end", "new", "reactivated", "churned", "net")
        body["periods"] = [{k: p[k] for k in moves} for p in body["periods"]]
        return body

    def week(n: int, new: int = 0, reactivated: int = 0, churned: int = 0) -> dict[str, Any]:
        start = monday + timedelta(weeks=n)
        return {
            "start": start.isoformat(),
            "end": (start + timedelta(days=6)).isoformat(),
            "new": new,
            "reactivated": reactivated,
            "churned": churned,
            "net": new + reactivated - churned,
        }

    moves = {
        -3: week(-3, churned=1),
        0: week(0, new=2),
        1: week(1, reactivated=1),
        3: week(3, new=1),
    }

    # `since` in mid-week counts that whole week.
    body = await flow(
        period="week",
        since=(monday - timedelta(days=19)).isoformat(),
        until=(monday + timedelta(days=30)).isoformat(),
    )
    assert body["period"] == "week"
    assert (body["since"], body["until"]) == (
        (monday - timedelta(days=21)).isoformat(),
        (monday + timedelta(days=34)).isoformat(),
    )
    assert body["periods"] == [moves.get(n, week(n)) for n in range(-3, 5)]

    # By default: the twelve weeks up to the one containing today (day 40, in week 5).
    default = await flow()
    assert default["periods"] == [moves.get(n, week(n)) for n in range(-6, 6)]

    one_day = await flow(
        period="day", since=on(9).date().isoformat(), until=on(9).date().isoformat()
    )
    assert one_day["periods"] == [
        {
            "start": on(9).date().isoformat(),
            "end": on(9).date().isoformat(),
            "new": 0,
            "reactivated": 1,
            "churned": 0,
            "net": 1,
        }
    ]

    months = await flow(
        period="month", since=on(-150).date().isoformat(), until=on(40).date().isoformat()
    )
    starts = [p["start"] for p in months["periods"]]
    assert starts == [
        "2030-08-01",
        "2030-09-01",
        "2030-10-01",
        "2030-11-01",
        "2030-12-01",
        "2031-01-01",
        "2031-02-01",
    ]
    assert sum(p["new"] for p in months["periods"]) == 4
    assert sum(p["reactivated"] for p in months["periods"]) == 1
    assert sum(p["churned"] for p in months["periods"]) == 1

    for params, field in (
        ({"period": "decade"}, "query.period"),
        ({"since": "2031-02-01", "until": "2031-01-01"}, "query.since"),
        ({"period": "day", "since": "2001-01-01", "until": "2031-01-01"}, "query.since"),
    ):
        resp = await stack.scoring.get("/v1/stats/flow", params=params, headers=auth(key))
        assert resp.status_code == 422, (params, resp.text)
        assert [e["field"] for e in resp.json()["errors"]] == [field]
