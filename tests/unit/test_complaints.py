"""Complaints on the card: severity and category kept, open ones listed with the instant they
fall due by the tier they are held to, and states written before these existed still read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.scoring.core.card import Population, build_card
from services.scoring.core.complaints import complaints_of
from services.scoring.core.state import CustomerState, apply, to_micros
from services.scoring.settings import ScoringSettings
from shared.card import OPEN_COMPLAINTS_LISTED, Card
from shared.events import Envelope

T0 = datetime(2030, 6, 14, 12, tzinfo=UTC)
SETTINGS = ScoringSettings()


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def complaint(n: int, status: str, at: datetime, complaint_id: str, **data: Any) -> Envelope:
    return Envelope.model_validate(
        {
            "event_id": f"e-{n}",
            "event_type": f"complaint.{status}",
            "customer_id": "c-1",
            "occurred_at": at,
            "received_at": at,
            "source": "test",
            "data": {"complaint_id": complaint_id, "status": status, **data},
        }
    )


def fold(*events: Envelope) -> CustomerState:
    state: CustomerState | None = None
    for event in events:
        state, _ = apply(state, event, SETTINGS)
    assert state is not None
    return state


def card(state: CustomerState, at: datetime) -> Card:
    return build_card(state, at, Population(), SETTINGS)


def test_the_card_shows_severity_category_and_due_instant_of_open_complaints() -> None:
    state = fold(
        complaint(1, "opened", hours(-5), "k-high", severity="high", category="delivery"),
        complaint(2, "opened", hours(-3), "k-low", severity="low", category="billing"),
        complaint(3, "opened", hours(-2), "k-done", severity="high", category="quality"),
        complaint(4, "resolved", hours(-1), "k-done"),
    )
    state.hold_complaints("key")
    complaints = card(state, T0).complaints
    assert (complaints.open, complaints.total) == (2, 3)
    assert complaints.open_by_severity.model_dump() == {"low": 1, "medium": 0, "high": 1}
    # Held to key's 4 hours: the complaint raised 5 hours ago is overdue, the other not yet.
    assert complaints.overdue == 1
    assert [i.model_dump() for i in complaints.open_items] == [
        {
            "complaint_id": "k-high",
            "severity": "high",
            "category": "delivery",
            "opened_at": hours(-5),
            "due_at": hours(-1),
        },
        {
            "complaint_id": "k-low",
            "severity": "low",
            "category": "billing",
            "opened_at": hours(-3),
            "due_at": hours(1),
        },
    ]


@pytest.mark.parametrize(("tier", "target"), [("key", 4), ("regular", 24), ("low", 72), (None, 24)])
def test_a_complaint_is_held_to_the_tier_it_was_raised_under(tier: str | None, target: int) -> None:
    state = fold(complaint(1, "opened", T0, "k", severity="medium"))
    state.hold_complaints(tier)
    # A later tier does not move the target.
    state.hold_complaints("low" if tier == "key" else "key")
    [item] = card(state, T0).complaints.open_items
    assert item.due_at == hours(target)
    assert orjson.loads(state.to_json())["complaint_tiers"] == {"k": tier}
    assert CustomerState.from_json(state.to_json()) == state


def test_without_a_recorded_tier_the_cards_tier_sets_the_target() -> None:
    state = fold(complaint(1, "opened", T0, "k"))
    [c] = complaints_of(state, None, "low", SETTINGS)
    assert (c.tier, c.due_at) == ("low", to_micros(hours(72)))
    # The contract's default severity when the sender gave none.
    assert c.severity == "medium"


def test_targets_are_settings() -> None:
    custom = ScoringSettings(complaint_target_hours_key=1.5, complaint_target_hours_low=100)
    assert [custom.complaint_target_hours(t) for t in ("key", "regular", "low", None)] == [
        1.5,
        24.0,
        100.0,
        24.0,
    ]


@pytest.mark.parametrize("reverse", [False, True])
def test_the_opening_labels_the_complaint_and_a_reopening_opens_it_again(reverse: bool) -> None:
    events = [
        complaint(1, "opened", hours(0), "k", severity="low", category="delivery"),
        complaint(2, "resolved", hours(2), "k", severity="medium"),
        complaint(3, "opened", hours(5), "k", severity="high", category="refund"),
    ]
    state = fold(*(events[::-1] if reverse else events))
    [c] = complaints_of(state, to_micros(hours(3)), None, SETTINGS)
    assert (c.severity, c.category, c.resolved_at) == ("low", "delivery", to_micros(hours(2)))
    [c] = complaints_of(state, None, None, SETTINGS)
    # Reopened: open again, labelled by its latest opening, still raised at its first event.
    assert (c.severity, c.category, c.resolved_at) == ("high", "refund", None)
    assert c.opened_at == to_micros(hours(0))


def test_open_complaints_listed_are_the_oldest_and_capped() -> None:
    n = OPEN_COMPLAINTS_LISTED + 5
    state = fold(
        *(complaint(i, "opened", hours(-i), f"k-{i:02d}", severity="low") for i in range(n))
    )
    complaints = card(state, T0).complaints
    assert complaints.open == n and complaints.open_by_severity.low == n
    listed = [i.complaint_id for i in complaints.open_items]
    assert listed == [f"k-{i:02d}" for i in range(n - 1, n - 1 - OPEN_COMPLAINTS_LISTED, -1)]


def test_a_state_written_before_severities_were_kept_still_reads() -> None:
    at = to_micros(hours(-30))
    old = {
        "v": 1,
        "customer_id": "c-1",
        "last_event_at": at,
        "orders": {},
        "complaints": {"k-1": {"e-1": ["opened", at]}},
        "visits": {"recent": {}, "older": 0, "older_last_at": None},
        "profile": {},
    }
    state = CustomerState.from_json(orjson.dumps(old))
    complaints = card(state, T0).complaints
    assert (complaints.open, complaints.overdue) == (1, 1)  # regular's 24 hours passed
    [item] = complaints.open_items
    assert (item.severity, item.category) == (None, None)
    assert complaints.open_by_severity.model_dump() == {"low": 0, "medium": 0, "high": 0}
    # Written back unchanged until something new is learnt.
    assert orjson.loads(state.to_json()) == old
