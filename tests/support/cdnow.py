"""The CDNOW master log (shipped in the ``lifetimes`` wheel) and the holdout check of what the
lifecycle concludes: judge every customer at the end of a calibration period, then see who
bought again in the holdout that follows. Used by the lifecycle's test and by ``make bench``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path

import numpy as np

from services.scoring.core import lifecycle, predict
from services.scoring.settings import ScoringSettings
from shared.card import Stage

CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_WEEKS = 39
# The stages judged, from the one that should buy again most to the one that should least.
RANKED = (Stage.MATURE, Stage.GROWING, Stage.DECLINING, Stage.CHURNED)
P_ALIVE_BANDS = (0.0, 0.05, 0.2, 0.5, 0.8, 1.0)


@dataclass(frozen=True, slots=True)
class Order:
    line: int
    customer_id: str
    day: date
    amount: Decimal


def master_log() -> Path:
    import lifetimes

    return Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"


def read_master(path: Path | None = None) -> list[Order]:
    """Every order line of the master log (the first line is a header)."""
    out = []
    for n, line in enumerate((path or master_log()).read_text().splitlines()):
        parts = line.split()
        if len(parts) != 4 or not parts[1].isdigit():
            continue
        d = parts[1]
        out.append(
            Order(
                n,
                parts[0],
                date(int(d[:4]), int(d[4:6]), int(d[6:])),
                Decimal(parts[3]).quantize(Decimal("0.01")),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Share:
    """How many customers a label holds, and how many of them bought again in the holdout."""

    customers: int
    bought_again: int

    @property
    def rate(self) -> float:
        return self.bought_again / self.customers if self.customers else 0.0


@dataclass(frozen=True, slots=True)
class Holdout:
    calibration_end: date
    holdout_end: date
    median_gap_days: float
    by_stage: Mapping[Stage, Share]
    by_p_alive: Mapping[str, Share]  # "0.00-0.05" ... from a BG/NBD fit on the calibration


def holdout(
    orders: Sequence[Order],
    settings: ScoringSettings,
    calibration_end: date = CALIBRATION_END,
    weeks: int = HOLDOUT_WEEKS,
    *,
    p_alive_bands: bool = False,
) -> Holdout:
    """Each customer's stage at ``calibration_end`` (the pure lifecycle over their purchase
    days, with the calibration's median gap as the population's), beside whether they bought
    in the ``weeks`` after it; optionally the same for bands of BG/NBD P(alive)."""
    holdout_end = calibration_end + timedelta(weeks=weeks)
    days: dict[str, set[int]] = defaultdict(set)
    again: set[str] = set()
    for o in orders:
        if o.day <= calibration_end:
            days[o.customer_id].add(o.day.toordinal())
        elif o.day <= holdout_end:
            again.add(o.customer_id)
    gaps = [b - a for d in days.values() for a, b in pairwise(sorted(d))]
    median_gap = float(statistics.median(gaps))
    until = calibration_end.toordinal()
    counts: dict[Stage, list[int]] = defaultdict(lambda: [0, 0])
    for customer, bought in days.items():
        stage, _ = lifecycle.walk(sorted(bought), median_gap, settings).at(until)
        counts[stage.stage][0] += 1
        counts[stage.stage][1] += customer in again
    bands: dict[str, Share] = {}
    if p_alive_bands:
        bands = _by_p_alive(days, again, until)
    return Holdout(
        calibration_end,
        holdout_end,
        median_gap,
        {stage: Share(n, k) for stage, (n, k) in counts.items()},
        bands,
    )


def _by_p_alive(days: Mapping[str, set[int]], again: set[str], until: int) -> dict[str, Share]:
    customers = list(days)
    stats = [predict.daily_stats_of_days(((d, 0.0) for d in days[c]), until) for c in customers]
    x = np.array([s.x for s in stats if s is not None])
    t_x = np.array([s.t_x for s in stats if s is not None])
    big_t = np.array([s.T for s in stats if s is not None])
    bg = predict.fit_bgnbd(predict.compress(x, t_x, big_t))
    alive = predict.p_alive_many(bg, x, t_x, big_t)
    bought = np.array([c in again for c in customers])
    out: dict[str, Share] = {}
    # One purchase day: P(alive) 1 by the model's construction, so a band of its own (the
    # customer list shows none for them).
    repeat = x > 0
    for low, high in pairwise(P_ALIVE_BANDS):
        inside = repeat & (alive >= low) & ((alive < high) if high < 1 else (alive <= high))
        out[f"{low:.2f}-{high:.2f}"] = Share(int(inside.sum()), int((inside & bought).sum()))
    once = ~repeat
    out["one purchase day"] = Share(int(once.sum()), int((once & bought).sum()))
    return out


@dataclass(frozen=True, slots=True)
class ValueBand:
    """Customers of one band of predicted holdout spend: the mean predicted, the mean spent."""

    customers: int
    predicted: float
    actual: float


@dataclass(frozen=True, slots=True)
class ValueHoldout:
    """The cards' value model (BG/NBD and Gamma-Gamma, fitted as a refit fits them, on the
    calibration period alone) against what the customers did in the holdout."""

    customers: int
    predicted_orders: float  # repeat purchase days expected in the holdout, all customers
    actual_orders: int  # purchase days in the holdout
    predicted_spend: float
    actual_spend: float
    by_fifth: list[ValueBand]  # customers by predicted spend, the highest fifth first


def value_holdout(
    orders: Sequence[Order],
    calibration_end: date = CALIBRATION_END,
    weeks: int = HOLDOUT_WEEKS,
) -> ValueHoldout:
    """Each customer's expected spend over the ``weeks`` after ``calibration_end`` (expected
    purchase days times expected order value, :func:`predict.clv_many` over that horizon, as
    the card's CLV is over 365 days) from the models fitted on the calibration period alone,
    beside what they spent then; and the same per fifth of customers by the prediction."""
    holdout_end = calibration_end + timedelta(weeks=weeks)
    bought: dict[str, dict[int, float]] = defaultdict(dict)
    spent: dict[str, float] = defaultdict(float)
    days_after: dict[str, set[int]] = defaultdict(set)
    for o in orders:
        day = o.day.toordinal()
        if o.day <= calibration_end:
            bought[o.customer_id][day] = bought[o.customer_id].get(day, 0.0) + float(o.amount)
        elif o.day <= holdout_end:
            spent[o.customer_id] += float(o.amount)
            days_after[o.customer_id].add(day)
    customers = sorted(bought)
    until = calibration_end.toordinal()
    stats = [predict.daily_stats_of_days(bought[c].items(), until) for c in customers]
    x = np.array([s.x for s in stats if s is not None])
    t_x = np.array([s.t_x for s in stats if s is not None])
    big_t = np.array([s.T for s in stats if s is not None])
    mean_spend = np.array([s.mean_spend for s in stats if s is not None])
    bg = predict.fit_bgnbd(predict.compress(x, t_x, big_t))
    repeat = (x > 0) & (mean_spend > 0)
    gg = predict.fit_gamma_gamma(x[repeat], mean_spend[repeat])
    horizon = float(holdout_end.toordinal() - until)
    orders_expected = predict.expected_orders_many(bg, horizon, x, t_x, big_t)
    value = predict.clv_many(bg, gg, x, t_x, big_t, mean_spend, horizon_days=horizon)
    actual = np.array([spent.get(c, 0.0) for c in customers])
    ranked = np.argsort(-value, kind="stable")
    fifths = [
        ValueBand(len(part), float(value[part].mean()), float(actual[part].mean()))
        for part in np.array_split(ranked, 5)
    ]
    return ValueHoldout(
        customers=len(customers),
        predicted_orders=float(orders_expected.sum()),
        actual_orders=sum(len(days_after[c]) for c in customers),
        predicted_spend=float(value.sum()),
        actual_spend=float(actual.sum()),
        by_fifth=fifths,
    )
