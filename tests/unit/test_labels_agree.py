"""The labels on one card never contradict each other, for any history and any population.

A shop owner reads stage, segment, tier and strategy side by side; these pairs must never meet:

- stage ``churned`` or ``declining`` with segment ``champions``, ``loyal``,
  ``potential_loyalist`` or ``new``;
- stage ``new`` with any segment but ``new``;
- P(alive) below 0.05 with strategy ``develop`` or ``nurture``;
- a tier, segment or strategy for a customer without purchases;
- P(alive) without a forecast of an order; a repeat buyer's forecast without P(alive), or a
  one-time buyer's P(alive) (the model cannot judge them: it would say 1 however long their
  silence); a forecast that falls as its window grows or exceeds P(alive).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.core.card import Population, build_card
from services.scoring.core.predict import BgNbdParams, GammaGammaParams
from services.scoring.core.rfm import RfmBreakpoints
from services.scoring.core.state import CustomerState, apply
from services.scoring.core.tiers import TierBreakpoints
from services.scoring.settings import ScoringSettings
from shared.card import Card, Segment, Stage, Strategy
from shared.events import Envelope

S = ScoringSettings()
T0 = datetime(2020, 1, 1, tzinfo=UTC)
QUIET_FORBIDDEN = {Segment.CHAMPIONS, Segment.LOYAL, Segment.POTENTIAL_LOYALIST, Segment.NEW}


def _event(i: int, kind: str, day: int, data: dict[str, Any]) -> Envelope:
    return Envelope.model_validate(
        {
            "event_id": f"e-{i}",
            "event_type": kind,
            "customer_id": "c-1",
            "occurred_at": T0 + timedelta(days=day, hours=i % 24),
            "received_at": T0,
            "source": "test",
            "data": data,
        }
    )


@st.composite
def histories(draw: st.DrawFn) -> list[Envelope]:
    """A profile, then zero or more orders (some refunded) on days 0..1500."""
    events = [_event(0, "customer.updated", 0, {"name": "Ada"})]
    for i in range(1, draw(st.integers(0, 12)) + 1):
        day = draw(st.integers(0, 1500))
        amount = draw(st.integers(1, 2000))
        order = {"order_id": f"o-{i}", "status": "paid", "amount": f"{amount}.00"}
        events.append(_event(i, "order.paid", day, {**order, "currency": "EUR"}))
        if draw(st.booleans()) and draw(st.booleans()):
            refunded = {**order, "status": "refunded", "currency": "EUR"}
            events.append(_event(100 + i, "order.refunded", day + 3, refunded))
    return events


def _cuts(draw: st.DrawFn, high: float) -> tuple[float, float, float, float]:
    a, b, c, d = sorted(draw(st.lists(st.floats(0, high), min_size=4, max_size=4)))
    return (a, b, c, d)


@st.composite
def populations(draw: st.DrawFn) -> Population:
    low, mid, key = sorted(draw(st.lists(st.floats(-3, 12), min_size=3, max_size=3)))
    return Population(
        rfm=RfmBreakpoints(_cuts(draw, 2000), _cuts(draw, 20), _cuts(draw, 5000)),
        tiers=TierBreakpoints(
            low_cut=low, key_cut=key, composite_median=mid, clv_median=draw(st.floats(0, 500))
        ),
        bg=BgNbdParams(
            r=draw(st.floats(0.05, 3)),
            alpha=draw(st.floats(1, 60)),
            a=draw(st.floats(0.05, 0.95)),
            b=draw(st.floats(0.1, 10)),
        ),
        gg=GammaGammaParams(p=draw(st.floats(1, 10)), q=draw(st.floats(1.5, 10)), v=15.0),
        median_gap_days=draw(st.floats(3, 200)),
    )


def contradictions(card: Card) -> list[str]:
    found = []
    segment = card.rfm.segment if card.rfm is not None else None
    if card.stage in (Stage.CHURNED, Stage.DECLINING) and segment in QUIET_FORBIDDEN:
        found.append(f"stage {card.stage} with segment {segment}")
    if card.stage is Stage.NEW and segment is not None and segment is not Segment.NEW:
        found.append(f"stage new with segment {segment}")
    p_alive = card.prediction.p_alive if card.prediction is not None else None
    gone = p_alive is not None and p_alive < 0.05
    if gone and card.strategy in (Strategy.DEVELOP, Strategy.NURTURE):
        found.append(f"P(alive) {p_alive} with strategy {card.strategy}")
    if card.value.orders == 0 and (card.tier or segment or card.strategy):
        found.append(f"no purchase, yet {card.tier} / {segment} / {card.strategy}")
    p_order = card.prediction.p_order if card.prediction is not None else None
    repeat = card.prediction is not None and card.prediction.frequency > 0
    if p_alive is not None and p_order is None:
        found.append(f"P(alive) {p_alive} without an order forecast")
    if p_order is not None and (p_alive is None) == repeat:
        found.append(f"P(alive) {p_alive} with {card.prediction.frequency} repeat days")  # type: ignore[union-attr]
    if p_order is not None:
        chances = [p_order[k] for k in ("7", "30", "90")]
        if sorted(p_order) != ["30", "7", "90"] or not (
            0 <= chances[0] <= chances[1] <= chances[2] <= (1.0 if p_alive is None else p_alive)
        ):
            found.append(f"an order forecast {p_order} beyond P(alive) {p_alive} or falling")
    return found


@settings(max_examples=300, deadline=None)
@given(history=histories(), population=populations(), later=st.integers(0, 1200))
def test_no_card_carries_a_contradiction(
    history: list[Envelope], population: Population, later: int
) -> None:
    state: CustomerState | None = None
    for event in history:
        state, _ = apply(state, event, S)
    assert state is not None
    last = max(e.occurred_at for e in history)
    card = build_card(state, last + timedelta(days=later), population, S)
    assert contradictions(card) == []


def test_a_silent_big_spender_is_churned_and_cannot_lose_not_a_champion() -> None:
    """The case seen in the demo: silent 14 months against a population whose recency cut
    points are older still; the segment follows the stage, the tier follows their value."""
    history = [_event(0, "customer.updated", 0, {"name": "Ada"})]
    for i in range(1, 9):
        data = {"order_id": f"o-{i}", "status": "paid", "amount": "900.00", "currency": "EUR"}
        history.append(_event(i, "order.paid", 30 * i, data))
    state: CustomerState | None = None
    for event in history:
        state, _ = apply(state, event, S)
    assert state is not None
    population = Population(
        rfm=RfmBreakpoints((500, 800, 1000, 1200), (1, 1, 2, 3), (20, 50, 100, 300)),
        tiers=TierBreakpoints(low_cut=1.0, key_cut=6.0, composite_median=3.0, clv_median=1.0),
        bg=BgNbdParams(r=0.24, alpha=4.41, a=0.79, b=2.43),
        gg=GammaGammaParams(p=6.25, q=3.74, v=15.45),
        median_gap_days=30.0,
    )
    card = build_card(state, T0 + timedelta(days=240 + 425), population, S)
    assert card.stage is Stage.CHURNED
    assert card.rfm is not None and card.rfm.segment is Segment.CANNOT_LOSE
    assert card.tier is not None and card.tier.value == "key"  # what they were worth
    assert card.strategy is Strategy.MAINTAIN  # high value, almost surely gone: no "develop"
