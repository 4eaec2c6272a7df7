"""Calendar periods of the stats reports: quarters and years beside days, weeks and months."""

from __future__ import annotations

from datetime import date

import pytest

from services.scoring.core.periods import (
    Period,
    add_periods,
    boundaries,
    period_end,
    period_start,
    periods_between,
)


@pytest.mark.parametrize(
    ("day", "period", "start", "end"),
    [
        (date(2031, 5, 17), Period.DAY, date(2031, 5, 17), date(2031, 5, 17)),
        (date(2031, 5, 17), Period.WEEK, date(2031, 5, 12), date(2031, 5, 18)),  # Mon-Sun
        (date(2031, 5, 17), Period.MONTH, date(2031, 5, 1), date(2031, 5, 31)),
        (date(2031, 5, 17), Period.QUARTER, date(2031, 4, 1), date(2031, 6, 30)),
        (date(2031, 3, 31), Period.QUARTER, date(2031, 1, 1), date(2031, 3, 31)),
        (date(2031, 12, 1), Period.QUARTER, date(2031, 10, 1), date(2031, 12, 31)),
        (date(2032, 2, 29), Period.YEAR, date(2032, 1, 1), date(2032, 12, 31)),
    ],
)
def test_a_day_falls_in_the_period_the_calendar_says(
    day: date, period: Period, start: date, end: date
) -> None:
    assert period_start(day, period) == start
    assert period_end(start, period) == end


def test_quarters_and_years_step_across_year_ends() -> None:
    assert add_periods(date(2030, 10, 1), Period.QUARTER, 1) == date(2031, 1, 1)
    assert add_periods(date(2031, 1, 1), Period.QUARTER, -5) == date(2029, 10, 1)
    assert add_periods(date(2031, 1, 1), Period.YEAR, -11) == date(2020, 1, 1)
    assert periods_between(date(2030, 7, 1), date(2031, 4, 1), Period.QUARTER) == 4
    assert periods_between(date(2020, 1, 1), date(2031, 1, 1), Period.YEAR) == 12
    assert periods_between(date(2031, 1, 1), date(2031, 1, 1), Period.QUARTER) == 1
    assert boundaries(date(2030, 10, 1), 2, Period.QUARTER) == [
        date(2030, 10, 1),
        date(2031, 1, 1),
        date(2031, 4, 1),
    ]
    with pytest.raises(ValueError):
        add_periods(date(9999, 10, 1), Period.QUARTER, 1)
