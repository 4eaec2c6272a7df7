"""The leaky bucket in money, by tier (`GET /v1/stats/flow`) and the cohort table (`GET
/v1/stats/cohorts`), on a fixed synthetic history whose figures are worked out by hand below.

The events go through scoring's real write path (the consumer's applier) into the real
PostgreSQL, on a database of this test's own (the figures cover every customer). Every
expected number is a literal, with the arithmetic beside it; none comes from the service's code.

The shop's rules, at their defaults: a customer with fewer than three purchase days is judged
against the shop's 30-day rhythm, so one silent for more than 60 days is `declining` (from
last purchase + 61 days) and for more than 120 days `churned` (+ 121 days); one with three has
their own median gap as rhythm (declining from + 2 x rhythm + 1, churned from + 4 x rhythm + 1).
A purchase while declining or churned is `reactivated` for 30 days, then `growing`.

The customers (tier: the value score against the cut points below; key = big spenders):

    J regular  2030-06-01 12.00, 2030-09-30 18.00
               new 06-01, declining 08-01, churned 09-30 (+121), reactivated 09-30 (the same
               day's purchase), growing 10-30, declining 11-30, churned 2031-01-29
    C regular  2030-09-01 15.00, 2031-03-20 40.00
               new 09-01, declining 11-01, churned 12-31; reactivated 2031-03-20,
               growing 04-19, declining 05-20, churned 07-19
    A key      2030-12-20 800.00, 2031-02-10 900.00
               new 12-20, growing 02-10, declining 04-12, churned 06-11
    B regular  2031-01-05 20.00, 01-25 30.00, 03-10 25.00 (own rhythm: median of 20, 44 = 32)
               new 01-05, growing 01-25, declining 05-14 (+65), churned 07-17 (+129)
    H erased   2031-01-10 50.00, erased 2031-11-30: no tier any more (`none`)
               new 01-10, declining 03-12, churned 05-11
    E regular  2031-02-20 10.00
               new 02-20, declining 04-22, churned 06-21
    D key      2031-04-05 1000.00, 04-25 500.00
               new 04-05, growing 04-25, declining 06-25, churned 08-24
    G key      2031-05-10 2000.00, 500.00 of it refunded 05-15: net 1500.00
               new 05-10, declining 07-10, churned 09-08
    F          a profile only: a prospect, never in the active base
    K          2031-02-05 99.00, cancelled the next day: no order, a prospect

Revenue lost with a churn: the customer's spend over the 365 days up to their last order
before the churn — J on 2030-09-30: 12.00; C: 15.00; J on 2031-01-29: 12 + 18 = 30.00;
H: 50.00; A: 800 + 900 = 1700.00; E: 10.00.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import text

from services.scoring.core.card import Population
from services.scoring.core.tiers import TierBreakpoints
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from shared.clock import FixedClock
from shared.events import Envelope
from shared.settings import CommonSettings
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

NOW = datetime(2031, 12, 1, 12, tzinfo=UTC)
# Key from a value score of 5 (about 1,500 spent over two orders); nobody is low.
TIERS = Population(
    tiers=TierBreakpoints(low_cut=-100.0, key_cut=5.0, composite_median=3.0, clv_median=None)
)


@pytest_asyncio.fixture
async def stack(settings: CommonSettings) -> AsyncIterator[Stack]:
    async with isolated_stack(settings, FixedClock(NOW)) as stack:
        yield stack


def _event(customer_id: str, event_type: str, day: str, data: dict[str, Any]) -> Envelope:
    at = datetime.combine(date.fromisoformat(day), time(12), tzinfo=UTC)
    return Envelope.model_validate(
        {
            "event_id": uuid.uuid4().hex,
            "event_type": event_type,
            "customer_id": customer_id,
            "occurred_at": at,
            "received_at": at,
            "source": "test-flow",
            "data": data,
        }
    )


def _order(customer_id: str, day: str, amount: str, status: str = "paid", n: int = 1) -> Envelope:
    data = {"order_id": f"{customer_id}-{n}", "status": status, "amount": amount}
    return _event(customer_id, f"order.{status}", day, {**data, "currency": "USD"})


async def _shop(stack: Stack) -> None:
    s = stack.scoring_app.state
    applier = EventApplier(s.engine, s.settings, FixedClock(NOW), PopulationCache(TIERS))

    async def apply(*events: Envelope) -> None:
        assert await applier.apply([(e, e.to_json()) for e in events]) == len(events)

    await apply(
        _order("J", "2030-06-01", "12.00"),
        _order("J", "2030-09-30", "18.00", n=2),
        _order("C", "2030-09-01", "15.00"),
        _order("C", "2031-03-20", "40.00", n=2),
        _order("A", "2030-12-20", "800.00"),
        _order("A", "2031-02-10", "900.00", n=2),
        _order("B", "2031-01-05", "20.00"),
        _order("B", "2031-01-25", "30.00", n=2),
        _order("B", "2031-03-10", "25.00", n=3),
        _order("H", "2031-01-10", "50.00"),
        _order("E", "2031-02-20", "10.00"),
        _order("D", "2031-04-05", "1000.00"),
        _order("D", "2031-04-25", "500.00", n=2),
        _order("G", "2031-05-10", "2000.00"),
        _event("F", "customer.updated", "2031-03-01", {"name": "Fay"}),
        _order("K", "2031-02-05", "99.00", status="placed"),
    )
    # Separate batches: a refund and a cancellation change orders already recorded, and an
    # erasure relabels what stays.
    await apply(_order("G", "2031-05-15", "500.00", status="refunded"))
    await apply(_order("K", "2031-02-06", "99.00", status="cancelled"))
    await apply(_event("H", "customer.erased", "2031-11-30", {"requested_by": "test"}))


FIELDS = (
    "new",
    "reactivated",
    "churned",
    "net",
    "active_at_start",
    "active_at_end",
    "retained",
    "churn_rate",
    "retention_rate",
    "revenue_new",
    "revenue_returning",
    "revenue_lost",
)
ZERO = (0, 0, 0, 0, 0, 0, 0, None, None, "0.00", "0.00", "0.00")


def _row(values: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(FIELDS, values, strict=True))


def _period(
    start: str,
    end: str,
    total: tuple[Any, ...],
    key: tuple[Any, ...] = ZERO,
    regular: tuple[Any, ...] = ZERO,
    none: tuple[Any, ...] = ZERO,
) -> dict[str, Any]:
    by_tier = {"key": _row(key), "regular": _row(regular), "low": _row(ZERO), "none": _row(none)}
    # Every period of the tables ended before NOW.
    return {"start": start, "end": end, "under_way": False, **_row(total), "by_tier": by_tier}


# Columns: new, reactivated, churned, net (new + reactivated - churned), active at start,
# active at end, retained (active at both), churn rate (churned / start), retention rate
# (retained / start), revenue from new customers, from returning ones, lost with churns.
#
# Active base at each month's start: Jan 1 A J (J churns 01-29); Feb 1 A B H; Mar 1 A B H E;
# Apr 1 A B H E C (C back 03-20); May 1 + D; Jun 1 A B E C D G (H churned 05-11, G new);
# Jul 1 B C D G (A churned 06-11, E 06-21).
MONTHS = [
    _period(
        "2031-01-01",
        "2031-01-31",
        # new B H; J lost; A kept, J not: 1 of 2. New money: B 20 + 30, H 50. Lost: J 30.
        (2, 0, 1, 1, 2, 3, 1, 1 / 2, 1 / 2, "100.00", "0.00", "30.00"),
        key=(0, 0, 0, 0, 1, 1, 1, 0 / 1, 1 / 1, "0.00", "0.00", "0.00"),
        regular=(1, 0, 1, 0, 1, 1, 0, 1 / 1, 0 / 1, "50.00", "0.00", "30.00"),
        none=(1, 0, 0, 1, 0, 1, 0, None, None, "50.00", "0.00", "0.00"),
    ),
    _period(
        "2031-02-01",
        "2031-02-28",
        # new E (10.00); A's 900.00 is a returning customer's (first order in December).
        (1, 0, 0, 1, 3, 4, 3, 0 / 3, 3 / 3, "10.00", "900.00", "0.00"),
        key=(0, 0, 0, 0, 1, 1, 1, 0 / 1, 1 / 1, "0.00", "900.00", "0.00"),
        regular=(1, 0, 0, 1, 1, 2, 1, 0 / 1, 1 / 1, "10.00", "0.00", "0.00"),
        none=(0, 0, 0, 0, 1, 1, 1, 0 / 1, 1 / 1, "0.00", "0.00", "0.00"),
    ),
    _period(
        "2031-03-01",
        "2031-03-31",
        # C reactivated; returning money: B 25 + C 40.
        (0, 1, 0, 1, 4, 5, 4, 0 / 4, 4 / 4, "0.00", "65.00", "0.00"),
        key=(0, 0, 0, 0, 1, 1, 1, 0 / 1, 1 / 1, "0.00", "0.00", "0.00"),
        regular=(0, 1, 0, 1, 2, 3, 2, 0 / 2, 2 / 2, "0.00", "65.00", "0.00"),
        none=(0, 0, 0, 0, 1, 1, 1, 0 / 1, 1 / 1, "0.00", "0.00", "0.00"),
    ),
    _period(
        "2031-04-01",
        "2031-04-30",
        # new D, both of D's orders are a new customer's: 1000 + 500.
        (1, 0, 0, 1, 5, 6, 5, 0 / 5, 5 / 5, "1500.00", "0.00", "0.00"),
        key=(1, 0, 0, 1, 1, 2, 1, 0 / 1, 1 / 1, "1500.00", "0.00", "0.00"),
        regular=(0, 0, 0, 0, 3, 3, 3, 0 / 3, 3 / 3, "0.00", "0.00", "0.00"),
        none=(0, 0, 0, 0, 1, 1, 1, 0 / 1, 1 / 1, "0.00", "0.00", "0.00"),
    ),
    _period(
        "2031-05-01",
        "2031-05-31",
        # new G (2000 - 500 refunded); H lost, taking 50.00; 5 of 6 kept.
        (1, 0, 1, 0, 6, 6, 5, 1 / 6, 5 / 6, "1500.00", "0.00", "50.00"),
        key=(1, 0, 0, 1, 2, 3, 2, 0 / 2, 2 / 2, "1500.00", "0.00", "0.00"),
        regular=(0, 0, 0, 0, 3, 3, 3, 0 / 3, 3 / 3, "0.00", "0.00", "0.00"),
        none=(0, 0, 1, -1, 1, 0, 0, 1 / 1, 0 / 1, "0.00", "0.00", "50.00"),
    ),
    _period(
        "2031-06-01",
        "2031-06-30",
        # A (1700.00) and E (10.00) lost; 4 of 6 kept.
        (0, 0, 2, -2, 6, 4, 4, 2 / 6, 4 / 6, "0.00", "0.00", "1710.00"),
        key=(0, 0, 1, -1, 3, 2, 2, 1 / 3, 2 / 3, "0.00", "0.00", "1700.00"),
        regular=(0, 0, 1, -1, 3, 2, 2, 1 / 3, 2 / 3, "0.00", "0.00", "10.00"),
    ),
]

# Active base at each quarter's start: 2030-07-01 J; 10-01 J C (J churned and came back on
# 09-30); 2031-01-01 A J (C churned 12-31); 04-01 A B H E C; 07-01 B C D G.
QUARTERS = [
    _period(
        "2030-07-01",
        "2030-09-30",
        # new C (15.00); J lost and back the same day, so kept; J's 18.00 is returning money;
        # J's churn took 12.00.
        (1, 1, 1, 1, 1, 2, 1, 1 / 1, 1 / 1, "15.00", "18.00", "12.00"),
        regular=(1, 1, 1, 1, 1, 2, 1, 1 / 1, 1 / 1, "15.00", "18.00", "12.00"),
    ),
    _period(
        "2030-10-01",
        "2030-12-31",
        # new A (800.00); C lost (15.00); J kept, C not.
        (1, 0, 1, 0, 2, 2, 1, 1 / 2, 1 / 2, "800.00", "0.00", "15.00"),
        key=(1, 0, 0, 1, 0, 1, 0, None, None, "800.00", "0.00", "0.00"),
        regular=(0, 0, 1, -1, 2, 1, 1, 1 / 2, 1 / 2, "0.00", "0.00", "15.00"),
    ),
    _period(
        "2031-01-01",
        "2031-03-31",
        # new B E H, C back, J lost (30.00). New money: B 20 + 30 + 25, E 10, H 50; returning:
        # A 900, C 40. A kept, J not.
        (3, 1, 1, 3, 2, 5, 1, 1 / 2, 1 / 2, "135.00", "940.00", "30.00"),
        key=(0, 0, 0, 0, 1, 1, 1, 0 / 1, 1 / 1, "0.00", "900.00", "0.00"),
        regular=(2, 1, 1, 2, 1, 3, 0, 1 / 1, 0 / 1, "85.00", "40.00", "30.00"),
        none=(1, 0, 0, 1, 0, 1, 0, None, None, "50.00", "0.00", "0.00"),
    ),
    _period(
        "2031-04-01",
        "2031-06-30",
        # new D G (1500 + 1500); lost H A E (50 + 1700 + 10); of A B H E C, B and C kept.
        (2, 0, 3, -1, 5, 4, 2, 3 / 5, 2 / 5, "3000.00", "0.00", "1760.00"),
        key=(2, 0, 1, 1, 1, 2, 0, 1 / 1, 0 / 1, "3000.00", "0.00", "1700.00"),
        regular=(0, 0, 1, -1, 3, 2, 2, 1 / 3, 2 / 3, "0.00", "0.00", "10.00"),
        none=(0, 0, 1, -1, 1, 0, 0, 1 / 1, 0 / 1, "0.00", "0.00", "50.00"),
    ),
]


def _cohort(month: str, acquired: int, *checks: tuple[str, int | None]) -> dict[str, Any]:
    return {
        "month": month,
        "acquired": acquired,
        "still_active": [
            {
                "months": months,
                "at": at,
                "active": active,
                "share": None if active is None or not acquired else active / acquired,
            }
            for months, (at, active) in zip((1, 3, 6, 12), checks, strict=True)
        ],
    }


# Checked at the first day of the month after acquisition plus 1, 3, 6 and 12 months; today is
# 2031-12-01 (noon), so a check on 2031-12-01 has happened and a later one has not (null).
COHORTS = [
    # J: active on 08-01 (new), 10-01 (back), 01-01 (declining); churned 2031-01-29.
    _cohort(
        "2030-06-01", 1, ("2030-08-01", 1), ("2030-10-01", 1), ("2031-01-01", 1), ("2031-07-01", 0)
    ),
    _cohort(
        "2030-07-01", 0, ("2030-09-01", 0), ("2030-11-01", 0), ("2031-02-01", 0), ("2031-08-01", 0)
    ),
    _cohort(
        "2030-08-01", 0, ("2030-10-01", 0), ("2030-12-01", 0), ("2031-03-01", 0), ("2031-09-01", 0)
    ),
    # C: still new on 11-01 (declining from that day); churned 12-31; back 03-20; churned 07-19.
    _cohort(
        "2030-09-01", 1, ("2030-11-01", 1), ("2031-01-01", 0), ("2031-04-01", 1), ("2031-10-01", 0)
    ),
    _cohort(
        "2030-10-01", 0, ("2030-12-01", 0), ("2031-02-01", 0), ("2031-05-01", 0), ("2031-11-01", 0)
    ),
    _cohort(
        "2030-11-01", 0, ("2031-01-01", 0), ("2031-03-01", 0), ("2031-06-01", 0), ("2031-12-01", 0)
    ),
    # A: churned 06-11.
    _cohort(
        "2030-12-01",
        1,
        ("2031-02-01", 1),
        ("2031-04-01", 1),
        ("2031-07-01", 0),
        ("2032-01-01", None),
    ),
    # B and H: both still active on 05-01 (H churns 05-11), both gone by 08-01.
    _cohort(
        "2031-01-01",
        2,
        ("2031-03-01", 2),
        ("2031-05-01", 2),
        ("2031-08-01", 0),
        ("2032-02-01", None),
    ),
    # E: churned 06-21.
    _cohort(
        "2031-02-01",
        1,
        ("2031-04-01", 1),
        ("2031-06-01", 1),
        ("2031-09-01", 0),
        ("2032-03-01", None),
    ),
    # C's return in March is not an acquisition.
    _cohort(
        "2031-03-01",
        0,
        ("2031-05-01", 0),
        ("2031-07-01", 0),
        ("2031-10-01", 0),
        ("2032-04-01", None),
    ),
    # D: churned 08-24.
    _cohort(
        "2031-04-01",
        1,
        ("2031-06-01", 1),
        ("2031-08-01", 1),
        ("2031-11-01", 0),
        ("2032-05-01", None),
    ),
    # G: churned 09-08; the 6-month check is today.
    _cohort(
        "2031-05-01",
        1,
        ("2031-07-01", 1),
        ("2031-09-01", 1),
        ("2031-12-01", 0),
        ("2032-06-01", None),
    ),
    _cohort(
        "2031-06-01",
        0,
        ("2031-08-01", 0),
        ("2031-10-01", 0),
        ("2032-01-01", None),
        ("2032-07-01", None),
    ),
]


async def test_flow_and_cohorts_on_a_fixed_history_equal_the_hand_computed_table(
    stack: Stack,
) -> None:
    await _shop(stack)
    ops = {"Authorization": f"Bearer {stack.keys['ops']}"}

    # The tiers the table assumes, as the listing shows them.
    listing = await stack.scoring.get("/v1/customers", params={"limit": 50}, headers=ops)
    assert listing.status_code == 200, listing.text
    tiers = {c["customer_id"]: c["tier"] for c in listing.json()["items"]}
    assert tiers == {
        "J": "regular",
        "C": "regular",
        "A": "key",
        "B": "regular",
        "E": "regular",
        "D": "key",
        "G": "key",
        "F": None,
        "K": None,
    }

    async def get(path: str, **params: str) -> dict[str, Any]:
        resp = await stack.scoring.get(path, params=params, headers=ops)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    months = await get("/v1/stats/flow", period="month", since="2031-01-15", until="2031-06-30")
    assert (months["since"], months["until"]) == ("2031-01-01", "2031-06-30")
    for got, want in zip(months["periods"], MONTHS, strict=True):
        assert got == want, want["start"]

    quarters = await get("/v1/stats/flow", period="quarter", since="2030-08-01", until="2031-05-01")
    assert (quarters["since"], quarters["until"]) == ("2030-07-01", "2031-06-30")
    for got, want in zip(quarters["periods"], QUARTERS, strict=True):
        assert got == want, want["start"]

    # A year: 2031 began with A and J active and ended (so far: today) with nobody; J, A, B,
    # H, E, C, D and G were all lost in it (C's March return and July loss included).
    years = await get("/v1/stats/flow", period="year", since="2031-01-01", until="2031-12-31")
    (year,) = years["periods"]
    assert year["under_way"]  # it holds NOW, 1 December: its figures are so far
    assert (year["active_at_start"], year["active_at_end"], year["retained"]) == (2, 0, 0)
    # Lost: J, H, A, E in the first half (see the months) and B, C, D, G after: B 75.00, C
    # 15 + 40 = 55.00, D 1500.00, G 1500.00.
    assert (year["new"], year["reactivated"], year["churned"]) == (5, 1, 8)
    assert year["revenue_lost"] == "4920.00"  # 30 + 50 + 1700 + 10 + 75 + 55 + 1500 + 1500

    cohorts = await get("/v1/stats/cohorts", since="2030-06-20", until="2031-06-01")
    assert (cohorts["since"], cohorts["until"]) == ("2030-06-01", "2031-06-30")
    for got, want in zip(cohorts["cohorts"], COHORTS, strict=True):
        assert got == want, want["month"]


_ORDER_FACTS = text(
    "SELECT customer_id, order_id, at, day, net FROM scoring.order_facts ORDER BY 1, 2"
)


async def test_the_migration_fills_order_facts_as_the_consumer_keeps_them(stack: Stack) -> None:
    """Revision scoring_0007 fills the table from the stored facts by the write path's rules:
    placed then paid (the earlier time, the later total), refunds, a whole refund, a
    cancellation, an order placed and paid at the same instant."""
    s = stack.scoring_app.state
    applier = EventApplier(s.engine, s.settings, FixedClock(NOW), PopulationCache(TIERS))
    events = [
        _order("P", "2031-01-03", "80.00", status="placed"),
        _order("P", "2031-01-05", "75.00"),  # paid later, for less: 75.00 bought on 01-03
        _order("P", "2031-01-09", "5.00", status="refunded"),
        _order("P", "2031-02-01", "30.00", n=2),
        _order("P", "2031-02-02", "30.00", status="refunded", n=2),  # wholly refunded: gone
        _order("Q", "2031-03-01", "40.00", status="placed"),
        _order("Q", "2031-03-01", "45.00"),  # the same instant: the payment is the later word
        _order("Q", "2031-04-01", "60.00", n=2),
        _order("Q", "2031-04-02", "60.00", status="cancelled", n=2),
        _order("R", "2031-05-01", "0.00"),  # free, still an order
    ]
    assert await applier.apply([(e, e.to_json()) for e in events]) == len(events)
    async with s.engine.begin() as conn:
        kept = (await conn.execute(_ORDER_FACTS)).all()
        await conn.execute(text("DELETE FROM scoring.order_facts"))
        await conn.execute(text(_migration().BACKFILL_SQL))
        filled = (await conn.execute(_ORDER_FACTS)).all()
    assert [(r.customer_id, r.order_id, str(r.day), str(r.net)) for r in kept] == [
        ("P", "P-1", "2031-01-03", "70.0000"),
        ("Q", "Q-1", "2031-03-01", "45.0000"),
        ("R", "R-1", "2031-05-01", "0.0000"),
    ]
    assert filled == kept


def _migration() -> Any:
    path = (
        Path(__file__).resolve().parents[2]
        / "services/scoring/migrations/versions/0007_order_facts.py"
    )
    spec = importlib.util.spec_from_file_location("scoring_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/stats/flow", {"period": "decade"}, "query.period"),
        ("/v1/stats/flow", {"period": "quarter", "until": "9999-11-15"}, "query.until"),
        (
            "/v1/stats/flow",
            {"period": "year", "since": "2031-02-01", "until": "2031-01-01"},
            "query.since",
        ),
        ("/v1/stats/cohorts", {"since": "2031-02-01", "until": "2031-01-31"}, "query.since"),
        ("/v1/stats/cohorts", {"since": "1900-01-01", "until": "2031-01-31"}, "query.since"),
        ("/v1/stats/cohorts", {"until": "9999-01-01"}, "query.until"),
        ("/v1/stats/cohorts", {"since": "0001-01-01", "until": "0001-06-01"}, None),
        ("/v1/stats/cohorts", {"until": "0001-06-01"}, "query.since"),
    ],
)
async def test_a_range_out_of_bounds_is_a_422_naming_the_field(
    scoring: tuple[httpx.AsyncClient, FastAPI],
    keys: dict[str, str],
    path: str,
    params: dict[str, str],
    field: str | None,
) -> None:
    client, _ = scoring
    resp = await client.get(path, params=params, headers={"Authorization": f"Bearer {keys['ops']}"})
    if field is None:
        assert resp.status_code == 200, resp.text
        return
    assert resp.status_code == 422, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == [field]
