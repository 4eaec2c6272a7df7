"""The lift estimator: its 95% intervals hold the true difference about 95% of the time, and
a small sample is never a win."""

from __future__ import annotations

import numpy as np
import pytest

from services.outreach.core.lift import (
    MIN_CONVERSIONS,
    MIN_CUSTOMERS,
    forecast_difference,
    rate_difference,
    revenue_difference,
    small_sample,
    verdict,
    wilson,
)

EXPERIMENTS = 2000


@pytest.mark.parametrize(
    ("p", "d", "n_treated", "n_control"),
    [(0.20, 0.0, 300, 300), (0.20, 0.08, 300, 300), (0.05, 0.03, 400, 200), (0.30, 0.0, 120, 60)],
)
def test_rate_intervals_cover_the_true_difference_95_percent_of_the_time(
    p: float, d: float, n_treated: int, n_control: int
) -> None:
    rng = np.random.default_rng(14)
    treated = rng.binomial(n_treated, p + d, size=EXPERIMENTS)
    control = rng.binomial(n_control, p, size=EXPERIMENTS)
    covered = 0
    for x1, x2 in zip(treated, control, strict=True):
        interval = rate_difference(int(x1), n_treated, int(x2), n_control)
        covered += interval.low <= d <= interval.high
    assert 0.93 <= covered / EXPERIMENTS <= 0.97, covered / EXPERIMENTS


def test_the_forecast_interval_covers_the_true_lift_over_a_known_forecast() -> None:
    rng = np.random.default_rng(15)
    p, d, n = 0.25, 0.05, 400
    covered = sum(
        (i := forecast_difference(int(x), n, p)).low <= d <= i.high
        for x in rng.binomial(n, p + d, size=EXPERIMENTS)
    )
    assert 0.93 <= covered / EXPERIMENTS <= 0.97


def test_revenue_intervals_cover_the_true_difference_of_means() -> None:
    rng = np.random.default_rng(16)
    n, p, mean_order = 300, 0.2, 50.0
    d_rate = 0.05
    truth = (p + d_rate) * mean_order - p * mean_order
    runs, covered = 300, 0
    for i in range(runs):
        r1 = rng.exponential(mean_order, size=rng.binomial(n, p + d_rate))
        r2 = rng.exponential(mean_order, size=rng.binomial(n, p))
        interval = revenue_difference(n, list(r1), n, list(r2), resamples=1000, seed=i)
        covered += interval.low <= truth <= interval.high
    assert 0.91 <= covered / runs <= 0.98, covered / runs


def test_the_bootstrap_is_seeded_the_same_revenues_give_the_same_interval() -> None:
    a = revenue_difference(100, [10.0, 20.0, 30.0], 100, [5.0])
    b = revenue_difference(100, [30.0, 10.0, 20.0], 100, [5.0])
    assert a == b
    assert a.estimate == pytest.approx(0.55)


def test_wilson_matches_the_textbook_values() -> None:
    low, high = wilson(81, 263)  # Newcombe 1998, Table I, example (a)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson(0, 0) == (0.0, 1.0)


def test_newcombe_matches_his_worked_example() -> None:
    # Newcombe 1998 (Stat Med 17:873), Table II example (a): 56/70 vs 48/80, method 10.
    interval = rate_difference(56, 70, 48, 80)
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.0524, 0.3339)


def test_a_small_sample_is_never_a_win() -> None:
    wide_win = rate_difference(29, 29, 0, 29)
    assert wide_win.low > 0
    small = small_sample((29, 29), (29, 0))
    assert small and verdict(wide_win, small) == "too_small"
    assert small_sample((MIN_CUSTOMERS, MIN_CONVERSIONS - 1), (100, 50))
    assert not small_sample((MIN_CUSTOMERS, MIN_CONVERSIONS), (MIN_CUSTOMERS, MIN_CONVERSIONS))
    big = rate_difference(300, 1000, 200, 1000)
    assert verdict(big, False) == "lift"
    assert verdict(rate_difference(200, 1000, 300, 1000), False) == "harm"
    assert verdict(rate_difference(200, 1000, 205, 1000), False) == "no_difference"
