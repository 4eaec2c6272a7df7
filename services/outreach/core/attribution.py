"""Attribution: which touch each goal event is owed to, and what each touch converted.

A *touch* is a ledger row that reached the customer or stood for it: a message ``sent``
(touched at ``sent_at``) or a ``control`` row held out (touched when it would have gone out:
``not_before``, else when it was decided). Each carries the goal it is measured against, as
the rule had it when deciding.

**Last touch wins.** Among the touches given, a goal event is owed to the most recent one
strictly before it whose goal names its event type, whose filters its data passes and whose
window (``within_days`` after the touch) still covers it; to no touch when none does. Then,
per touch: with ``count: first`` the touch converted once, worth the revenue of its first
goal event; with ``every`` each of its goal events is a conversion and adds its revenue. The
outcomes report gives it one group's touches at a time
(:func:`services.outreach.core.outcomes.attribute_by_group`), so touches compete only with
the others of the group they are measured in.

**Orders are orders as scoring counts them.** For a goal on ``order.placed`` (the default),
an order is reached by its first ``order.placed`` or ``order.paid`` event, at the earlier of
the two; its revenue is its total (the later of the two amounts) less every refund of it
known so far; a cancelled order, or one refunded in full, is no order at all and converts
nothing. A goal naming ``order.paid``, ``order.refunded`` or ``order.cancelled`` counts those
events themselves, each worth its own amount. Other events are worth no revenue.

A pure function of the touches and the goal events: it reads nothing else, so delivering every
change again (or rebuilding outreach from the change stream) reaches the same figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from services.outreach.core import conditions
from services.outreach.core.goals import Goal, GoalEvent, filter_schema
from shared.events import EventType

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Touch:
    """A ledger row that touched the customer (see the module docstring)."""

    id: str
    customer_id: str
    at: datetime
    goal: Goal


@dataclass(slots=True)
class Converted:
    """What one touch converted: how many goal events (``count: every``) or 1 (``first``),
    and the revenue they brought."""

    conversions: int = 0
    revenue: Decimal = ZERO
    event_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reached:
    """Something a goal can be reached by: an order (as scoring counts it) or a raw event."""

    id: str
    event_type: str
    at: datetime
    revenue: Decimal
    data: Mapping[str, Any]


def orders_of(events: Iterable[GoalEvent]) -> list[Reached]:
    """The customer's orders as scoring counts them (see the module docstring)."""
    placed: dict[str, list[GoalEvent]] = {}
    refunded: dict[str, Decimal] = {}
    cancelled: set[str] = set()
    for e in events:
        order_id = str(e.data.get("order_id", ""))
        if e.event_type in (EventType.ORDER_PLACED, EventType.ORDER_PAID):
            placed.setdefault(order_id, []).append(e)
        elif e.event_type == EventType.ORDER_REFUNDED:
            refunded[order_id] = refunded.get(order_id, ZERO) + (e.revenue or ZERO)
        elif e.event_type == EventType.ORDER_CANCELLED:
            cancelled.add(order_id)
    out = []
    for order_id, seen in placed.items():
        if order_id in cancelled:
            continue
        first = min(seen, key=lambda e: (e.occurred_at, e.event_id))
        # Placed and paid at one instant: the payment is the later word (as in scoring).
        latest = max(
            seen,
            key=lambda e: (e.occurred_at, e.event_type == EventType.ORDER_PAID, e.event_id),
        )
        total = latest.revenue or ZERO
        given_back = refunded.get(order_id, ZERO)
        if total > 0 and given_back >= total:
            continue
        out.append(
            Reached(
                first.event_id,
                EventType.ORDER_PLACED,
                first.occurred_at,
                total - given_back,
                latest.data,
            )
        )
    return out


def _reachable(events: Sequence[GoalEvent]) -> list[Reached]:
    """Orders (for ``order.placed`` goals) and every other event as itself."""
    out = orders_of(events)
    for e in events:
        if e.event_type == EventType.ORDER_PLACED:
            continue
        revenue = e.revenue if e.revenue is not None else ZERO
        out.append(Reached(e.event_id, e.event_type, e.occurred_at, revenue, e.data))
    out.sort(key=lambda r: (r.at, r.id))
    return out


class _Filters:
    """Goal filters compiled once per distinct (event, filters)."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[str, str], conditions.Predicate] = {}

    def passes(self, goal: Goal, data: Mapping[str, Any]) -> bool:
        if goal.filters is None:
            return True
        key = (goal.event.value, json.dumps(goal.filters, sort_keys=True))
        predicate = self._compiled.get(key)
        if predicate is None:
            try:
                predicate = conditions.compile_expr(goal.filters, filter_schema(goal.event))
            except conditions.ConditionError:
                # A goal recorded under older rules that no longer compiles reaches nothing.
                predicate = _never
            self._compiled[key] = predicate
        return predicate(data)


def _never(_: Mapping[str, Any]) -> bool:
    return False


def attribute(
    touches: Sequence[Touch], events: Mapping[str, Sequence[GoalEvent]]
) -> dict[str, Converted]:
    """What each touch converted, by touch id (every touch has an entry, most with nothing):
    ``events`` are the goal events by customer. See the module docstring for the rules."""
    return attribute_reached(touches, reachable_by_customer(events))


def reachable_by_customer(events: Mapping[str, Sequence[GoalEvent]]) -> dict[str, list[Reached]]:
    """What each customer's goals can be reached by, in time order, from their goal events:
    worked out once for attributing several sets of touches (one per group of a report)."""
    return {customer_id: _reachable(theirs) for customer_id, theirs in events.items()}


def attribute_reached(
    touches: Sequence[Touch], reachable: Mapping[str, Sequence[Reached]]
) -> dict[str, Converted]:
    """:func:`attribute`, given what each customer's goals can be reached by
    (:func:`reachable_by_customer`)."""
    out = {t.id: Converted() for t in touches}
    by_customer: dict[str, list[Touch]] = {}
    for t in touches:
        by_customer.setdefault(t.customer_id, []).append(t)
    filters = _Filters()
    for customer_id, theirs in by_customer.items():
        # Most recent first: the first touch that may claim an event is the one that does.
        theirs.sort(key=lambda t: (t.at, t.id), reverse=True)
        for reached in reachable.get(customer_id, ()):
            for t in theirs:
                if t.at >= reached.at:
                    continue
                goal = t.goal
                if goal.event != reached.event_type:
                    continue
                if reached.at > t.at + timedelta(days=goal.within_days or 30):
                    continue
                if not filters.passes(goal, reached.data):
                    continue
                _credit(out[t.id], goal, reached)
                break
    return out


def _credit(converted: Converted, goal: Goal, reached: Reached) -> None:
    if goal.count == "first" and converted.conversions:
        converted.event_ids.append(reached.id)  # owed to this touch, but counted already
        return
    converted.conversions += 1
    converted.revenue += reached.revenue
    converted.event_ids.append(reached.id)
