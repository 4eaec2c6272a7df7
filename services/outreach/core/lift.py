"""Lift with honest uncertainty: how much more the treated customers converted than the
baseline, with a 95% interval, and whether that is a win at all.

- **Against a control group** (the rule held some matches out): the difference of conversion
  rates, treatment minus control, with Newcombe's hybrid score interval (method 10 of
  Newcombe 1998: a Wilson score interval per arm, combined); and the difference of revenue
  per customer with a percentile bootstrap (:data:`RESAMPLES` resamples of each arm's
  customers, seeded, so the same counts always give the same interval).
- **Against the model's forecast** (no control group): the treated customers' rate minus the
  mean of their forecasts (each decision's ``baseline``: the card's probability of at least
  one order within the goal's window); the interval is the treated arm's Wilson interval
  shifted by that mean (the forecast is taken as known: its own error is not in the
  interval, which is therefore narrower than the truth).

A result is ``small_sample`` when an arm has fewer than :data:`MIN_CUSTOMERS` customers or
fewer than :data:`MIN_CONVERSIONS` conversions (for the forecast: fewer than that many
treated, or converted), and a small sample is never a win. ``verdict``: ``lift`` when the
interval lies above zero, ``harm`` below it, ``no_difference`` when it holds zero,
``too_small`` when the sample is small, whatever the interval says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Z95 = 1.959963984540054  # the normal quantile of 0.975
MIN_CUSTOMERS = 30
MIN_CONVERSIONS = 5
RESAMPLES = 2000
SEED = 20261205

Verdict = Literal["lift", "harm", "no_difference", "too_small"]

NEWCOMBE = "Newcombe hybrid score interval (method 10; Wilson score interval per arm), 95%"
BOOTSTRAP = f"percentile bootstrap of the difference of means, {RESAMPLES} resamples, 95%"
FORECAST = (
    "treated rate minus the mean model forecast; the treated arm's Wilson score interval "
    "shifted by that mean (the forecast taken as known), 95%"
)


@dataclass(frozen=True, slots=True)
class Interval:
    """A difference and its 95% interval, and the method that gave them."""

    estimate: float
    low: float
    high: float
    method: str


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(0, 1)`` for no trials)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_difference(x1: int, n1: int, x2: int, n2: int) -> Interval:
    """``x1/n1 - x2/n2`` (treatment minus control) with Newcombe's hybrid score interval."""
    p1 = x1 / n1 if n1 else 0.0
    p2 = x2 / n2 if n2 else 0.0
    l1, u1 = wilson(x1, n1)
    l2, u2 = wilson(x2, n2)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Interval(d, low, high, NEWCOMBE)


def forecast_difference(x: int, n: int, forecast: float) -> Interval:
    """The treated rate ``x/n`` minus the mean forecast, with the shifted Wilson interval."""
    p = x / n if n else 0.0
    low, high = wilson(x, n)
    return Interval(p - forecast, low - forecast, high - forecast, FORECAST)


def _resampled_means(
    rng: np.random.Generator, n: int, values: np.ndarray, resamples: int
) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of ``n`` customers, of whom those with
    revenue hold ``values`` and the rest nothing.

    Resampling n customers with replacement draws a binomial number of the ones with
    revenue, then those uniformly with replacement: the same distribution, at the cost of
    the converted customers rather than of all of them."""
    k = len(values)
    if n == 0:
        return np.zeros(resamples)
    if k == 0:
        return np.zeros(resamples)
    counts = rng.binomial(n, k / n, size=resamples)
    picks = values[rng.integers(0, k, size=int(counts.sum()))]
    owner = np.repeat(np.arange(resamples), counts)
    sums = np.bincount(owner, weights=picks, minlength=resamples)
    return sums / n


def revenue_difference(
    n1: int,
    revenue1: Sequence[float],
    n2: int,
    revenue2: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """Revenue per customer, treatment minus control, with a seeded percentile bootstrap.
    ``revenue1``/``revenue2`` are the revenues of the arms' customers who brought any (the
    other customers of ``n1``/``n2`` brought none)."""
    # Sorted: the same revenues in any order give the same interval.
    v1 = np.sort(np.asarray([r for r in revenue1 if r], dtype=float))
    v2 = np.sort(np.asarray([r for r in revenue2 if r], dtype=float))
    d = (v1.sum() / n1 if n1 else 0.0) - (v2.sum() / n2 if n2 else 0.0)
    rng = np.random.default_rng(seed)
    diffs = _resampled_means(rng, n1, v1, resamples) - _resampled_means(rng, n2, v2, resamples)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Interval(float(d), float(low), float(high), BOOTSTRAP)


def small_sample(*arms: tuple[int, int]) -> bool:
    """Whether any arm, as (customers, conversions), is too small to judge."""
    return any(n < MIN_CUSTOMERS or x < MIN_CONVERSIONS for n, x in arms)


def verdict(interval: Interval, small: bool) -> Verdict:
    """What the interval says, a small sample saying nothing."""
    if small:
        return "too_small"
    if interval.low > 0:
        return "lift"
    if interval.high < 0:
        return "harm"
    return "no_difference"
