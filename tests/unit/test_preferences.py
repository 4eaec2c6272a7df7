"""Purchase preferences on the card: spend and last purchase per category and per brand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.scoring.core.state import CustomerState
from tests.unit.test_state import Events, card, day, fold

TEA = {"sku": "t-1", "quantity": 2, "unit_price": "10.00", "category": "tea", "brand": "zen"}
CUP = {"sku": "c-1", "quantity": 1, "unit_price": "30.00", "category": "cups", "brand": "acme"}


def test_spend_and_last_purchase_per_category_and_brand() -> None:
    ev = Events()
    state = fold(
        [
            ev.order("placed", "o-1", "50.00", day(1), items=[TEA, CUP]),
            ev.order("paid", "o-2", "20.00", day(10), items=[TEA]),
        ]
    )
    prefs = card(state, day(20)).preferences
    assert prefs.categories["tea"].spend == Decimal("40.00")
    assert prefs.categories["tea"].last_at == day(10)
    assert prefs.categories["cups"].spend == Decimal("30.00")
    assert prefs.categories["cups"].last_at == day(1)
    assert prefs.brands["zen"].spend == Decimal("40.00")
    assert prefs.brands["acme"].spend == Decimal("30.00")
    assert prefs.top_categories_by_spend == ["tea", "cups"]
    assert prefs.top_categories_by_recency == ["tea", "cups"]
    assert [i.sku for i in prefs.last_items] == ["t-1", "t-1", "c-1"]
    assert prefs.last_items[0].bought_at == day(10)


def test_refunds_subtract_in_proportion_and_cancellations_remove() -> None:
    ev = Events()
    state = fold(
        [
            ev.order("placed", "o-1", "50.00", day(1), items=[TEA, CUP]),
            ev.order("refunded", "o-1", "25.00", day(2)),
            ev.order("placed", "o-2", "20.00", day(3), items=[TEA]),
            ev.order("cancelled", "o-2", "20.00", day(4)),
        ]
    )
    prefs = card(state, day(5)).preferences
    assert prefs.categories["tea"].spend == Decimal("10.00")  # 20 of 50, half refunded
    assert prefs.categories["cups"].spend == Decimal("15.00")
    assert prefs.categories["tea"].last_at == day(1)  # the cancelled order counts nowhere
    # Replayed before the refund (day 2), the first order counts whole.
    before = card(state, day(1.5)).preferences
    assert before.categories["tea"].spend == Decimal("20.00")


def test_an_order_without_items_or_categories_adds_no_preference() -> None:
    ev = Events()
    plain = {"sku": "x", "quantity": 1, "unit_price": "5.00"}
    state = fold(
        [
            ev.order("placed", "o-1", "5.00", day(1)),
            ev.order("placed", "o-2", "5.00", day(2), items=[plain]),
        ]
    )
    prefs = card(state, day(3)).preferences
    assert prefs.categories == {} and prefs.brands == {}
    assert [i.sku for i in prefs.last_items] == ["x"]


def test_items_survive_the_json_round_trip_and_old_states_read() -> None:
    ev = Events()
    state = fold([ev.order("placed", "o-1", "50.00", day(1), items=[TEA, CUP])])
    again = CustomerState.from_json(state.to_json())
    assert again == state
    assert card(again, day(2)) == card(state, day(2))
    old = {
        "v": 1,
        "customer_id": "c-1",
        "last_event_at": 1,
        "orders": {"o-1": {"e-1": ["placed", 1, "5.00", "0"]}},
        "complaints": {},
        "visits": {"recent": {}, "older": 0, "older_last_at": None},
        "profile": {},
    }
    read = CustomerState.from_json(old)
    assert (
        card(read, datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=1)).preferences.categories
        == {}
    )
