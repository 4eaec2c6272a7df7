"""Lifecycle stages, derived from a customer's purchase days and the passing of time.

The stage is never stored: it is recomputed by walking the purchase history, so the answer for
a given history and ``as_of`` is the same however and whenever the events arrived. Stages move
at UTC midnights (purchase days are UTC dates); "silent for more than N days" means that many
whole days since the last purchase day.

The rules (thresholds are :class:`ScoringSettings` fields):

- ``prospect``: no purchase yet.
- ``new``: exactly one purchase day. It holds at least ``new_days`` and, like every active
  stage, ends by time alone only in ``declining`` or ``churned`` (the product's stage list has
  no "one-time buyer, not yet silent" stage, so ``new`` covers it).
- ``growing``: a repeat buyer. ``mature``: at least ``mature_min_purchases`` purchase days and
  the latest gap on rhythm, judged at each purchase: at most ``mature_gap_multiple`` rhythms,
  or at most ``decline_min_days`` (a pause too short to be declining is not off rhythm either).
- ``declining``: silent for more than ``decline_rhythm_multiple`` rhythms, but never before
  ``decline_min_days`` (a buyer on a 9-day rhythm who pauses three weeks has not lapsed).
- ``churned``: silent for more than ``churn_rhythm_multiple`` rhythms, but never before
  ``churn_min_days`` (a weekly buyer who pauses five weeks is ``declining``, not lost), never
  sooner than ``churn_after_decline_min_days`` after declining began, and always after
  ``churn_max_days``. A customer whose declining spell that cap would cut shorter than
  ``churn_after_decline_min_days`` goes straight from an active stage to ``churned``.
- A purchase while ``declining`` puts the customer back in the stage the purchase rules give
  them (``new`` does not recur: ``growing`` or ``mature``): they were slipping, not lost.
- ``reactivated``: a purchase while ``churned`` — back after being lost. It holds for
  ``reactivated_days`` whatever happens, then the rules above apply again.

Rhythm is the median gap between purchase days up to the latest one, or the population median
gap while the customer has fewer than ``own_rhythm_min_purchases`` purchase days.
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import NamedTuple

from services.scoring.settings import ScoringSettings
from shared.card import Stage


@dataclass(frozen=True, slots=True)
class StageInfo:
    """Where a customer stands at a moment, and when time alone would next move them."""

    stage: Stage
    since: date | None  # None for prospects: there is no purchase to date the stage from
    next_transition_at: datetime | None


class Transition(NamedTuple):
    """A stage change on ``at`` (UTC midnight); the first is always out of ``prospect``.

    A named tuple: histories are compared transition by transition on every batch."""

    from_stage: Stage
    to_stage: Stage
    at: date


def midnight(day: date) -> datetime:
    """The UTC instant a stage that changes on ``day`` changes."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def day_of(moment: datetime | date) -> date:
    """The UTC date of ``moment`` (a date is returned as is)."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).date()
    return moment


def median(sorted_values: Sequence[float]) -> float:
    """Median of an already sorted, non-empty sequence."""
    n = len(sorted_values)
    mid = n // 2
    if n % 2:
        return float(sorted_values[mid])
    return (sorted_values[mid - 1] + sorted_values[mid]) / 2


class Thresholds(NamedTuple):
    """When silence moves a customer, in days after their latest purchase day: the stage
    changes at the UTC midnight that many days later ("silent for more than N days" is N + 1).
    """

    declining_on: int | None  # None when the customer goes straight to churned
    churned_on: int


def on_rhythm(gap: int, rhythm: float, s: ScoringSettings) -> bool:
    """Whether a purchase ``gap`` days after the one before keeps to ``rhythm`` (for
    ``mature``). A gap within the decline floor always does: a frequent buyer's three-week
    pause neither makes them declining nor costs them their maturity."""
    return gap <= max(s.mature_gap_multiple * rhythm, s.decline_min_days)


def thresholds(rhythm: float, first: bool, s: ScoringSettings) -> Thresholds:
    """The silence thresholds of a customer with ``rhythm`` (``first``: one purchase day)."""
    decline = math.floor(max(s.decline_rhythm_multiple * rhythm, s.decline_min_days)) + 1
    silence = max(s.churn_rhythm_multiple * rhythm, s.churn_min_days)
    churn = math.floor(min(silence, s.churn_max_days)) + 1
    if first:
        decline = max(decline, s.new_days)
        churn = max(churn, s.new_days)
    # Declining lasts long enough for the rules that act on it; where the cap forbids that,
    # the spell is skipped rather than cut to a few days (two episodes in a week).
    margin = s.churn_after_decline_min_days
    churn = max(churn, min(decline + margin, s.churn_max_days + 1))
    return Thresholds(decline if churn - decline >= margin else None, churn)


@dataclass(slots=True)
class _Clock:
    """The time-driven schedule after the latest purchase.

    Days are proleptic ordinals (``date.toordinal``): the walk does integer arithmetic only.
    """

    start: int  # the latest purchase day
    base: Stage  # the stage the purchase rules gave the latest purchase
    declining_at: int | None  # None when the customer skips straight to churned
    churned_at: int
    reactivated_until: int | None  # reactivated on days before this one
    boundaries: list[int]  # the days after ``start`` on which the stage may change, in order

    def stage_on(self, day: int) -> Stage:
        if self.reactivated_until is not None and day < self.reactivated_until:
            return Stage.REACTIVATED
        if day >= self.churned_at:
            return Stage.CHURNED
        if self.declining_at is not None and day >= self.declining_at:
            return Stage.DECLINING
        return self.base


@dataclass(slots=True)
class Walk:
    """The walk over a customer's purchase days, paused just after the latest one.

    It holds the stage changes so far and the schedule in force, so a later purchase day
    resumes it (:func:`walk`) instead of walking the whole history again; :meth:`at` reads the
    stage at any day from it. Days are proleptic ordinals: the walk is integer arithmetic.
    """

    population_median_gap: float
    settings: ScoringSettings
    days: list[int] = field(default_factory=list)  # the purchase days walked, ascending
    stage: Stage = Stage.PROSPECT
    clock: _Clock | None = None
    gaps: list[int] = field(default_factory=list)  # between purchase days, sorted
    moves: list[Transition] = field(default_factory=list)

    def _step(self, day: int) -> None:
        """Walk on to the next purchase day (after every day walked so far)."""
        s = self.settings
        clock, stage = self.clock, self.stage
        if clock is not None and day >= clock.boundaries[0]:
            for boundary in clock.boundaries:
                # A boundary on the purchase day itself applies first: the stage at that
                # midnight is what the purchase finds.
                if boundary <= day and (moved := clock.stage_on(boundary)) != stage:
                    self.moves.append(Transition(stage, moved, date.fromordinal(boundary)))
                    stage = moved
        count = len(self.days) + 1
        gap = day - self.days[-1] if self.days else 0
        self.days.append(day)
        if count > 1:
            insort(self.gaps, gap)
        if count >= s.own_rhythm_min_purchases:
            rhythm = median(self.gaps)
        else:
            rhythm = self.population_median_gap
        if count == 1:
            base = Stage.NEW
        elif count >= s.mature_min_purchases and on_rhythm(gap, rhythm, s):
            base = Stage.MATURE
        else:
            base = Stage.GROWING
        react_until = clock.reactivated_until if clock is not None else None
        if stage is Stage.CHURNED:
            react_until = day + s.reactivated_days
        self.clock = clock = _schedule(day, rhythm, base, react_until, count == 1, s)
        moved = clock.stage_on(day)
        if moved != stage:
            self.moves.append(Transition(stage, moved, date.fromordinal(day)))
            stage = moved
        self.stage = stage

    def at(self, until: int) -> tuple[StageInfo, list[Transition]]:
        """The stage on day ``until`` (no earlier than the last day walked) and every stage
        change up to it, oldest first."""
        moves = list(self.moves)
        stage, clock = self.stage, self.clock
        next_at: datetime | None = None
        if clock is not None:
            for boundary in clock.boundaries:
                moved = clock.stage_on(boundary)
                if moved == stage:
                    continue
                if boundary > until:
                    next_at = midnight(date.fromordinal(boundary))
                    break
                moves.append(Transition(stage, moved, date.fromordinal(boundary)))
                stage = moved
        since = moves[-1].at if moves else None
        return StageInfo(stage, since, next_at), moves


def walk(
    days: list[int],
    population_median_gap: float,
    settings: ScoringSettings,
    resume: Walk | None = None,
) -> Walk:
    """The walk over ``days`` (distinct ordinals, ascending). ``resume``, a walk over an
    earlier history of the same customer, is carried on in place when ``days`` only adds
    later days to it (a purchase arriving in order) and returned; otherwise the walk starts
    afresh and ``resume`` is left as it was."""
    if resume is not None and (
        resume.population_median_gap == population_median_gap
        and resume.settings is settings
        and len(resume.days) <= len(days)
        and days[: len(resume.days)] == resume.days
    ):
        w = resume
    else:
        w = Walk(population_median_gap, settings)
    for day in days[len(w.days) :]:
        w._step(day)
    return w


def _schedule(
    day: int,
    rhythm: float,
    base: Stage,
    reactivated_until: int | None,
    first: bool,
    s: ScoringSettings,
) -> _Clock:
    limits = thresholds(rhythm, first, s)
    churned_at = day + limits.churned_on
    boundaries = [churned_at]
    declining_at = None
    if limits.declining_on is not None:
        declining_at = day + limits.declining_on
        boundaries.append(declining_at)
    if reactivated_until is not None:
        if reactivated_until > day:
            boundaries.append(reactivated_until)
        else:
            reactivated_until = None
    boundaries.sort()
    return _Clock(day, base, declining_at, churned_at, reactivated_until, boundaries)
