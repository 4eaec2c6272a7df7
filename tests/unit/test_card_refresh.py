"""When a card that only grows old is sent again (``republish_at``): between half the
configured age and all of it after the last one went out, a fraction fixed per customer, so
cards published together do not come due together every day after."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.scoring.core.card import Population, Scored, score
from services.scoring.core.changes import republish_at
from services.scoring.core.state import apply
from services.scoring.settings import ScoringSettings
from shared.events import Envelope, EventType, OrderData, OrderStatus

NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
SETTINGS = ScoringSettings()


def card_of(customer_id: str) -> Scored:
    order = Envelope(
        event_id=str(uuid.uuid4()),
        event_type=EventType.ORDER_PAID,
        customer_id=customer_id,
        occurred_at=NOW - timedelta(days=3),
        received_at=NOW - timedelta(days=3),
        source="test",
        data=OrderData(
            order_id=f"{customer_id}-1",
            status=OrderStatus.PAID,
            amount=Decimal("20.00"),
            currency="USD",
        ),
    )
    state, _ = apply(None, order, SETTINGS)
    return score(state, NOW, Population(), SETTINGS)


def test_a_card_is_due_again_between_half_a_day_and_a_day_after_it_went_out() -> None:
    published = NOW - timedelta(hours=1)
    ages = []
    for n in range(400):
        card = card_of(f"c-{n}")
        due = republish_at(card, published, SETTINGS)
        assert due is not None
        # The same customer, the same fraction, every time.
        assert republish_at(card, published, SETTINGS) == due
        ages.append((due - published) / timedelta(hours=1))
    assert all(12 < age <= 24 for age in ages)
    # Spread over the half day, not bunched: every hour of it holds some customers.
    assert {int(age) for age in ages} == set(range(12, 24))


def test_a_card_never_published_is_due_now_and_none_is_when_turned_off() -> None:
    card = card_of("c-1")
    assert republish_at(card, None, SETTINGS) == card.as_of == NOW
    off = ScoringSettings(card_max_age_hours=0)
    assert republish_at(card, None, off) is None
    assert republish_at(card, NOW, off) is None
