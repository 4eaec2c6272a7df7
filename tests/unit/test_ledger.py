"""The purchase ledger: purchases arriving in order are carried on in O(1), anything else takes
the full walk, and either way the card is byte for byte the card built afresh."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.scoring.core.card import score
from services.scoring.core.ledger import Ledger
from services.scoring.core.state import CustomerState, apply, to_micros
from shared.events import Envelope
from tests.unit.test_state import POPULATION, SETTINGS, Events, day, histories


def _fresh(state: CustomerState, as_of: datetime) -> bytes:
    return score(CustomerState.from_json(state.to_json()), as_of, POPULATION, SETTINGS).json


def _carried(state: CustomerState | None, event: Envelope, as_of: datetime) -> CustomerState:
    state, _ = apply(state, event, SETTINGS)
    assert score(state, as_of, POPULATION, SETTINGS).json == _fresh(state, as_of)
    return state


def test_purchases_in_order_carry_the_ledger_on_without_a_full_walk() -> None:
    ev = Events()
    state = _carried(None, ev("customer.updated", day(0), name="Ann"), day(0))
    ledger = state.ledger
    assert isinstance(ledger, Ledger)
    for n in range(60):
        at = day(1 + n * 3.5)
        oid = f"o-{n}"
        items = [{"sku": "s", "quantity": 2, "unit_price": "4.50", "category": f"c{n % 7}"}]
        state = _carried(
            state, ev.order("placed", oid, "20.00", at, outstanding="20.00", items=items), at
        )
        state = _carried(state, ev.order("paid", oid, "19.00", at + timedelta(hours=2)), at)
        if n % 5 == 0:  # a refund of the latest purchase replaces it
            state = _carried(state, ev.order("refunded", oid, "4.00", at + timedelta(hours=3)), at)
        state = _carried(state, ev("visit.recorded", at, visit_id=f"v{n}", channel="web"), at)
        assert state.ledger is ledger
    assert ledger.orders == 60
    # Later cards (a sweep's) read the same ledger.
    for later in (day(300), day(700)):
        assert score(state, later, POPULATION, SETTINGS).json == _fresh(state, later)
    assert state.ledger is ledger


def test_late_purchases_refunds_and_cancellations_of_earlier_orders_take_the_full_walk() -> None:
    ev = Events()
    state: CustomerState | None = None
    for n in range(5):
        state = _carried(state, ev.order("paid", f"o-{n}", "30.00", day(n * 10)), day(n * 10))
    assert state is not None
    for late in (
        ev.order("paid", "o-late", "12.00", day(15)),  # falls among the purchases known
        ev.order("refunded", "o-1", "5.00", day(45)),  # an earlier purchase changed
        ev.order("cancelled", "o-2", "30.00", day(46)),
        ev.order("paid", "o-4", "31.00", day(39)),  # the latest, moved earlier
    ):
        assert state.ledger is not None
        state, _ = apply(state, late, SETTINGS)
        assert state.ledger is None
        assert score(state, day(50), POPULATION, SETTINGS).json == _fresh(state, day(50))


def test_a_card_before_an_order_event_is_not_read_from_the_ledger() -> None:
    # An event dated after the consumer's clock: the card then must leave it out; the ledger
    # that has it stays for the cards after it.
    ev = Events()
    state = _carried(None, ev.order("paid", "o-1", "10.00", day(1)), day(2))
    ledger = state.ledger
    state = _carried(state, ev.order("paid", "o-2", "99.00", day(9)), day(5))
    assert isinstance(ledger, Ledger) and state.ledger is ledger
    assert ledger.horizon == to_micros(day(9)) and ledger.orders == 2
    before = score(state, day(5), POPULATION, SETTINGS)
    assert before.orders == 1 and before.json == _fresh(state, day(5))
    assert state.ledger is ledger
    assert score(state, day(9), POPULATION, SETTINGS).orders == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=histories(), data=st.data())
def test_a_card_carried_on_through_events_mostly_in_order_equals_one_built_afresh(
    events: list[Envelope], data: st.DataObject
) -> None:
    # The consumer's usual stream: events in time order, a few late, each card scored at or
    # a little after its event, and now and then a card for a later moment (a sweep).
    stream = sorted(events, key=lambda e: e.occurred_at)
    for _ in range(data.draw(st.integers(0, 2))):
        if len(stream) > 1:
            i = data.draw(st.integers(0, len(stream) - 2))
            stream.append(stream.pop(i))  # arrives after every later event
    state: CustomerState | None = None
    for event in stream:
        state, _ = apply(state, event, SETTINGS)
        as_of = event.occurred_at + timedelta(hours=data.draw(st.integers(0, 2000)))
        assert score(state, as_of, POPULATION, SETTINGS).json == _fresh(state, as_of)
    if state is not None:
        assert score(state, day(900), POPULATION, SETTINGS).json == _fresh(state, day(900))
