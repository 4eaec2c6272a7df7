"""Attribution: the last touch before a goal event, within its window, takes it; an order
counts as scoring counts it (refunds netted, a cancellation undoing it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from services.outreach.core.attribution import Touch, attribute
from services.outreach.core.goals import Goal, GoalEvent, goal_event_of
from shared.events import Envelope

T0 = datetime(2026, 6, 1, tzinfo=UTC)
ORDER_30 = Goal(within_days=30)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def order(eid: str, days: float, amount: str, status: str = "placed", oid: str = "") -> GoalEvent:
    data: dict[str, Any] = {"order_id": oid or eid, "status": status, "amount": amount}
    return GoalEvent(eid, "c", f"order.{status}", at(days), Decimal(amount), data)


def touch(tid: str, days: float, goal: Goal = ORDER_30) -> Touch:
    return Touch(tid, "c", at(days), goal)


def test_the_most_recent_touch_within_its_window_takes_the_order() -> None:
    got = attribute([touch("early", 0), touch("late", 5)], {"c": [order("o1", 6, "40.00")]})
    assert (got["late"].conversions, got["late"].revenue) == (1, Decimal("40.00"))
    assert got["early"].conversions == 0


def test_an_order_outside_every_window_or_before_the_touch_is_nobody_s() -> None:
    got = attribute([touch("t", 10)], {"c": [order("before", 9, "10"), order("after", 41, "10")]})
    assert got["t"].conversions == 0


def test_a_touch_whose_goal_the_event_does_not_match_leaves_it_to_an_older_one() -> None:
    visit_goal = Goal(event="visit.recorded", within_days=30)
    got = attribute(
        [touch("order-goal", 0), touch("visit-goal", 5, visit_goal)],
        {"c": [order("o1", 6, "25.00")]},
    )
    assert got["order-goal"].revenue == Decimal("25.00")
    assert got["visit-goal"].conversions == 0


def test_first_counts_once_every_counts_each_order() -> None:
    events = {"c": [order("o1", 1, "10.00"), order("o2", 2, "15.00")]}
    first = attribute([touch("t", 0)], events)["t"]
    every = attribute([touch("t", 0, Goal(within_days=30, count="every"))], events)["t"]
    assert (first.conversions, first.revenue) == (1, Decimal("10.00"))
    assert (every.conversions, every.revenue) == (2, Decimal("25.00"))


def test_refunds_net_an_order_and_a_cancellation_or_full_refund_undoes_it() -> None:
    events = {
        "c": [
            order("o1", 1, "100.00"),
            order("o1-paid", 1.5, "90.00", "paid", oid="o1"),
            order("r1", 3, "30.00", "refunded", oid="o1"),
            order("o2", 2, "50.00"),
            order("x2", 2.5, "50.00", "cancelled", oid="o2"),
            order("o3", 4, "20.00"),
            order("r3", 5, "20.00", "refunded", oid="o3"),
        ]
    }
    every = attribute([touch("t", 0, Goal(within_days=30, count="every"))], events)["t"]
    assert (every.conversions, every.revenue) == (1, Decimal("60.00"))


def test_filters_on_the_event_data_choose_the_events_that_count() -> None:
    big = Goal(within_days=30, filters={"gte": ["amount", 50]})
    got = attribute([touch("t", 0, big)], {"c": [order("o1", 1, "20"), order("o2", 2, "80")]})
    assert got["t"].event_ids == ["o2"] and got["t"].revenue == Decimal("80")


def test_a_goal_cannot_filter_on_what_goal_events_do_not_keep() -> None:
    with pytest.raises(ValidationError, match="text"):
        Goal(event="complaint.resolved", filters={"eq": ["text", "sorry"]})


def test_a_goal_event_keeps_no_contact_details_or_free_text() -> None:
    event = Envelope.model_validate(
        {
            "event_id": "e1",
            "event_type": "customer.updated",
            "customer_id": "c",
            "occurred_at": T0,
            "received_at": T0,
            "source": "test",
            "data": {"name": "Ada", "email": "ada@example.com", "tags": ["vip"]},
        }
    )
    kept = goal_event_of("c", event)
    assert kept is not None and kept.data == {"tags": ["vip"]} and kept.revenue is None
