"""A customer's timeline from their facts: every fact once, typed, newest first."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.scoring.core.state import CustomerState, apply
from services.scoring.core.timeline import timeline
from services.scoring.settings import ScoringSettings
from shared.events import Envelope

T0 = datetime(2030, 1, 1, tzinfo=UTC)
S = ScoringSettings()


def fold(*events: tuple[str, float, dict[str, Any]]) -> CustomerState:
    state: CustomerState | None = None
    for n, (event_type, days, data) in enumerate(events):
        at = T0 + timedelta(days=days)
        envelope = Envelope.model_validate(
            {
                "event_id": f"e-{n:02d}",
                "event_type": event_type,
                "customer_id": "c-1",
                "occurred_at": at,
                "received_at": at,
                "source": "test",
                "data": data,
            }
        )
        state, _ = apply(state, envelope, S)
    assert state is not None
    return state


def test_complaints_open_update_and_resolve_whatever_order_they_arrived_in() -> None:
    opened = ("complaint.opened", 1, {"complaint_id": "k", "status": "opened", "severity": "low"})
    again = ("complaint.opened", 2, {"complaint_id": "k", "status": "opened", "severity": "high"})
    done = ("complaint.resolved", 3, {"complaint_id": "k", "status": "resolved"})
    for events in ((opened, again, done), (done, again, opened)):
        entries = timeline(fold(*events), [])
        assert [(e.type, e.data.severity) for e in entries] == [  # type: ignore[union-attr]
            ("complaint.resolved", "medium"),
            ("complaint.updated", "high"),
            ("complaint.opened", "low"),
        ]


def test_a_profile_update_lists_the_fields_it_still_holds() -> None:
    state = fold(
        ("customer.updated", 1, {"name": "Ada", "email": "ada@example.com"}),
        ("customer.updated", 2, {"email": "ada@lovelace.example"}),
        ("customer.updated", 3, {"name": "Ada L."}),
    )
    entries = timeline(state, [])
    # The first update's fields were both overwritten since: it is gone.
    assert [(e.at.day, e.data.fields) for e in entries] == [  # type: ignore[union-attr]
        (4, ["name"]),
        (3, ["email"]),
    ]
    assert "ada@" not in str([e.model_dump() for e in entries])


def test_stage_moves_of_one_day_keep_their_order_and_sort_with_the_facts() -> None:
    state = fold(
        (
            "order.paid",
            10.5,
            {"order_id": "o", "status": "paid", "amount": "9.99", "currency": "EUR"},
        )
    )
    day = date(2030, 1, 11)
    moves = [("prospect", "new", day), ("new", "growing", day)]
    entries = timeline(state, moves)
    assert [e.type for e in entries] == ["order.paid", "stage.changed", "stage.changed"]
    assert [e.data.to_stage for e in entries[1:]] == ["growing", "new"]  # type: ignore[union-attr]
    assert str(entries[0].data.amount) == "9.99"  # type: ignore[union-attr]
    assert entries[1].at == datetime(2030, 1, 11, tzinfo=UTC)
