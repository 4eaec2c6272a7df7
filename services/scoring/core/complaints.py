"""Complaints measured: what each complaint is, whether it is open, and when it falls due.

A complaint is the set of its status events (:class:`ComplaintEvent`). It was raised at its
earliest event; it is open while its latest event is ``opened`` (so it can be reopened), and
otherwise resolved at that latest event. Its severity and category are those of its
latest ``opened`` event (a resolution's own severity counts only when no opening is known).

Each complaint is held to the response-time target of a tier
(:meth:`ScoringSettings.complaint_target_hours`): the tier recorded for it in the state
(:meth:`CustomerState.hold_complaints`), or the card's tier while none is. It is overdue while
open past ``opened_at + target``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.scoring.core.state import RESOLVED, CustomerState, from_micros
from services.scoring.settings import ScoringSettings
from shared.card import OPEN_COMPLAINTS_LISTED

HOUR_US = 3_600_000_000
_FOREVER = 2**62


@dataclass(frozen=True, slots=True)
class Complaint:
    """One complaint as its events up to a moment make it."""

    complaint_id: str
    severity: str | None
    category: str | None
    opened_at: int  # micros: its earliest event
    resolved_at: int | None  # micros: its latest event, when that is a resolution
    tier: str | None  # the tier it is held to
    due_at: int  # micros: opened_at + the tier's target

    @property
    def open(self) -> bool:
        return self.resolved_at is None


def complaints_of(
    state: CustomerState,
    as_of: int | None,
    card_tier: str | None,
    settings: ScoringSettings,
) -> list[Complaint]:
    """Every complaint raised up to ``as_of`` (micros; None: every event known), oldest first
    (by when raised, then id)."""
    limit = _FOREVER if as_of is None else as_of
    out: list[Complaint] = []
    for complaint_id, events in state.complaints.items():
        seen = [(e.at, e.status == RESOLVED, eid, e) for eid, e in events.items() if e.at <= limit]
        if not seen:
            continue
        latest = max(seen)
        # The label: the latest opening that carries one, else any event that does.
        labelled = [(not resolved, at, eid, e) for at, resolved, eid, e in seen if e.severity]
        label = max(labelled)[3] if labelled else None
        tier = state.complaint_tiers.get(complaint_id, card_tier)  # a recorded None stays None
        opened = min(seen)[0]
        hours = settings.complaint_target_hours(tier)
        out.append(
            Complaint(
                complaint_id=complaint_id,
                severity=label.severity if label else None,
                category=label.category if label else None,
                opened_at=opened,
                resolved_at=latest[0] if latest[1] else None,
                tier=tier,
                due_at=opened + round(hours * HOUR_US),
            )
        )
    out.sort(key=lambda c: (c.opened_at, c.complaint_id))
    return out


def empty_section() -> dict[str, Any]:
    """The card's ``complaints`` section of a customer who never complained."""
    return {
        "open": 0,
        "total": 0,
        "last_at": None,
        "open_by_severity": {"low": 0, "medium": 0, "high": 0},
        "overdue": 0,
        "open_items": [],
    }


def card_section(
    state: CustomerState, as_of: int, card_tier: str | None, settings: ScoringSettings
) -> dict[str, Any]:
    """The card's ``complaints`` section at ``as_of`` (a :class:`shared.card.Complaints`)."""
    raised = complaints_of(state, as_of, card_tier, settings)
    open_ = [c for c in raised if c.open]
    by_severity = {"low": 0, "medium": 0, "high": 0}
    for c in open_:
        if c.severity in by_severity:
            by_severity[c.severity] += 1
    return {
        "open": len(open_),
        "total": len(raised),
        "last_at": from_micros(max(c.opened_at for c in raised)) if raised else None,
        "open_by_severity": by_severity,
        "overdue": sum(1 for c in open_ if c.due_at < as_of),
        "open_items": [
            {
                "complaint_id": c.complaint_id,
                "severity": c.severity,
                "category": c.category,
                "opened_at": from_micros(c.opened_at),
                "due_at": from_micros(c.due_at),
            }
            for c in open_[:OPEN_COMPLAINTS_LISTED]
        ],
    }
