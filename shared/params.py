"""Query-parameter types every API shares: instants and dates in ISO 8601 only."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator


def _no_bare_numbers(value: Any) -> Any:
    # pydantic reads a number as a Unix timestamp; an API documenting ISO 8601 should not.
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("use an ISO 8601 date or date-time, not a number")
    return value


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_no_bare_numbers)]
IsoDate = Annotated[date, BeforeValidator(_no_bare_numbers)]
