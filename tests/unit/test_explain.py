"""A card explained in words: each verdict is the card's own, with the facts it rests on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.scoring.core.card import Population, build_card
from services.scoring.core.explain import explain
from services.scoring.core.predict import BgNbdParams, GammaGammaParams
from services.scoring.core.rfm import RfmBreakpoints
from services.scoring.core.state import CustomerState, apply
from services.scoring.core.tiers import TierBreakpoints
from services.scoring.settings import ScoringSettings
from shared.events import Envelope

T0 = datetime(2030, 1, 1, tzinfo=UTC)
S = ScoringSettings()
BARE = Population()  # nothing fitted: the default 30-day median gap


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def orders(*days: float, amount: str = "50.00") -> CustomerState:
    state: CustomerState | None = None
    for n, d in enumerate(days):
        event = Envelope.model_validate(
            {
                "event_id": f"e-{n}",
                "event_type": "order.paid",
                "customer_id": "c-1",
                "occurred_at": day(d),
                "received_at": day(d),
                "source": "test",
                "data": {
                    "order_id": f"o-{n}",
                    "status": "paid",
                    "amount": amount,
                    "currency": "EUR",
                },
            }
        )
        state, _ = apply(state, event, S)
    assert state is not None
    return state


def fitted(score: float, **cuts: Any) -> Population:
    """A population whose tier cuts put ``score`` where the test wants it."""
    return Population(
        rfm=RfmBreakpoints(
            recency_days=(10.0, 30.0, 60.0, 120.0),
            frequency=(1.0, 1.0, 2.0, 4.0),
            monetary=(40.0, 80.0, 150.0, 400.0),
        ),
        tiers=TierBreakpoints(
            low_cut=cuts.get("low", score - 2),
            key_cut=cuts.get("key", score + 2),
            composite_median=cuts.get("median", score - 1),
            clv_median=cuts.get("clv_median", 1.0),
        ),
        bg=BgNbdParams(r=0.24, alpha=4.41, a=0.79, b=2.43),
        gg=GammaGammaParams(p=6.25, q=3.74, v=15.45),
    )


def test_a_prospect_has_no_purchase_to_explain() -> None:
    state = CustomerState("c-1")
    why = explain(state, T0, BARE, S)
    assert why.stage.value == "prospect"
    assert [r.code for r in why.stage.reasons] == ["stage.no_purchase"]
    assert why.stage.reasons[0].text == "no purchase yet → prospect"
    assert (why.tier.value, why.tier.reasons[0].code) == (None, "tier.no_purchase")
    assert why.segment.reasons[0].code == "segment.no_purchase"
    assert why.strategy.reasons[0].code == "strategy.unknown"


def test_a_repeat_buyer_within_the_rhythm_is_growing_and_says_by_how_much() -> None:
    state = orders(0, 10)
    why = explain(state, day(51), BARE, S)
    assert why.stage.value == "growing" == build_card(state, day(51), BARE, S).stage
    main = why.stage.reasons[0]
    assert main.code == "stage.rhythm"
    assert main.facts | {} == {
        "purchase_days": 2,
        "last_purchase_day": "2030-01-11",
        "silent_days": 41,
        "rhythm_days": 30.0,
        "rhythm_source": "population",
        "declining_after_days": 60,
        "churned_after_days": 120,
    }
    assert main.text == (
        "2 purchase days; last purchase 41 days ago, within the 60 days (2× the population's "
        "30-day rhythm) before declining → growing"
    )
    # Why not mature: too few purchase days yet.
    assert why.stage.reasons[1].code == "stage.mature"
    assert "mature from 4 purchase days on rhythm; 2 so far" in why.stage.reasons[1].text


def test_silence_past_the_rhythm_is_declining_then_churned() -> None:
    state = orders(0, 10)
    declining = explain(state, day(71), BARE, S)
    assert declining.stage.value == "declining"
    assert declining.stage.reasons[0].code == "stage.silent"
    assert declining.stage.reasons[0].facts["silent_days"] == 61
    assert (
        "silent more than 60 days (2× the population's 30-day rhythm)"
        in declining.stage.reasons[0].text
    )
    assert declining.stage.reasons[1].text == "churned once silent more than 120 days"
    churned = explain(state, day(131), BARE, S)
    assert churned.stage.value == "churned"
    assert "more than 120 days (4× the population's 30-day rhythm, at least 90" in (
        churned.stage.reasons[0].text
    )


def test_buying_again_while_declining_is_back_to_growing_not_reactivated() -> None:
    # Declining from day 61 (more than 60 days silent); the order on day 70 ends the slip.
    why = explain(orders(0, 70), day(75), BARE, S)
    assert why.stage.value == "growing"
    assert why.stage.reasons[0].code == "stage.rhythm"


def test_buying_again_after_churning_is_reactivated() -> None:
    # Churned from day 121 (more than 120 days silent); the order on day 200 wins them back.
    state = orders(0, 200)
    why = explain(state, day(205), BARE, S)
    assert why.stage.value == "reactivated"
    [reason] = why.stage.reasons
    assert reason.code == "stage.reactivated"
    assert reason.facts["previous_stage"] == "churned"
    assert reason.text == (
        "bought again on 2030-07-20 after churning → reactivated for 30 days, until 2030-08-19"
    )


def test_a_frequent_buyer_is_not_declining_before_the_floor_and_says_so() -> None:
    # Own rhythm 9 days: twice that is 18, but nobody is declining before 30 silent days.
    state = orders(0, 9, 18, 27)
    quiet = explain(state, day(27 + 21), BARE, S)
    assert quiet.stage.value == "mature"
    assert quiet.stage.reasons[0].facts["declining_after_days"] == 30
    assert "within the 30 days (never before 30: 2× their own 9-day rhythm is shorter" in (
        quiet.stage.reasons[0].text
    )
    assert explain(state, day(27 + 31), BARE, S).stage.value == "declining"


def test_a_regular_buyer_on_their_own_rhythm_is_mature() -> None:
    state = orders(0, 14, 28, 42)
    why = explain(state, day(50), BARE, S)
    assert why.stage.value == "mature"
    assert why.stage.reasons[0].facts["rhythm_source"] == "own"
    assert why.stage.reasons[1].text == (
        "4 purchase days (at least 4) and the last gap of 14 days within 1.5× the rhythm → mature"
    )


def test_the_tier_is_the_value_score_against_the_cuts() -> None:
    state = orders(0, 10)
    at = day(20)
    score = build_card(state, at, BARE, S).value_score
    key = explain(state, at, fitted(score, key=score - 0.5, low=score - 1), S)
    assert key.tier.value == "key"
    assert key.tier.reasons[0].code == "tier.key"
    assert key.tier.reasons[0].facts["key_cut"] == score - 0.5
    assert "is at or above the key cut" in key.tier.reasons[0].text
    assert key.tier.reasons[0].text.endswith("(top 20%) → key")
    # The composite's inputs come with it.
    parts = key.tier.reasons[1]
    assert parts.code == "tier.value_score"
    assert (parts.facts["window_orders"], parts.facts["window_spend"]) == (2, "100.00")
    assert "2 order(s) worth 100.00 in the 365 days up to the last purchase" in parts.text

    low = explain(state, at, fitted(score, low=score + 0.1, key=score + 1), S)
    assert (low.tier.value, low.tier.reasons[0].code) == ("low", "tier.low")
    regular = explain(state, at, fitted(score), S)
    assert regular.tier.value == "regular"
    assert "lies between the low cut" in regular.tier.reasons[0].text
    unfitted = explain(state, at, BARE, S)
    assert unfitted.tier.reasons[0].code == "tier.unfitted"


def test_segment_and_strategy_name_their_scores_and_medians() -> None:
    state = orders(0, 10, 20, amount="100.00")
    at = day(25)
    score = build_card(state, at, BARE, S).value_score
    population = fitted(score)
    card = build_card(state, at, population, S)
    why = explain(state, at, population, S)
    assert card.rfm is not None
    assert why.segment.value == card.rfm.segment
    rfm = why.segment.reasons[0]
    assert (rfm.facts["r"], rfm.facts["f"], rfm.facts["m"]) == (
        card.rfm.recency,
        card.rfm.frequency,
        card.rfm.monetary,
    )
    assert rfm.facts["recency_days"] == 5
    assert rfm.text.startswith(f"R={card.rfm.recency} (last purchase 5 days ago), F=")
    assert rfm.text.endswith(f"→ {card.rfm.segment}")

    assert why.strategy.value == card.strategy is not None
    [reason] = why.strategy.reasons
    assert reason.code == f"strategy.{card.strategy}"
    assert reason.facts["high_value"] is True  # the median is a point below their score
    assert "≥ the median" in reason.text and f"→ {card.strategy}" in reason.text
