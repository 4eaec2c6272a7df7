"""Tags from behaviour: what a rule's ``tag`` action changes on a customer, as the event
scoring learns it from (``customer.tagged``, through the events outbox).

A tag action is not a contact: it has no message, no channel, no cap, no consent and no
place in the contact history or the outcomes. It tells scoring only what would change the
card: a tag the card's ``rule_tags`` already hold is not added again, one they lack is not
removed. The change a tag makes comes back to outreach like every change, so a rule could
fire on its own tagging; three guards keep that from looping:

- nothing is published when the card already says what the action would say (a rule that
  adds the tag it is conditioned on, or fires again on the change its tag made, is idle);
- a rule never fires a tag action on a change its own tag action caused;
- a chain of tag changes each caused by the one before stops at :data:`MAX_DEPTH`, so two
  rules undoing each other's tags stop too.

The event's id comes from (rule, customer, occurrence, the card's ``as_of``), so a replayed
change is one event downstream; a repeat with another card says the same thing again, which
scoring's per-tag registers absorb.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from services.outreach.core.rules import Match
from shared.changes import Change
from shared.events import Envelope, EventType, TagData

SOURCE = "outreach"
MAX_DEPTH = 3
_NAMESPACE = uuid.UUID("0b8f7c55-4c1e-4f37-a6f2-1d3e9b7a2c60")


class Cause(NamedTuple):
    """What a change says about tag chains: the rule whose tag action made it (None when
    it is not a tag change) and how deep in a chain it is."""

    rule_id: str | None = None
    depth: int = -1


NO_CAUSE = Cause()


def cause_of(change: Change) -> Cause:
    """The tag chain ``change`` belongs to: a ``customer.tagged`` change's rule and depth."""
    event = change.event
    if event is not None and isinstance(event.data, TagData):
        return Cause(event.data.rule_id, event.data.depth)
    return NO_CAUSE


def may_fire(match: Match, cause: Cause) -> bool:
    """Whether ``match``'s tag action may act on a change of ``cause``: never on the change
    its own rule's tagging made, never past :data:`MAX_DEPTH`."""
    return match.rule.id != cause.rule_id and cause.depth + 1 < MAX_DEPTH


def tag_event(
    match: Match, card: Mapping[str, Any], now: datetime, cause: Cause = NO_CAUSE
) -> Envelope | None:
    """The ``customer.tagged`` event of ``match``'s tag action on ``card`` at ``now``, or None
    when the card's rule tags already say it (see the module docstring)."""
    change = match.rule.action.tags
    if change is None:
        return None
    held = set(card.get("rule_tags") or ())
    add = [t for t in dict.fromkeys(change.add) if t not in held]
    remove = [t for t in dict.fromkeys(change.remove) if t in held]
    if not add and not remove:
        return None
    # The card's instant too: a stage rule matches on every change of its episode, and a tag
    # taken off and set again in one episode is a new fact, not a repeat of the first.
    name = f"{match.rule.id}:{match.customer_id}:{match.occurrence}:{card.get('as_of')}"
    return Envelope(
        event_id=str(uuid.uuid5(_NAMESPACE, name)),
        event_type=EventType.CUSTOMER_TAGGED,
        customer_id=match.customer_id,
        occurred_at=now,
        received_at=now,
        source=SOURCE,
        data=TagData(add=add, remove=remove, rule_id=match.rule.id, depth=cause.depth + 1),
    )
