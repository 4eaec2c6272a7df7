"""Customers found to be one person, folded into the survivor: a pure function of their facts.

A customer's facts are sets and registers (:mod:`services.scoring.core.state`), so folding
another customer in is the same union an event makes: every order, refund, cancellation,
complaint and visit of either is the survivor's (each keyed by its own id, so a fact both
hold counts once); the profile takes the newest value per field; consent takes the most
restrictive answer per channel (a "no" from either record is a "no", and an unsubscribe on
either stands), with the newer of the two writes' times, so a later answer of the person
still wins. The fold is idempotent: folding the same facts again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.scoring.core.state import UNSUBSCRIBED, CustomerState, ProfileEntry

_CONSENT = "consent."


def fold(
    survivor_id: str,
    survivor: CustomerState | None,
    merged: Iterable[CustomerState],
    visit_retention_us: int,
) -> CustomerState:
    """The survivor's facts with every merged customer's folded in (a new state: the ones
    given are left as they are). ``visit_retention_us``: how long visits are kept one by one
    behind the latest (older ones become the count, as :func:`apply` keeps them)."""
    out = survivor.copy() if survivor is not None else CustomerState(survivor_id)
    for other in merged:
        _fold_one(out, other)
    _age_visits(out, visit_retention_us)
    return out


def _fold_one(out: CustomerState, other: CustomerState) -> None:
    if other.last_event_at is not None and (
        out.last_event_at is None or other.last_event_at > out.last_event_at
    ):
        out.last_event_at = other.last_event_at
    for order_id, events in other.orders.items():
        out.orders.setdefault(order_id, {}).update(events)
    for complaint_id, complaint_events in other.complaints.items():
        out.complaints.setdefault(complaint_id, {}).update(complaint_events)
    for complaint_id, tier in other.complaint_tiers.items():
        out.complaint_tiers.setdefault(complaint_id, tier)
    for visit_id, at in other.visits.items():
        known = out.visits.get(visit_id)
        out.visits[visit_id] = at if known is None else min(known, at)
    out.visits_older += other.visits_older
    if other.visits_older_last_at is not None and (
        out.visits_older_last_at is None or other.visits_older_last_at > out.visits_older_last_at
    ):
        out.visits_older_last_at = other.visits_older_last_at
    for name, entry in other.profile.items():
        mine = out.profile.get(name)
        out.profile[name] = entry if mine is None else _profile_fold(name, mine, entry)
    out.profile_card = None
    out.walk = None


def _profile_fold(name: str, mine: ProfileEntry, theirs: ProfileEntry) -> ProfileEntry:
    newer, older = (
        (mine, theirs)
        if (mine.at, mine.event_id) >= (theirs.at, theirs.event_id)
        else (
            theirs,
            mine,
        )
    )
    if name == UNSUBSCRIBED:
        # Unsubscribed on either record: the newest unsubscribe stands.
        if newer.value is None and older.value is not None:
            return ProfileEntry(newer.at, newer.event_id, older.value)
        return newer
    if name.startswith(_CONSENT):
        return ProfileEntry(newer.at, newer.event_id, bool(newer.value) and bool(older.value))
    return newer


def _age_visits(state: CustomerState, retention_us: int) -> None:
    # Visits further behind the latest than the retention survive only as a count.
    latest = max(state.visits.values(), default=None)
    if latest is None:
        return
    horizon = latest - retention_us
    for visit_id in [v for v, at in state.visits.items() if at < horizon]:
        at = state.visits.pop(visit_id)
        state.visits_older += 1
        if state.visits_older_last_at is None or at > state.visits_older_last_at:
            state.visits_older_last_at = at
