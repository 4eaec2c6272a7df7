"""Schedules: when each kind fires, in the customer's zone, through DST changes."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.outreach.core.rules import Rule
from services.outreach.core.schedules import (
    CatchUp,
    local_instant,
    next_due,
    occurrence_key,
    zone_of,
)

PARIS, NEW_YORK = "Europe/Paris", "America/New_York"


def rule(**trigger: Any) -> Rule:
    return Rule.model_validate(
        {
            "id": "r",
            "name": "r",
            "trigger": {"type": "schedule", **trigger},
            "action": {"kind": "greeting", "channel": "webhook", "template": {"body": "hi"}},
        }
    )


def card(tz: str | None = PARIS, **value: Any) -> dict[str, Any]:
    birthday = value.pop("birthday", None)
    return {
        "customer_id": "c1",
        "profile": {"timezone": tz, "birthday": birthday},
        "value": {"first_order_at": None, "last_order_at": None, "purchase_interval_days": None}
        | value,
    }


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- local wall time to UTC ------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected"),
    [
        (PARIS, date(2025, 3, 29), time(9), utc(2025, 3, 29, 8)),  # CET, +01:00
        (PARIS, date(2025, 3, 30), time(9), utc(2025, 3, 30, 7)),  # spring forward: CEST
        (PARIS, date(2025, 3, 30), time(2, 30), utc(2025, 3, 30, 1)),  # in the gap: 03:00
        (PARIS, date(2025, 10, 26), time(2, 30), utc(2025, 10, 26, 0, 30)),  # first of two
        (PARIS, date(2025, 10, 26), time(9), utc(2025, 10, 26, 8)),  # fall back: CET
        (NEW_YORK, date(2025, 3, 9), time(9), utc(2025, 3, 9, 13)),  # EDT, -04:00
        (NEW_YORK, date(2025, 3, 9), time(2, 15), utc(2025, 3, 9, 7)),  # gap: 03:00 EDT
        (NEW_YORK, date(2025, 11, 2), time(1, 30), utc(2025, 11, 2, 5, 30)),  # first: EDT
        (NEW_YORK, date(2025, 11, 2), time(9), utc(2025, 11, 2, 14)),  # EST, -05:00
        ("Asia/Kolkata", date(2025, 6, 1), time(9), utc(2025, 6, 1, 3, 30)),
        ("Australia/Lord_Howe", date(2025, 10, 5), time(2, 10), utc(2025, 10, 4, 15, 30)),
    ],
)
def test_local_instant(zone: str, day: date, at: time, expected: datetime) -> None:
    assert local_instant(day, at, ZoneInfo(zone)) == expected


def test_zone_falls_back_to_the_default() -> None:
    assert zone_of(card(tz=None), "Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    assert zone_of(card(tz="Mars/Olympus"), "UTC") == ZoneInfo("UTC")
    assert zone_of({"customer_id": "x"}) == ZoneInfo("UTC")


# --- birthday and anniversary --------------------------------------------------------


def test_birthday_at_nine_local_on_the_dst_change_day() -> None:
    c = card(birthday="1990-03-30")
    due = next_due(rule(kind="birthday"), c, utc(2025, 1, 1))
    assert due == utc(2025, 3, 30, 7)  # 09:00 CEST on the last Sunday of March
    assert occurrence_key(rule(kind="birthday"), c, due) == "2025-03-30"
    assert next_due(rule(kind="birthday"), c, due) == utc(2026, 3, 30, 7)


def test_birthday_in_new_york_on_both_dst_days() -> None:
    spring = next_due(rule(kind="birthday"), card(NEW_YORK, birthday="1980-03-09"), utc(2025, 1, 1))
    assert spring == utc(2025, 3, 9, 13)
    early = rule(kind="birthday", at="01:30")
    autumn = next_due(early, card(NEW_YORK, birthday="1980-11-02"), utc(2025, 6, 1))
    assert autumn == utc(2025, 11, 2, 5, 30)  # the first 01:30, still EDT


def test_feb_29_birthdays_fire_on_feb_28_in_other_years() -> None:
    c = card(birthday="2000-02-29")
    r = rule(kind="birthday")
    assert next_due(r, c, utc(2025, 1, 1)) == utc(2025, 2, 28, 8)
    assert next_due(r, c, utc(2027, 3, 1)) == utc(2028, 2, 29, 8)  # a leap year again
    assert occurrence_key(r, c, utc(2025, 2, 28, 8)) == "2025-02-28"


def test_no_birthday_no_firing() -> None:
    assert next_due(rule(kind="birthday"), card(), utc(2025, 1, 1)) is None


def test_the_birthday_of_today_still_fires_if_its_time_is_ahead() -> None:
    c = card("Asia/Tokyo", birthday="1990-01-01")
    # 2024-12-31 23:00 UTC is already Jan 1, 08:00 in Tokyo: 09:00 is an hour away.
    due = next_due(rule(kind="birthday"), c, utc(2024, 12, 31, 23))
    assert due == utc(2025, 1, 1, 0)
    assert occurrence_key(rule(kind="birthday"), c, due) == "2025-01-01"


def test_a_customer_who_arrives_after_the_greeting_hour_is_greeted_the_same_day() -> None:
    c = card("Asia/Tokyo", birthday="1990-01-01")
    r = rule(kind="birthday")
    at_ten = utc(2025, 1, 1, 1)  # 10:00 in Tokyo on the birthday: 09:00 has passed
    assert next_due(r, c, at_ten) == utc(2026, 1, 1, 0)  # without catching up: a year away
    due = next_due(r, c, at_ten, catch_up=CatchUp())
    assert due == utc(2025, 1, 1, 0)  # due at once, keyed by the day: once
    assert occurrence_key(r, c, due) == "2025-01-01"
    # The next day is too late: the greeting was for the birthday.
    assert next_due(r, c, utc(2025, 1, 2, 1), catch_up=CatchUp()) == utc(2026, 1, 1, 0)


def test_days_after_catches_up_its_grace_and_a_saved_rule_its_catch_up_days() -> None:
    r = rule(kind="days_after", days=30, catch_up_days=20)
    c = card(tz=None, last_order_at="2025-01-01T10:00:00Z")  # due 2025-01-31 09:00
    assert next_due(r, c, utc(2025, 2, 2)) is None
    assert next_due(r, c, utc(2025, 2, 2), catch_up=CatchUp(2)) == utc(2025, 1, 31, 9)
    assert next_due(r, c, utc(2025, 2, 3), catch_up=CatchUp(2)) is None
    # Saved today, the rule reaches those overdue by at most its catch_up_days.
    saved = CatchUp(2, rule_catch_up=True)
    assert next_due(r, c, utc(2025, 2, 19), catch_up=saved) == utc(2025, 1, 31, 9)
    assert next_due(r, c, utc(2025, 2, 21), catch_up=saved) is None


def test_anniversary_of_the_first_order_in_local_time() -> None:
    # 23:30 UTC on Feb 29 is already March 1 in Paris.
    c = card(first_order_at="2020-02-29T23:30:00+00:00")
    r = rule(kind="anniversary")
    assert next_due(r, c, utc(2020, 3, 1)) == utc(2021, 3, 1, 8)  # not the order day itself
    assert next_due(r, c, utc(2025, 3, 1, 9)) == utc(2026, 3, 1, 8)
    assert next_due(r, card(), utc(2025, 1, 1)) is None


# --- days after --------------------------------------------------------------------------


def test_follow_up_seven_days_after_the_last_order() -> None:
    c = card(last_order_at="2025-03-23T21:30:00+00:00")  # 22:30 in Paris, March 23
    r = rule(kind="days_after", days=7)
    assert next_due(r, c, utc(2025, 3, 23, 22)) == utc(2025, 3, 30, 7)  # across the DST change
    assert next_due(r, c, utc(2025, 3, 30, 7)) is None  # one-off: already fired


def test_days_after_counts_from_the_local_date() -> None:
    # 23:30 UTC on May 1 is May 2 in Paris: seven days later is May 9.
    c = card(last_order_at="2025-05-01T23:30:00Z")
    assert next_due(rule(kind="days_after", days=7), c, utc(2025, 5, 2)) == utc(2025, 5, 9, 7)
    c_utc = card(tz=None, last_order_at="2025-05-01T23:30:00Z")
    assert next_due(rule(kind="days_after", days=7), c_utc, utc(2025, 5, 2)) == utc(2025, 5, 8, 9)


def test_recall_at_a_multiple_of_the_customers_rhythm() -> None:
    r = rule(kind="days_after", rhythm_multiple=1.5, at="10:00")
    c = card(NEW_YORK, last_order_at="2025-01-10T15:00:00Z", purchase_interval_days=20.0)
    assert next_due(r, c, utc(2025, 1, 10, 16)) == utc(2025, 2, 9, 15)  # 30 days later
    odd = card(NEW_YORK, last_order_at="2025-01-10T15:00:00Z", purchase_interval_days=13.0)
    assert next_due(r, odd, utc(2025, 1, 10, 16)) == utc(2025, 1, 30, 15)  # 19.5 -> 20 days
    no_rhythm = card(NEW_YORK, last_order_at="2025-01-10T15:00:00Z")
    assert next_due(r, no_rhythm, utc(2025, 1, 10, 16)) is None


def test_days_after_another_card_date() -> None:
    r = rule(kind="days_after", since="complaints.last_at", days=3)
    c = card() | {"complaints": {"last_at": "2025-06-01T12:00:00Z"}}
    assert next_due(r, c, utc(2025, 6, 1, 12)) == utc(2025, 6, 4, 7)


# --- calendar and cron -------------------------------------------------------------------


def test_calendar_recurring_dates_cross_the_year_end() -> None:
    r = rule(kind="calendar", name="holidays", dates=["12-25", "01-01"])
    c = card("Asia/Tokyo")
    assert next_due(r, c, utc(2025, 12, 1)) == utc(2025, 12, 25, 0)
    assert next_due(r, c, utc(2025, 12, 25, 0)) == utc(2026, 1, 1, 0)
    assert occurrence_key(r, c, utc(2026, 1, 1, 0)) == "2026-01-01"


def test_calendar_one_off_dates_and_leap_days() -> None:
    r = rule(kind="calendar", name="launch", dates=["2025-09-01"], at="10:00")
    assert next_due(r, card(), utc(2025, 1, 1)) == utc(2025, 9, 1, 8)
    assert next_due(r, card(), utc(2025, 9, 1, 8)) is None
    leap = rule(kind="calendar", name="leap", dates=["02-29"])
    assert next_due(leap, card(tz="UTC"), utc(2025, 1, 1)) == utc(2028, 2, 29, 9)


def test_cron_in_local_time() -> None:
    daily = rule(kind="cron", expression="0 10 * * *")
    assert next_due(daily, card("Asia/Tokyo"), utc(2025, 6, 1, 0)) == utc(2025, 6, 1, 1)
    assert next_due(daily, card("Asia/Tokyo"), utc(2025, 6, 1, 1)) == utc(2025, 6, 2, 1)
    mondays = rule(kind="cron", expression="0 9 * * 1")
    assert next_due(mondays, card(PARIS), utc(2025, 3, 26)) == utc(2025, 3, 31, 7)


def test_cron_inside_a_dst_gap_moves_forward_and_fires_once() -> None:
    r = rule(kind="cron", expression="30 2 * * *")
    c = card(NEW_YORK)
    due = next_due(r, c, utc(2025, 3, 8, 12))
    assert due == utc(2025, 3, 9, 7)  # 02:30 does not exist: 03:00 EDT
    assert next_due(r, c, due) == utc(2025, 3, 10, 6, 30)  # 02:30 EDT the next day


def test_cron_in_the_repeated_hour_fires_only_the_first_time() -> None:
    r = rule(kind="cron", expression="30 1 * * *")
    c = card(NEW_YORK)
    first = next_due(r, c, utc(2025, 11, 1, 12))
    assert first == utc(2025, 11, 2, 5, 30)  # 01:30 EDT
    assert next_due(r, c, first) == utc(2025, 11, 3, 6, 30)  # not 01:30 EST the same night


@given(
    zone=st.sampled_from([PARIS, NEW_YORK, "Australia/Sydney", "Asia/Kolkata", "UTC"]),
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1)),
    hour=st.integers(0, 23),
    minute=st.sampled_from([0, 15, 30, 45]),
)
def test_cron_fires_once_per_local_day(zone: str, start: datetime, hour: int, minute: int) -> None:
    r = rule(kind="cron", expression=f"{minute} {hour} * * *")
    c = card(zone)
    after = start.replace(tzinfo=UTC)
    keys = []
    for _ in range(4):
        due = next_due(r, c, after)
        assert due is not None and due > after
        keys.append(occurrence_key(r, c, due))
        after = due
    days = [date.fromisoformat(k) for k in keys]
    assert all(b - a == timedelta(days=1) for a, b in pairwise(days))


@given(
    zone=st.sampled_from([PARIS, NEW_YORK, "Pacific/Auckland", "America/Santiago", "UTC"]),
    born=st.dates(min_value=date(1950, 1, 1), max_value=date(2010, 12, 31)),
    start=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2030, 1, 1)),
)
def test_birthday_fires_on_the_local_birthday_at_nine(
    zone: str, born: date, start: datetime
) -> None:
    c = card(zone, birthday=born.isoformat())
    after = start.replace(tzinfo=UTC)
    due = next_due(rule(kind="birthday"), c, after)
    assert due is not None and after < due <= after + timedelta(days=367)
    local = due.astimezone(ZoneInfo(zone))
    day = 28 if (born.month, born.day) == (2, 29) and not calendar.isleap(local.year) else born.day
    assert (local.month, local.day, local.time()) == (born.month, day, time(9))
    assert occurrence_key(rule(kind="birthday"), c, due) == local.date().isoformat()


def test_not_a_schedule_and_naive_instants() -> None:
    stage = Rule.model_validate(
        {
            "id": "s",
            "name": "s",
            "trigger": {"type": "stage", "to": ["churned"]},
            "action": {"kind": "winback", "channel": "webhook", "template": {"body": "x"}},
        }
    )
    assert next_due(stage, card(), utc(2025, 1, 1)) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        next_due(rule(kind="birthday"), card(birthday="1990-01-01"), datetime(2025, 1, 1))
