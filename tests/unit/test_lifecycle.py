"""Lifecycle stages: every transition, by purchases and by time alone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.core.lifecycle import StageInfo, Transition, day_of, midnight, walk
from services.scoring.settings import ScoringSettings
from shared.card import Stage

# The lifecycle from a list of purchase days, as the card builds it from the walk.


def stage_at(
    purchase_days: Sequence[date],
    as_of: datetime | date,
    population_median_gap: float,
    settings: ScoringSettings,
) -> StageInfo:
    """The stage at ``as_of`` from the purchase days up to it (in any order, repeats allowed).

    ``next_transition_at`` is the UTC midnight at which the stage would next change if no
    purchase happened, or None when time alone cannot move it (prospect, churned).
    """
    return stage_and_transitions(purchase_days, as_of, population_median_gap, settings)[0]


def transitions(
    purchase_days: Sequence[date],
    until: datetime | date,
    population_median_gap: float,
    settings: ScoringSettings,
) -> list[Transition]:
    """Every stage change from the first purchase up to ``until``, oldest first."""
    return stage_and_transitions(purchase_days, until, population_median_gap, settings)[1]


def stage_and_transitions(
    purchase_days: Sequence[date],
    as_of: datetime | date,
    population_median_gap: float,
    settings: ScoringSettings,
) -> tuple[StageInfo, list[Transition]]:
    """:func:`stage_at` and :func:`transitions` from one walk over the purchase days."""
    until = day_of(as_of).toordinal()
    days = sorted({o for o in map(date.toordinal, purchase_days) if o <= until})
    return walk(days, population_median_gap, settings).at(until)


S = ScoringSettings()
POP_GAP = 30.0  # population median gap: decline after 60 silent days, churn after 120
D0 = date(2024, 1, 1)


def d(n: int) -> date:
    return D0 + timedelta(days=n)


def at(
    days: list[int], as_of: int, pop_gap: float = POP_GAP, settings: ScoringSettings = S
) -> StageInfo:
    return stage_at([d(n) for n in days], d(as_of), pop_gap, settings)


def history(days: list[int], until: int, pop_gap: float = POP_GAP) -> list[tuple[str, str, int]]:
    return [
        (t.from_stage.value, t.to_stage.value, (t.at - D0).days)
        for t in transitions([d(n) for n in days], d(until), pop_gap, S)
    ]


def test_prospect_has_no_stage_date_and_nothing_to_wait_for() -> None:
    assert at([], 100) == StageInfo(Stage.PROSPECT, None, None)
    # A purchase after as_of does not exist yet.
    assert at([101], 100).stage is Stage.PROSPECT


def test_first_purchase_is_new_until_declining() -> None:
    assert at([0], 0) == StageInfo(Stage.NEW, d(0), midnight(d(61)))
    assert at([0], 60).stage is Stage.NEW
    assert at([0], 61) == StageInfo(Stage.DECLINING, d(61), midnight(d(121)))


def test_new_lasts_at_least_new_days_even_with_a_short_population_rhythm() -> None:
    # Population rhythm 5 days would make a one-time buyer declining after 10 days.
    assert at([0], 29, pop_gap=5).stage is Stage.NEW
    # After it they are past the decline line; churn waits for the 90-day floor.
    assert at([0], 30, pop_gap=5) == StageInfo(Stage.DECLINING, d(30), midnight(d(91)))
    assert history([0], 100, pop_gap=5) == [
        ("prospect", "new", 0),
        ("new", "declining", 30),
        ("declining", "churned", 91),
    ]


def test_repeat_buyer_is_growing() -> None:
    assert at([0, 20], 25) == StageInfo(Stage.GROWING, d(20), midnight(d(81)))


def test_population_rhythm_until_three_purchase_days() -> None:
    # Two purchase days 5 apart: the customer's own gap is not trusted yet, the population's
    # 30 days is: declining after 60 silent days, not 10.
    assert at([0, 5], 5).next_transition_at == midnight(d(66))
    assert at([0, 5], 20).stage is Stage.GROWING
    # A third purchase day gives them their own rhythm of 5 days: declining after 10.
    assert at([0, 5, 10], 10).next_transition_at == midnight(d(21))
    assert at([0, 5, 10], 21).stage is Stage.DECLINING


def test_same_day_purchases_are_one_purchase_day_and_order_does_not_matter() -> None:
    assert at([10, 0, 10, 20, 0], 25) == at([0, 10, 20], 25)


def test_four_purchases_on_rhythm_are_mature() -> None:
    info = at([0, 10, 20, 30], 35)
    assert info == StageInfo(Stage.MATURE, d(30), midnight(d(51)))
    assert history([0, 10, 20, 30], 35) == [
        ("prospect", "new", 0),
        ("new", "growing", 10),
        ("growing", "mature", 30),
    ]


def test_off_rhythm_purchase_is_not_mature() -> None:
    # Gaps 10, 10, 18: rhythm 10, and 18 > 1.5 x 10.
    assert at([0, 10, 20, 38], 40).stage is Stage.GROWING
    # Back on rhythm at the next purchase.
    assert at([0, 10, 20, 38, 48], 50).stage is Stage.MATURE


def test_declining_after_twice_the_rhythm_then_churned_after_four_times() -> None:
    days = [0, 40, 80, 120]  # rhythm 40: declining after 80 silent days, churned after 160
    assert at(days, 200).stage is Stage.MATURE
    assert at(days, 201) == StageInfo(Stage.DECLINING, d(201), midnight(d(281)))
    assert at(days, 280).stage is Stage.DECLINING
    assert at(days, 281) == StageInfo(Stage.CHURNED, d(281), None)
    assert history(days, 400)[-2:] == [
        ("mature", "declining", 201),
        ("declining", "churned", 281),
    ]


def test_a_weekly_buyer_who_pauses_five_weeks_is_declining_not_churned() -> None:
    days = [0, 7, 14, 21, 28]  # rhythm 7: four rhythms would be 28 days
    assert at(days, 28 + 35) == StageInfo(Stage.DECLINING, d(43), midnight(d(28 + 91)))
    # Nobody is churned before the churn floor (90 silent days), whatever their rhythm.
    assert at(days, 28 + 90).stage is Stage.DECLINING
    assert at(days, 28 + 91).stage is Stage.CHURNED
    # Buying again after the pause is a reactivation from declining, not from churned.
    assert history([*days, 28 + 40], 28 + 40)[-1] == ("declining", "reactivated", 68)


def test_the_churn_floor_is_a_setting() -> None:
    days = [0, 7, 14, 21, 28]
    quick = ScoringSettings(churn_min_days=20)
    assert at(days, 28 + 29, settings=quick).stage is Stage.CHURNED


def test_churned_after_365_days_when_four_rhythms_is_longer() -> None:
    days = [0, 100, 200]  # rhythm 100: declining after 200 days, 4x = 400 > 365
    assert at(days, 400, pop_gap=100) == StageInfo(Stage.GROWING, d(100), midnight(d(401)))
    assert at(days, 401, pop_gap=100) == StageInfo(Stage.DECLINING, d(401), midnight(d(566)))
    assert at(days, 565, pop_gap=100).stage is Stage.DECLINING
    assert at(days, 566, pop_gap=100) == StageInfo(Stage.CHURNED, d(566), None)


def test_rhythm_so_long_that_the_cap_comes_first_skips_declining() -> None:
    days = [0, 200, 400]  # rhythm 200: 2x = 400 silent days is past the 365 cap
    assert at(days, 500, pop_gap=200) == StageInfo(Stage.GROWING, d(200), midnight(d(766)))
    assert history(days, 800, pop_gap=200)[-1] == ("growing", "churned", 766)


def test_purchase_while_declining_or_churned_is_a_reactivation() -> None:
    # Declining from day 81 (20 + 61); buying on day 90 reactivates.
    assert at([0, 20, 90], 90) == StageInfo(Stage.REACTIVATED, d(90), midnight(d(120)))
    # Churned from day 141; buying on day 200 reactivates too.
    assert at([0, 20, 200], 200).stage is Stage.REACTIVATED
    assert history([0, 20, 200], 200)[-3:] == [
        ("growing", "declining", 81),
        ("declining", "churned", 141),
        ("churned", "reactivated", 200),
    ]


def test_gap_exactly_at_the_decline_line_is_not_a_reactivation() -> None:
    # 60 silent days is not "more than 2 x 30": the purchase on day 80 finds them growing.
    assert at([0, 20, 80], 80).stage is Stage.GROWING
    assert at([0, 20, 81], 81).stage is Stage.REACTIVATED


def test_reactivated_holds_thirty_days_then_the_usual_rules() -> None:
    days = [0, 20, 90]
    assert at(days, 119).stage is Stage.REACTIVATED
    # Three purchase days (gaps 20 and 70: rhythm 45), so the decline line is 90 + 91.
    assert at(days, 120) == StageInfo(Stage.GROWING, d(120), midnight(d(181)))


def test_purchases_during_reactivation_keep_it_until_it_expires() -> None:
    days = [0, 20, 90, 95, 100]
    assert at(days, 100) == StageInfo(Stage.REACTIVATED, d(90), midnight(d(120)))
    # Four purchase days, the latest 5 days after the one before (rhythm 12.5): mature.
    assert at(days, 120) == StageInfo(Stage.MATURE, d(120), midnight(d(126)))


def test_reactivation_expires_into_the_stage_the_silence_has_reached() -> None:
    # Own rhythm 5 days; reactivated on day 100, silent since: 2 x 5 = 10 days is long past at
    # the expiry on day 130, so the usual rules say declining, and churned at the floor.
    days = [0, 5, 10, 15, 100]
    assert at(days, 129).stage is Stage.REACTIVATED
    assert at(days, 130) == StageInfo(Stage.DECLINING, d(130), midnight(d(191)))
    assert history(days, 200)[-3:] == [
        ("declining", "reactivated", 100),
        ("reactivated", "declining", 130),
        ("declining", "churned", 191),
    ]


def test_datetime_as_of_is_read_as_its_utc_day() -> None:
    late_evening_in_la = datetime(2024, 3, 1, 23, 0, tzinfo=UTC) - timedelta(hours=8)
    assert stage_at([d(0)], late_evening_in_la, POP_GAP, S) == stage_at(
        [d(0)], date(2024, 3, 1), POP_GAP, S
    )


def test_transitions_end_where_stage_at_stands() -> None:
    days = [0, 10, 20, 30, 200, 205]
    log = transitions([d(n) for n in days], d(400), POP_GAP, S)
    assert log[0] == Transition(Stage.PROSPECT, Stage.NEW, d(0))
    assert all(a.to_stage == b.from_stage for a, b in pairwise(log))
    assert log[-1].to_stage is at(days, 400).stage
    assert log[-1].at == at(days, 400).since


@settings(max_examples=300, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 900), max_size=12),
    as_of=st.integers(0, 1000),
    pop_gap=st.floats(1.0, 200.0),
)
def test_next_transition_is_exactly_when_the_stage_moves(
    offsets: list[int], as_of: int, pop_gap: float
) -> None:
    days = [d(n) for n in offsets]
    info = stage_at(days, d(as_of), pop_gap, S)
    log = transitions(days, d(as_of), pop_gap, S)
    assert info.stage is (log[-1].to_stage if log else Stage.PROSPECT)
    assert info.since == (log[-1].at if log else None)
    if info.next_transition_at is None:
        assert info.stage in (Stage.PROSPECT, Stage.CHURNED)
        return
    moves_on = info.next_transition_at.date()
    assert moves_on > d(as_of)
    # Only time passes (no purchase in between): the stage holds until that day, then moves.
    if not any(as_of < n <= (moves_on - D0).days for n in offsets):
        assert stage_at(days, moves_on - timedelta(days=1), pop_gap, S).stage is info.stage
        assert stage_at(days, moves_on, pop_gap, S).stage is not info.stage
