"""Calendar periods of the stats reports: days, weeks (Monday to Sunday), months, quarters
(January, April, July, October) and years, in UTC days. Pure arithmetic on dates."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum


class Period(StrEnum):
    """The buckets of the flow report (PostgreSQL ``date_trunc`` units; weeks start Monday)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


_MONTHS = {Period.MONTH: 1, Period.QUARTER: 3, Period.YEAR: 12}


def period_start(day: date, period: Period) -> date:
    """The first day of the period containing ``day`` (as PostgreSQL's ``date_trunc``)."""
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - timedelta(days=day.weekday())
    step = _MONTHS[period]
    return date(day.year, (day.month - 1) // step * step + 1, 1)


def add_periods(start: date, period: Period, n: int) -> date:
    """The start of the period ``n`` periods after the one starting on ``start`` (raises
    ``ValueError`` or ``OverflowError`` past Python's years 1 to 9999)."""
    if period is Period.DAY:
        return start + timedelta(days=n)
    if period is Period.WEEK:
        return start + timedelta(weeks=n)
    months = start.year * 12 + start.month - 1 + n * _MONTHS[period]
    return date(months // 12, months % 12 + 1, 1)


def period_end(start: date, period: Period) -> date:
    """The last day of the period starting on ``start``."""
    return add_periods(start, period, 1) - timedelta(days=1)


def periods_between(first: date, last: date, period: Period) -> int:
    """How many periods from the one starting on ``first`` to the one starting on ``last``."""
    if period in _MONTHS:
        months = (last.year - first.year) * 12 + last.month - first.month
        return months // _MONTHS[period] + 1
    days = (last - first).days
    return (days // 7 if period is Period.WEEK else days) + 1


def boundaries(first: date, count: int, period: Period) -> list[date]:
    """The starts of ``count`` periods from the one starting on ``first``, and the day after
    the last of them: ``count + 1`` instants (each a UTC midnight) that bound the periods."""
    return [add_periods(first, period, n) for n in range(count + 1)]
