"""RFM quintiles and segments; 80/20 value tiers and strategy quadrants."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.scoring.core import rfm, tiers
from services.scoring.core.card import Population, build_card
from services.scoring.core.predict import BgNbdParams, GammaGammaParams
from services.scoring.core.rfm import RfmBreakpoints
from services.scoring.core.state import apply
from services.scoring.core.tiers import TierBreakpoints
from services.scoring.settings import ScoringSettings
from shared.card import Segment, Stage, Strategy, Tier
from shared.events import Envelope

S = ScoringSettings()

# -- RFM ---------------------------------------------------------------------------------------


def test_quintiles_split_a_population_into_fifths() -> None:
    values = [float(v) for v in range(1, 1001)]
    bp = rfm.breakpoints_from(values, values, values)
    scores = [rfm.score(v, v, v, bp) for v in values]
    for part in (0, 1, 2):
        assert Counter(s[part] for s in scores) == {1: 200, 2: 200, 3: 200, 4: 200, 5: 200}
    # Recency is the one where less is better.
    assert rfm.score(1, 1000, 1000, bp) == (5, 5, 5)
    assert rfm.score(1000, 1, 1, bp) == (1, 1, 1)


def test_values_on_a_cut_score_on_the_lower_side() -> None:
    # Most customers bought once: every cut point but the last is 1.
    frequency = [1.0] * 70 + [2.0] * 20 + [5.0] * 10
    bp = rfm.breakpoints_from([10.0] * 100, frequency, [50.0] * 100)
    assert bp.frequency[:3] == (1.0, 1.0, 1.0)
    assert rfm.score(10, 1, 50, bp).frequency == 1
    assert rfm.score(10, 2, 50, bp).frequency == 4
    assert rfm.score(10, 9, 50, bp).frequency == 5
    # Ties go to the lower score in recency too: on every cut is as stale as it gets here.
    assert rfm.score(10, 1, 50, bp).recency == 1
    assert rfm.score(9, 1, 50, bp).recency == 5


def test_breakpoints_need_a_population() -> None:
    with pytest.raises(ValueError, match="at least one buyer"):
        rfm.breakpoints_from([], [1.0], [1.0])


@pytest.mark.parametrize(
    ("r", "f", "m", "expected"),
    [
        (5, 5, 5, Segment.CHAMPIONS),
        (5, 4, 3, Segment.CHAMPIONS),  # FM = 3.5 rounds up to 4
        (4, 5, 4, Segment.LOYAL),
        (3, 4, 4, Segment.LOYAL),
        (5, 3, 2, Segment.POTENTIAL_LOYALIST),
        (4, 2, 2, Segment.POTENTIAL_LOYALIST),
        (5, 1, 1, Segment.NEW),
        (4, 1, 1, Segment.PROMISING),
        (3, 3, 3, Segment.NEED_ATTENTION),
        (3, 1, 2, Segment.ABOUT_TO_SLEEP),
        (2, 3, 3, Segment.AT_RISK),
        (1, 4, 4, Segment.AT_RISK),
        (1, 5, 5, Segment.CANNOT_LOSE),
        (2, 5, 4, Segment.CANNOT_LOSE),
        (2, 2, 1, Segment.HIBERNATING),
        (1, 1, 1, Segment.HIBERNATING),
    ],
)
def test_segment_map(r: int, f: int, m: int, expected: Segment) -> None:
    assert rfm.segment(r, f, m) is expected


def test_segment_map_covers_every_score_and_every_segment() -> None:
    seen = {rfm.segment(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}
    assert seen == set(Segment)
    with pytest.raises(ValueError, match="recency"):
        rfm.segment(0, 3, 3)


# -- tiers -------------------------------------------------------------------------------------


def synthetic_composites(n: int, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [
        tiers.composite(
            Decimal(str(round(rng.lognormvariate(4, 1.2), 2))),
            rng.randint(1, 30),
            rng.uniform(3, 200),
            Decimal(str(round(rng.expovariate(0.05), 2))) if rng.random() < 0.2 else Decimal(0),
            S,
        )
        for _ in range(n)
    ]


def test_eighty_twenty_tiers_on_a_synthetic_population() -> None:
    values = synthetic_composites(5000)
    bp = tiers.breakpoints_from(values, [1.0], S)
    counts = Counter(tiers.tier(v, bp) for v in values)
    assert counts[Tier.KEY] == 1000
    assert counts[Tier.LOW] == 1000
    assert counts[Tier.REGULAR] == 3000


def test_composite_rewards_spend_and_volume_and_penalises_rhythm_and_arrears() -> None:
    base = tiers.composite(Decimal(100), 5, 30.0, Decimal(0), S)
    assert tiers.composite(Decimal(200), 5, 30.0, Decimal(0), S) > base
    assert tiers.composite(Decimal(100), 6, 30.0, Decimal(0), S) > base
    assert tiers.composite(Decimal(100), 5, 10.0, Decimal(0), S) > base
    assert tiers.composite(Decimal(100), 5, 30.0, Decimal(50), S) < base


def test_identical_population_is_all_regular() -> None:
    bp = tiers.breakpoints_from([1.5] * 10, [], S)
    assert {tiers.tier(1.5, bp)} == {Tier.REGULAR}
    assert tiers.tier(2.0, bp) is Tier.KEY
    assert tiers.tier(1.0, bp) is Tier.LOW
    assert bp.clv_median is None
    assert tiers.strategy(2.0, 100.0, 0.9, bp, S) is None


@pytest.mark.parametrize(
    ("value", "clv", "expected"),
    [
        (5.0, 200.0, Strategy.DEVELOP),
        (3.0, 100.0, Strategy.DEVELOP),  # at the medians counts as high
        (5.0, 50.0, Strategy.MAINTAIN),
        (1.0, 200.0, Strategy.NURTURE),
        (1.0, 50.0, Strategy.REDUCE_COST),
    ],
)
def test_strategy_quadrants(value: float, clv: float, expected: Strategy) -> None:
    bp = TierBreakpoints(low_cut=1.0, key_cut=4.0, composite_median=3.0, clv_median=100.0)
    assert tiers.strategy(value, clv, 0.9, bp, S) is expected


@pytest.mark.parametrize(
    ("value", "expected"), [(5.0, Strategy.MAINTAIN), (1.0, Strategy.REDUCE_COST)]
)
def test_a_customer_almost_surely_gone_has_no_potential_whatever_the_clv(
    value: float, expected: Strategy
) -> None:
    bp = TierBreakpoints(low_cut=1.0, key_cut=4.0, composite_median=3.0, clv_median=100.0)
    assert tiers.strategy(value, 500.0, 0.049, bp, S) is expected
    assert tiers.strategy(value, 500.0, 0.05, bp, S) in (Strategy.DEVELOP, Strategy.NURTURE)


@pytest.mark.parametrize(
    ("stage", "score", "segment"),
    [
        # A year's silence can still score R=5 against an older population: the stage bounds it.
        (Stage.CHURNED, (5, 5, 5), Segment.CANNOT_LOSE),
        (Stage.DECLINING, (4, 4, 4), Segment.AT_RISK),
        (Stage.CHURNED, (5, 1, 1), Segment.HIBERNATING),
        (Stage.NEW, (5, 1, 1), Segment.NEW),
        (Stage.NEW, (3, 1, 2), Segment.NEW),
        # The grid's `new` cell, for a customer who is not new, is `promising`.
        (Stage.GROWING, (5, 1, 1), Segment.PROMISING),
        (Stage.MATURE, (5, 5, 5), Segment.CHAMPIONS),
    ],
)
def test_the_segment_agrees_with_the_stage(
    stage: Stage, score: tuple[int, int, int], segment: Segment
) -> None:
    shown, found = rfm.judged(rfm.RfmScore(*score), stage)
    assert found is segment
    # The score shown is the one the segment was read from (frequency and monetary as scored).
    assert shown[1:] == score[1:]
    if stage in (Stage.CHURNED, Stage.DECLINING):
        assert shown.recency == min(score[0], 2)


# -- on the card -------------------------------------------------------------------------------


def test_card_carries_rfm_tier_and_strategy_once_the_population_is_fitted() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    state = None
    for i, (days, amount) in enumerate([(0, "120.00"), (20, "80.00"), (41, "95.50")]):
        event = Envelope.model_validate(
            {
                "event_id": f"e-{i}",
                "event_type": "order.paid",
                "customer_id": "c-9",
                "occurred_at": t0 + timedelta(days=days),
                "received_at": t0,
                "source": "test",
                "data": {
                    "order_id": f"o-{i}",
                    "status": "paid",
                    "amount": amount,
                    "currency": "EUR",
                },
            }
        )
        state, _ = apply(state, event, S)
    assert state is not None
    population = Population(
        rfm=RfmBreakpoints((5, 20, 60, 150), (1, 1, 2, 4), (30, 80, 150, 400)),
        tiers=TierBreakpoints(low_cut=1.0, key_cut=4.0, composite_median=2.5, clv_median=50.0),
        bg=BgNbdParams(r=0.24, alpha=4.41, a=0.79, b=2.43),
        gg=GammaGammaParams(p=6.25, q=3.74, v=15.45),
        median_gap_days=25.0,
    )
    card = build_card(state, t0 + timedelta(days=45), population, S)
    assert card.rfm is not None
    assert (card.rfm.recency, card.rfm.frequency, card.rfm.monetary) == (5, 4, 4)
    assert card.rfm.segment is Segment.CHAMPIONS
    assert card.value.purchase_interval_days == 20.5
    assert card.prediction is not None and card.prediction.frequency == 2
    assert card.prediction.clv_365d is not None
    assert population.tiers is not None
    assert card.tier is tiers.tier(card.value_score, population.tiers)
    assert card.strategy is not None
    assert Population.model_validate_json(population.model_dump_json()) == population


def test_population_rejects_parameters_the_model_cannot_use() -> None:
    with pytest.raises(ValueError, match="Gamma-Gamma"):
        Population(gg=GammaGammaParams(p=1.0, q=0.5, v=1.0))
    with pytest.raises(ValueError, match="BG/NBD"):
        Population(bg=BgNbdParams(r=1.0, alpha=1.0, a=1.0, b=1.0))


def test_a_composite_can_be_rejudged_on_another_rhythm() -> None:
    """The refit ranks composites on the median gap it is about to publish."""
    judged = tiers.composite(Decimal(250), 1, 30.0, Decimal(0), S)
    again = tiers.with_rhythm(judged, 30.0, 27.0, S)
    assert again == pytest.approx(tiers.composite(Decimal(250), 1, 27.0, Decimal(0), S))
