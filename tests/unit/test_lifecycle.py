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


def history(
    days: list[int], until: int, pop_gap: float = POP_GAP, settings: ScoringSettings = S
) -> list[tuple[str, str, int]]:
    return [
        (t.from_stage.value, t.to_stage.value, (t.at - D0).days)
        for t in transitions([d(n) for n in days], d(until), pop_gap, settings)
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
    # Population rhythm 5 days would make a one-time buyer declining after 10 days; the
    # decline floor (more than 30 silent days) already holds them past the 30 new days.
    assert at([0], 30, pop_gap=5).stage is Stage.NEW
    assert at([0], 31, pop_gap=5) == StageInfo(Stage.DECLINING, d(31), midnight(d(91)))
    # A longer new_days holds them longer still; churn waits for the 90-day floor.
    long_new = ScoringSettings(new_days=45)
    assert at([0], 44, pop_gap=5, settings=long_new).stage is Stage.NEW
    assert history([0], 100, pop_gap=5, settings=long_new) == [
        ("prospect", "new", 0),
        ("new", "declining", 45),
        ("declining", "churned", 91),
    ]


def test_repeat_buyer_is_growing() -> None:
    assert at([0, 20], 25) == StageInfo(Stage.GROWING, d(20), midnight(d(81)))


def test_population_rhythm_until_three_purchase_days() -> None:
    # Two purchase days 5 apart: the customer's own gap is not trusted yet, the population's
    # 30 days is: declining after 60 silent days, not 10.
    assert at([0, 5], 5).next_transition_at == midnight(d(66))
    assert at([0, 5], 20).stage is Stage.GROWING
    # A third purchase day gives them their own rhythm of 5 days: 2 x 5 is under the decline
    # floor, so declining after 30 silent days (the population's rhythm would say 60).
    assert at([0, 5, 10], 10).next_transition_at == midnight(d(41))
    assert at([0, 5, 10], 41).stage is Stage.DECLINING


def test_same_day_purchases_are_one_purchase_day_and_order_does_not_matter() -> None:
    assert at([10, 0, 10, 20, 0], 25) == at([0, 10, 20], 25)


def test_four_purchases_on_rhythm_are_mature() -> None:
    info = at([0, 10, 20, 30], 35)
    assert info == StageInfo(Stage.MATURE, d(30), midnight(d(61)))
    assert history([0, 10, 20, 30], 35) == [
        ("prospect", "new", 0),
        ("new", "growing", 10),
        ("growing", "mature", 30),
    ]


def test_off_rhythm_purchase_is_not_mature() -> None:
    # Gaps 20, 20, 36: rhythm 20, and 36 > 1.5 x 20 (and more than the 30-day decline floor).
    assert at([0, 20, 40, 76], 80).stage is Stage.GROWING
    # Back on rhythm at the next purchase.
    assert at([0, 20, 40, 76, 96], 100).stage is Stage.MATURE


def test_a_nine_day_buyer_who_pauses_three_weeks_keeps_their_stage() -> None:
    # Own rhythm 9 days: 2 x 9 = 18 silent days used to make them declining, and the next
    # order reactivated; a three-week pause is no lapse (the decline floor is 30 days).
    days = [0, 9, 18, 27, 36]
    assert at(days, 36 + 21) == StageInfo(Stage.MATURE, d(27), midnight(d(36 + 31)))
    # The order that ends the pause keeps them mature (a gap too short to be declining is not
    # off rhythm either), and the year of such a rhythm has no stage move at all.
    assert at([*days, 36 + 21], 36 + 21).stage is Stage.MATURE
    year = [0, 9, 18, 27, 36, 57, 66, 75, 84, 105, 114, 123, 144, 153, 162, 171, 192, 201]
    assert year[-1] - year[0] < 365 and max(b - a for a, b in pairwise(year)) == 21
    assert history(year, 210) == [
        ("prospect", "new", 0),
        ("new", "growing", 9),
        ("growing", "mature", 27),
    ]


def test_the_decline_floor_is_a_setting() -> None:
    days = [0, 9, 18, 27, 36]
    eager = ScoringSettings(decline_min_days=10)
    assert at(days, 36 + 18, settings=eager).stage is Stage.MATURE
    assert at(days, 36 + 19, settings=eager).stage is Stage.DECLINING


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
    # Declining after more than 30 silent days (the floor: two rhythms would be 14).
    assert at(days, 28 + 35) == StageInfo(Stage.DECLINING, d(28 + 31), midnight(d(28 + 91)))
    # Nobody is churned before the churn floor (90 silent days), whatever their rhythm.
    assert at(days, 28 + 90).stage is Stage.DECLINING
    assert at(days, 28 + 91).stage is Stage.CHURNED
    # Buying again after the pause ends the slip: they were declining, never lost, so they
    # are back to the stage the purchase gives them (the 40-day gap is off rhythm: growing).
    assert history([*days, 28 + 40], 28 + 40)[-2:] == [
        ("mature", "declining", 59),
        ("declining", "growing", 68),
    ]


def test_the_churn_floor_is_a_setting() -> None:
    days = [0, 7, 14, 21, 28]
    quick = ScoringSettings(churn_min_days=20, decline_min_days=5, churn_after_decline_min_days=5)
    assert at(days, 28 + 28, settings=quick).stage is Stage.DECLINING
    assert at(days, 28 + 29, settings=quick).stage is Stage.CHURNED


def test_churn_never_follows_declining_by_less_than_the_margin() -> None:
    days = [0, 7, 14, 21, 28]
    # A churn floor of 40 days would leave a 9-day declining spell after the 30-day decline
    # floor; churn waits until 30 days after declining began instead.
    low_floor = ScoringSettings(churn_min_days=40)
    assert history(days, 28 + 100, settings=low_floor)[-2:] == [
        ("mature", "declining", 28 + 31),
        ("declining", "churned", 28 + 61),
    ]


def test_a_declining_spell_the_cap_would_cut_short_is_skipped() -> None:
    days = [0, 170, 340]  # rhythm 170: declining after 340 days would last 25 days to the cap
    assert at(days, 340 + 365, pop_gap=170).stage is Stage.GROWING
    assert history(days, 340 + 400, pop_gap=170)[-1] == ("growing", "churned", 340 + 366)


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


def test_purchase_while_declining_returns_to_the_stage_before_it() -> None:
    # Declining from day 81 (20 + 61); buying on day 90 makes them growing again, as the
    # purchase rules say for a repeat buyer: not reactivated, they were never lost.
    assert at([0, 20, 90], 90) == StageInfo(Stage.GROWING, d(90), midnight(d(181)))
    assert history([0, 20, 90], 90)[-2:] == [
        ("growing", "declining", 81),
        ("declining", "growing", 90),
    ]
    # A mature customer back on rhythm is mature again.
    days = [0, 20, 40, 60, 121, 141]
    assert history(days, 141)[-3:] == [
        ("mature", "declining", 101),
        ("declining", "growing", 121),
        ("growing", "mature", 141),
    ]


def test_purchase_after_churn_is_a_reactivation() -> None:
    # Churned from day 141; buying on day 200 wins them back.
    assert at([0, 20, 200], 200) == StageInfo(Stage.REACTIVATED, d(200), midnight(d(230)))
    assert history([0, 20, 200], 200)[-3:] == [
        ("growing", "declining", 81),
        ("declining", "churned", 141),
        ("churned", "reactivated", 200),
    ]


def test_gap_exactly_at_the_decline_line_finds_them_in_their_stage() -> None:
    # 60 silent days is not "more than 2 x 30": the purchase on day 80 finds them growing.
    assert history([0, 20, 80], 80)[-1] == ("new", "growing", 20)
    # One day later they had slipped into declining at that midnight; the purchase ends it.
    assert history([0, 20, 81], 81)[-2:] == [
        ("growing", "declining", 81),
        ("declining", "growing", 81),
    ]
    # Likewise at the churn line: 120 silent days is not churned, 121 is.
    assert at([0, 20, 140], 140).stage is Stage.GROWING
    assert at([0, 20, 141], 141).stage is Stage.REACTIVATED


def test_reactivated_holds_thirty_days_then_the_usual_rules() -> None:
    days = [0, 20, 200]
    assert at(days, 229).stage is Stage.REACTIVATED
    # Three purchase days (gaps 20 and 180: rhythm 100), so the decline line is 200 + 201.
    assert at(days, 230) == StageInfo(Stage.GROWING, d(230), midnight(d(401)))


def test_purchases_during_reactivation_keep_it_until_it_expires() -> None:
    days = [0, 20, 200, 205, 210]
    assert at(days, 210) == StageInfo(Stage.REACTIVATED, d(200), midnight(d(230)))
    # Four purchase days, the latest 5 days after the one before (rhythm 12.5): mature, and
    # declining after the 30-day floor from the last purchase.
    assert at(days, 230) == StageInfo(Stage.MATURE, d(230), midnight(d(241)))


def test_reactivation_expires_into_the_stage_the_silence_has_reached() -> None:
    # Own rhythm 5 days; churned on day 106 (15 + 91), reactivated on day 120 for 45 days
    # (a setting): silent since, past the 30-day decline floor at the expiry on day 165, so
    # the usual rules say declining, and churned 90 days after the purchase.
    long_welcome = ScoringSettings(reactivated_days=45)
    days = [0, 5, 10, 15, 120]
    assert at(days, 164, settings=long_welcome).stage is Stage.REACTIVATED
    assert at(days, 165, settings=long_welcome) == StageInfo(
        Stage.DECLINING, d(165), midnight(d(211))
    )
    assert history(days, 250, settings=long_welcome)[-4:] == [
        ("declining", "churned", 106),
        ("churned", "reactivated", 120),
        ("reactivated", "declining", 165),
        ("declining", "churned", 211),
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


# The defaults, and floors low enough that the rhythm alone decides (and the cap cuts in).
SETTINGS = (
    S,
    ScoringSettings(decline_min_days=1, churn_after_decline_min_days=1, churn_min_days=20),
    ScoringSettings(churn_max_days=120, churn_after_decline_min_days=45),
)


@settings(max_examples=300, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 900), max_size=12),
    as_of=st.integers(0, 1000),
    pop_gap=st.floats(1.0, 200.0),
    chosen=st.sampled_from(SETTINGS),
)
def test_next_transition_is_exactly_when_the_stage_moves(
    offsets: list[int], as_of: int, pop_gap: float, chosen: ScoringSettings
) -> None:
    days = [d(n) for n in offsets]
    info = stage_at(days, d(as_of), pop_gap, chosen)
    log = transitions(days, d(as_of), pop_gap, chosen)
    assert info.stage is (log[-1].to_stage if log else Stage.PROSPECT)
    assert info.since == (log[-1].at if log else None)
    if info.next_transition_at is None:
        assert info.stage in (Stage.PROSPECT, Stage.CHURNED)
        return
    moves_on = info.next_transition_at.date()
    assert moves_on > d(as_of)
    # Only time passes (no purchase in between): the stage holds until that day, then moves.
    if not any(as_of < n <= (moves_on - D0).days for n in offsets):
        assert stage_at(days, moves_on - timedelta(days=1), pop_gap, chosen).stage is info.stage
        assert stage_at(days, moves_on, pop_gap, chosen).stage is not info.stage


@settings(max_examples=300, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 900), max_size=12),
    pop_gap=st.floats(1.0, 200.0),
    chosen=st.sampled_from(SETTINGS),
)
def test_only_the_churned_are_reactivated_and_no_declining_spell_is_cut_short(
    offsets: list[int], pop_gap: float, chosen: ScoringSettings
) -> None:
    log = transitions([d(n) for n in offsets], d(1300), pop_gap, chosen)
    for before, move in pairwise(log):
        if move.to_stage is Stage.REACTIVATED:
            assert move.from_stage is Stage.CHURNED
        if before.to_stage is Stage.DECLINING and move.to_stage is Stage.CHURNED:
            assert (move.at - before.at).days >= chosen.churn_after_decline_min_days
    assert all(
        t.from_stage is not Stage.DECLINING
        or t.to_stage in (Stage.CHURNED, Stage.GROWING, Stage.MATURE)
        for t in log
    )
