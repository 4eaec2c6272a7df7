"""The query-parameter types every API shares."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.params import IsoDateTime

_instant: TypeAdapter[datetime] = TypeAdapter(IsoDateTime)


@pytest.mark.parametrize(
    ("given", "read"),
    [
        # Valid ISO instants whose UTC time lies in year 0 or year 10000: the database driver
        # cannot send them (once a 500 from the audit log and the actions list).
        ("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00+00:00"),
        ("9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59.999999+00:00"),
        ("2030-06-01T09:00:00+02:00", "2030-06-01T09:00:00+02:00"),
    ],
)
def test_an_instant_is_always_one_the_database_can_store(given: str, read: str) -> None:
    value = _instant.validate_python(given)
    assert value.isoformat() == read
    value.astimezone(UTC)


def test_a_bare_number_is_not_an_instant() -> None:
    with pytest.raises(ValidationError):
        _instant.validate_python("1700000000")
