"""RFM: recency, frequency and monetary value scored 1-5 by quintiles of the population.

Scoring a customer needs only the population's quintile cut points (:class:`RfmBreakpoints`),
which a scheduled job computes with :func:`breakpoints_from` over every customer with a
purchase; a customer's score moves with their own figures at once and with the population
when the cut points are refreshed.

A value on a cut point goes to the lower-scoring side, so a population where most customers
bought once scores every one-time buyer F=1 rather than spreading identical customers over
several scores.

Segments use the common R x FM grid, where FM is the mean of F and M rounded half up::

          FM=1            2                   3                   4            5
    R=5   new             potential_loyalist  potential_loyalist  champions    champions
    R=4   promising       potential_loyalist  potential_loyalist  loyal        loyal
    R=3   about_to_sleep  about_to_sleep      need_attention      loyal        loyal
    R=2   hibernating     hibernating         at_risk             at_risk      cannot_lose
    R=1   hibernating     hibernating         at_risk             at_risk      cannot_lose
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from shared.card import Segment, Stage

Cuts = tuple[float, float, float, float]
_QUINTILES = (0.2, 0.4, 0.6, 0.8)


_S = Segment
_LOW_R = (_S.HIBERNATING, _S.HIBERNATING, _S.AT_RISK, _S.AT_RISK, _S.CANNOT_LOSE)
# _GRID[r - 1][fm - 1]
_GRID: tuple[tuple[Segment, ...], ...] = (
    _LOW_R,
    _LOW_R,
    (_S.ABOUT_TO_SLEEP, _S.ABOUT_TO_SLEEP, _S.NEED_ATTENTION, _S.LOYAL, _S.LOYAL),
    (_S.PROMISING, _S.POTENTIAL_LOYALIST, _S.POTENTIAL_LOYALIST, _S.LOYAL, _S.LOYAL),
    (_S.NEW, _S.POTENTIAL_LOYALIST, _S.POTENTIAL_LOYALIST, _S.CHAMPIONS, _S.CHAMPIONS),
)


@dataclass(frozen=True, slots=True)
class RfmBreakpoints:
    """The 20/40/60/80th percentiles of each RFM input over the population of buyers."""

    recency_days: Cuts
    frequency: Cuts
    monetary: Cuts


class RfmScore(NamedTuple):
    recency: int
    frequency: int
    monetary: int


def _quintile_cuts(values: Sequence[float], name: str) -> Cuts:
    if len(values) == 0:
        raise ValueError(f"no {name} values: RFM breakpoints need at least one buyer")
    # Whole numbers (days, orders) stay integers: the quantiles interpolate them to the same
    # float64 values, and a refit's million of them are not copied to floats first.
    q = np.quantile(np.asarray(values), _QUINTILES)
    return (float(q[0]), float(q[1]), float(q[2]), float(q[3]))


def breakpoints_from(
    recency_days: Sequence[float], frequency: Sequence[float], monetary: Sequence[float]
) -> RfmBreakpoints:
    """Quintile cut points of the population's recency (days since the last purchase),
    frequency (orders) and monetary value (net lifetime spend), one entry per buyer."""
    return RfmBreakpoints(
        recency_days=_quintile_cuts(recency_days, "recency"),
        frequency=_quintile_cuts(frequency, "frequency"),
        monetary=_quintile_cuts(monetary, "monetary"),
    )


def score(
    recency_days: float, frequency: float, monetary: float, breakpoints: RfmBreakpoints
) -> RfmScore:
    """Scores 1-5: fewer days since the last purchase, more orders and more spend score higher."""
    return RfmScore(
        recency=5 - bisect_right(breakpoints.recency_days, recency_days),
        frequency=1 + bisect_left(breakpoints.frequency, frequency),
        monetary=1 + bisect_left(breakpoints.monetary, monetary),
    )


# Quintiles are relative to the population: in a shop whose customers mostly left long ago, a
# year's silence can still score R=5. The lifecycle judges silence against the customer's own
# rhythm, so it bounds what recency may claim.
_QUIET = frozenset({Stage.DECLINING, Stage.CHURNED})
QUIET_RECENCY_MAX = 2


def judged(score: RfmScore, stage: Stage) -> tuple[RfmScore, Segment]:
    """The score and segment a customer in ``stage`` is shown, agreeing with the stage:

    - a declining or churned customer's recency scores at most 2, so their segment is one of
      ``hibernating``, ``at_risk`` or ``cannot_lose`` — never ``champions`` or ``loyal``;
    - a customer in the stage ``new`` is in the segment ``new``, and only they are: the
      grid's ``new`` cell means "promising" for anyone who has bought more than once.
    """
    if stage in _QUIET and score.recency > QUIET_RECENCY_MAX:
        score = score._replace(recency=QUIET_RECENCY_MAX)
    if stage is Stage.NEW:
        return score, Segment.NEW
    found = segment(*score)
    return score, (Segment.PROMISING if found is Segment.NEW else found)


def segment(recency: int, frequency: int, monetary: int) -> Segment:
    """The segment of an R, F, M score triple (see the grid in the module docstring)."""
    for name, value in (("recency", recency), ("frequency", frequency), ("monetary", monetary)):
        if not 1 <= value <= 5:
            raise ValueError(f"{name} score must be 1-5, got {value}")
    fm = (frequency + monetary + 1) // 2
    return _GRID[recency - 1][fm - 1]
