"""Query-parameter types every API shares: instants and dates in ISO 8601 only."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator


def _no_bare_numbers(value: Any) -> Any:
    # pydantic reads a number as a Unix timestamp; an API documenting ISO 8601 should not.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("use an ISO 8601 date or date-time, not a number")
    return value


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _within_utc_years(value: datetime) -> datetime:
    # 0001-01-01T00:00+14:00 is a valid ISO instant whose UTC time lies in year 0: the
    # database driver cannot send it (an OverflowError, once a 500). As a bound it means
    # "before everything", so it is read as the earliest instant (the latest likewise).
    try:
        value.astimezone(UTC)
    except OverflowError:
        return _EARLIEST if value.year == 1 else _LATEST
    return value


IsoDateTime = Annotated[
    AwareDatetime, BeforeValidator(_no_bare_numbers), AfterValidator(_within_utc_years)
]
IsoDate = Annotated[date, BeforeValidator(_no_bare_numbers)]
