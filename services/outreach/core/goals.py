"""What a rule is for: its conversion goal, and the baseline a card predicts for it.

Every rule has a goal (``rule.goal``, completed by :func:`goal_of` for its kind): an event of
``event`` type whose ``data`` passes ``filters``, within ``within_days`` after the customer was
touched (the message sent, or for the control arm the instant it would have been). ``count``
says how an order counts: ``first`` (the conversion is the first goal event in the window, its
value the revenue) or ``every`` (every goal event in the window adds its value).

The goal is copied onto each ledger row when the action is decided, so attribution is a pure
function of the events and the ledger: editing a rule never rewrites what past actions were
measured against.

The baseline without a control group is the model's own forecast: the card carries the
probability of at least one order within 7, 30 and 90 days (``prediction.p_order``);
:func:`predicted_probability` reads it for any window.

The events a goal can be reached by are kept beside the ledger (``outreach.goal_events``) as
:func:`goal_event_of` projects them: every event type but the erasure, with its ``data``
stripped of what no goal may name (free text, item lists, contact details: see
:data:`NOT_KEPT`), and an order event's own ``amount`` as its revenue. A goal's ``filters``
may therefore name only the fields kept (:func:`filter_schema`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from services.outreach.core import conditions
from services.outreach.core.trust import trusted
from shared.events import Envelope, EventType

ORDER = EventType.ORDER_PLACED
ORDER_EVENTS = frozenset(
    {
        EventType.ORDER_PLACED,
        EventType.ORDER_PAID,
        EventType.ORDER_REFUNDED,
        EventType.ORDER_CANCELLED,
    }
)

# The fields of an event's data that goal_events do not keep, whatever the event type: free
# text and item lists (heavy, and nothing a goal needs to count) and contact details (a
# profile update's name, email, phone, birthday and free attributes). A goal cannot filter on
# them.
NOT_KEPT = frozenset({"text", "items", "name", "email", "phone", "birthday", "attributes"})

# The window an order answers each kind in, by default (days).
DEFAULT_GOAL_DAYS: dict[str, int] = {
    "greeting": 30,
    "follow_up": 30,
    "recall": 30,
    "winback": 60,
    "care": 60,
    "apology": 60,
    "announcement": 14,
}

# The windows the card forecasts (``prediction.p_order``'s keys are these, as strings).
FORECAST_DAYS = (7, 30, 90)


class Goal(BaseModel):
    """A rule's conversion goal (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: EventType = ORDER
    filters: dict[str, Any] | None = None
    # None: the default window of the rule's kind (DEFAULT_GOAL_DAYS).
    within_days: int | None = Field(None, ge=1, le=365)
    count: Literal["first", "every"] = "first"

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        event = info.data.get("event")
        if v is not None and event is not None and not trusted(info):
            errors = conditions.validate(v, filter_schema(event))
            if errors:
                raise PydanticCustomError(
                    "invalid_filters", "{detail}", {"detail": "; ".join(errors)}
                )
        return v


def goal_of(kind: str, goal: Goal | None) -> Goal:
    """The goal a rule of ``kind`` measures, every field filled: its own, else an order
    within the kind's window, counted once."""
    goal = goal or Goal()
    if goal.within_days is None:
        goal = goal.model_copy(update={"within_days": DEFAULT_GOAL_DAYS.get(kind, 30)})
    return goal


def predicted_probability(card: Mapping[str, Any], days: int) -> float | None:
    """The card's forecast probability of at least one order within ``days`` days: the
    forecast itself for 7, 30 and 90 days, linear between them (0 at 0 days), and beyond 90
    days the 90-day chance of silence compounded (``1 - (1 - p90) ** (days / 90)``). None when
    the card has no forecast (no purchase yet, or the population not fitted)."""
    prediction = card.get("prediction") or {}
    forecast = prediction.get("p_order") or {}
    points = [(0, 0.0)]
    for d in FORECAST_DAYS:
        p = forecast.get(str(d))
        if p is None:
            return None
        points.append((d, float(p)))
    if days >= FORECAST_DAYS[-1]:
        p90 = points[-1][1]
        return 1 - (1 - p90) ** (days / FORECAST_DAYS[-1]) if p90 < 1 else 1.0
    for (d0, p0), (d1, p1) in itertools.pairwise(points):
        if d0 <= days <= d1:
            return p0 + (p1 - p0) * (days - d0) / (d1 - d0)
    return math.nan  # unreachable: days is within 0..90 here


@functools.cache
def filter_schema(event: EventType) -> conditions.Schema:
    """The fields a goal's ``filters`` may name for ``event``: its data's, less
    :data:`NOT_KEPT` (the goal events do not keep them)."""
    full = conditions.event_schema(event)
    kept = {
        path: spec for path, spec in full.fields.items() if path.split(".", 1)[0] not in NOT_KEPT
    }
    return conditions.Schema(full.name, kept)


@dataclass(frozen=True, slots=True)
class GoalEvent:
    """An event as ``outreach.goal_events`` keeps it (see the module docstring)."""

    event_id: str
    customer_id: str
    event_type: str
    occurred_at: datetime
    revenue: Decimal | None
    data: dict[str, Any]


def goal_event_of(customer_id: str, event: Envelope) -> GoalEvent | None:
    """The goal event ``event`` (of the customer whose change carried it) is kept as; None
    for an erasure (nothing of it is kept) and a merge (nobody did anything: records of one
    person were found)."""
    if event.event_type in (EventType.CUSTOMER_ERASED, EventType.CUSTOMER_MERGED):
        return None
    data = event.data.model_dump(mode="json")
    kept = {k: v for k, v in data.items() if k not in NOT_KEPT}
    revenue = getattr(event.data, "amount", None) if event.event_type in ORDER_EVENTS else None
    return GoalEvent(
        event_id=event.event_id,
        customer_id=customer_id,
        event_type=event.event_type.value,
        occurred_at=event.occurred_at,
        revenue=revenue,
        data=kept,
    )
