"""Value tiers (80/20) and the value x potential strategy quadrant.

Customers are ranked on one composite number (:func:`composite`) that needs nothing from the
population, so it moves with each event; the population only supplies the cut points
(:class:`TierBreakpoints`), refreshed by a scheduled job with :func:`breakpoints_from`.

The composite is a weighted sum of logarithms: spend, volume and rhythm live on different
scales (money, counts, days) and are heavy-tailed, and ``log1p`` puts them on comparable
footing while letting one whale move the score without dwarfing every other term. Spend and
volume add, a longer purchase rhythm and a larger outstanding balance subtract.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from services.scoring.settings import ScoringSettings
from shared.card import Strategy, Tier


@dataclass(frozen=True, slots=True)
class TierBreakpoints:
    """Population cut points: composite percentiles for tiers, medians for strategy."""

    low_cut: float  # composite at the ``tier_low_share`` percentile
    key_cut: float  # composite at the ``1 - tier_key_share`` percentile
    composite_median: float
    clv_median: float | None  # None until a CLV model has scored anyone


def composite(
    spend: Decimal | float,
    orders: int,
    rhythm_days: float,
    outstanding: Decimal | float,
    settings: ScoringSettings,
) -> float:
    """The value score tiers rank on (spend and orders over ``tier_window_days``; rhythm in days,
    the population median for customers without one of their own)."""
    return (
        settings.composite_spend_weight * math.log1p(max(float(spend), 0.0))
        + settings.composite_orders_weight * math.log1p(max(orders, 0))
        - settings.composite_rhythm_weight * math.log1p(max(rhythm_days, 0.0))
        - settings.composite_outstanding_weight * math.log1p(max(float(outstanding), 0.0))
    )


def with_rhythm(value: float, was: float, will: float, settings: ScoringSettings) -> float:
    """The composite ``value``, judged with a rhythm of ``was`` days, had it been ``will``."""
    weight = settings.composite_rhythm_weight
    return value + weight * (math.log1p(max(was, 0.0)) - math.log1p(max(will, 0.0)))


def breakpoints_from(
    composites: Sequence[float], clvs: Sequence[float], settings: ScoringSettings
) -> TierBreakpoints:
    """Cut points from every customer's composite and every predicted ``clv_365d``."""
    if len(composites) == 0:
        raise ValueError("no composites: tier breakpoints need at least one customer")
    values = np.asarray(composites, dtype=np.float64)
    low, key, mid = np.quantile(
        values, [settings.tier_low_share, 1.0 - settings.tier_key_share, 0.5]
    )
    clv_median = float(np.median(np.asarray(clvs, dtype=np.float64))) if len(clvs) else None
    return TierBreakpoints(float(low), float(key), float(mid), clv_median)


def tier(value: float, breakpoints: TierBreakpoints) -> Tier:
    """``key`` at or above the key cut, ``low`` at or below the low cut, else ``regular``.

    When the cuts coincide (a population of identical customers) a customer sitting on them
    is ``regular``: nobody stands out in either direction.
    """
    if value >= breakpoints.key_cut and value > breakpoints.low_cut:
        return Tier.KEY
    if value <= breakpoints.low_cut and value < breakpoints.key_cut:
        return Tier.LOW
    return Tier.REGULAR


def strategy(
    value: float,
    clv: float,
    p_alive: float | None,
    breakpoints: TierBreakpoints,
    settings: ScoringSettings,
) -> Strategy | None:
    """The quadrant of current value (composite) x potential; "high" is at or above the
    population median. Potential is the predicted ``clv_365d``, and it is low whatever the CLV
    while P(alive) is below ``potential_min_p_alive``: a customer who has almost surely left
    is not one to develop or nurture. None while no CLV median is known."""
    if breakpoints.clv_median is None:
        return None
    high_value = value >= breakpoints.composite_median
    alive = p_alive is None or p_alive >= settings.potential_min_p_alive
    high_potential = alive and clv >= breakpoints.clv_median
    if high_value:
        return Strategy.DEVELOP if high_potential else Strategy.MAINTAIN
    return Strategy.NURTURE if high_potential else Strategy.REDUCE_COST
