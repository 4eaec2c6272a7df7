"""Outreach's delivery settings: read from the environment, bounded where a wrong value
would make delivery misbehave."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.outreach.settings import OutreachSettings


def test_the_throttled_give_up_age_is_a_day_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEND_OUTREACH_DELIVERY_THROTTLED_GIVE_UP_HOURS", raising=False)
    assert OutreachSettings().delivery_throttled_give_up_hours == 24
    monkeypatch.setenv("TEND_OUTREACH_DELIVERY_THROTTLED_GIVE_UP_HOURS", "1.5")
    assert OutreachSettings().delivery_throttled_give_up_hours == 1.5


@pytest.mark.parametrize("hours", [0, -1, 721])
def test_a_throttled_give_up_age_out_of_bounds_is_refused(hours: float) -> None:
    with pytest.raises(ValidationError) as refused:
        OutreachSettings(delivery_throttled_give_up_hours=hours)
    assert refused.value.errors()[0]["loc"] == ("delivery_throttled_give_up_hours",)
    assert (
        OutreachSettings(delivery_throttled_give_up_hours=720).delivery_throttled_give_up_hours
        == 720
    )
