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
    for low, high in pairwise(P_ALIVE_BANDS):
        inside = (alive >= low) & ((alive < high) if high < 1 else (alive <= high))
        out[f"{low:.2f}-{high:.2f}"] = Share(int(inside.sum()), int((inside & bought).sum()))
    return out
