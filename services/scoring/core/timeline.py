"""A customer's timeline: every fact scoring holds on them, as dated, typed entries.

:func:`timeline` is a pure function of the customer's facts (:class:`CustomerState`) and their
stage moves; nothing is stored for it. What the facts keep is what it shows:

- every order event (placed, paid, refunded, cancelled) with its amount;
- every complaint event: the first opening, later openings (``complaint.updated``: a new
  severity or category), the resolution;
- visits kept one by one (the last ``visit_retention_days``); older ones survive only as a
  count, which the answer gives beside the entries;
- profile updates as the winning write of each field: a write since overwritten is gone, so
  an update appears with the fields it still holds, and not at all once all were overwritten.
  Field names only, never their values;
- stage moves, dated at the UTC midnight they happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.scoring.core.lifecycle import midnight
from services.scoring.core.state import (
    CANCELLED,
    OPENED,
    REFUNDED,
    CustomerState,
    from_micros,
)
from shared.card import Money, Stage


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str = Field(description="stable within the customer: with `at`, the timeline's order")
    at: datetime = Field(description="when it happened (the event's own time)")


class OrderData(BaseModel):
    order_id: str
    amount: Money | None = Field(description="the order's total")
    outstanding: Money | None = Field(description="still owed on it")


class OrderEntry(_Entry):
    """An order placed or paid."""

    type: Literal["order.placed", "order.paid"]
    data: OrderData


class RefundData(BaseModel):
    order_id: str
    amount: Money | None = Field(description="the amount refunded")


class RefundEntry(_Entry):
    type: Literal["order.refunded"]
    data: RefundData


class CancellationData(BaseModel):
    order_id: str


class CancellationEntry(_Entry):
    type: Literal["order.cancelled"]
    data: CancellationData


class ComplaintData(BaseModel):
    complaint_id: str
    severity: str | None = Field(description="low, medium or high; null if never recorded")
    category: str | None


class ComplaintEntry(_Entry):
    """``complaint.updated``: opened again (a new severity or category) while known."""

    type: Literal["complaint.opened", "complaint.updated", "complaint.resolved"]
    data: ComplaintData


class VisitData(BaseModel):
    visit_id: str


class VisitEntry(_Entry):
    type: Literal["visit.recorded"]
    data: VisitData


class ProfileData(BaseModel):
    fields: list[str] = Field(
        description="the profile fields this update still holds the latest value of "
        "(`email`, `consent.sms`, `consent.unsubscribed`, ...); never the values"
    )


class ProfileEntry(_Entry):
    type: Literal["profile.updated"]
    data: ProfileData


class StageData(BaseModel):
    from_stage: Stage | None
    to_stage: Stage


class StageEntry(_Entry):
    type: Literal["stage.changed"]
    data: StageData


Entry = Annotated[
    OrderEntry
    | RefundEntry
    | CancellationEntry
    | ComplaintEntry
    | VisitEntry
    | ProfileEntry
    | StageEntry,
    Field(discriminator="type"),
]
EntryType = Literal[
    "order.placed",
    "order.paid",
    "order.refunded",
    "order.cancelled",
    "complaint.opened",
    "complaint.updated",
    "complaint.resolved",
    "visit.recorded",
    "profile.updated",
    "stage.changed",
]

StageMove = tuple[str | None, str, date]  # from, to, the UTC day


def timeline(state: CustomerState, moves: Iterable[StageMove]) -> list[Entry]:
    """Every entry of the customer's timeline, newest first (by time, then id)."""
    out: list[Entry] = []
    for order_id, order_events in state.orders.items():
        for event_id, e in order_events.items():
            at, key = from_micros(e.at), f"order/{order_id}/{event_id}"
            if e.kind == CANCELLED:
                out.append(
                    CancellationEntry(
                        id=key,
                        at=at,
                        type="order.cancelled",
                        data=CancellationData(order_id=order_id),
                    )
                )
            elif e.kind == REFUNDED:
                out.append(
                    RefundEntry(
                        id=key,
                        at=at,
                        type="order.refunded",
                        data=RefundData(order_id=order_id, amount=e.amount),
                    )
                )
            else:
                out.append(
                    OrderEntry(
                        id=key,
                        at=at,
                        type="order.paid" if e.kind == "paid" else "order.placed",
                        data=OrderData(
                            order_id=order_id, amount=e.amount, outstanding=e.outstanding
                        ),
                    )
                )
    for complaint_id, complaint_events in state.complaints.items():
        opened = False
        for event_id, c in sorted(complaint_events.items(), key=lambda kv: (kv[1].at, kv[0])):
            if c.status == OPENED:
                kind: Literal["complaint.opened", "complaint.updated", "complaint.resolved"] = (
                    "complaint.updated" if opened else "complaint.opened"
                )
                opened = True
            else:
                kind = "complaint.resolved"
            out.append(
                ComplaintEntry(
                    id=f"complaint/{complaint_id}/{event_id}",
                    at=from_micros(c.at),
                    type=kind,
                    data=ComplaintData(
                        complaint_id=complaint_id, severity=c.severity, category=c.category
                    ),
                )
            )
    for visit_id, at_us in state.visits.items():
        out.append(
            VisitEntry(
                id=f"visit/{visit_id}",
                at=from_micros(at_us),
                type="visit.recorded",
                data=VisitData(visit_id=visit_id),
            )
        )
    updates: dict[str, tuple[int, list[str]]] = {}
    for name, entry in state.profile.items():
        updates.setdefault(entry.event_id, (entry.at, []))[1].append(name)
    for event_id, (at_us, names) in updates.items():
        out.append(
            ProfileEntry(
                id=f"profile/{event_id}",
                at=from_micros(at_us),
                type="profile.updated",
                data=ProfileData(fields=sorted(names)),
            )
        )
    for n, (was, now, day) in enumerate(moves):
        out.append(
            StageEntry(
                # Stage moves of one day keep their order: the later, the greater.
                id=f"stage/{day.isoformat()}/{n:06d}",
                at=midnight(day),
                type="stage.changed",
                data=StageData(from_stage=Stage(was) if was else None, to_stage=Stage(now)),
            )
        )
    out.sort(key=lambda entry: (entry.at, entry.id), reverse=True)
    return out
