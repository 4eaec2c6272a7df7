"""Scoring's changes, built in one place: one function per cause, each returning what the
outbox takes, the customer id and the :class:`shared.changes.Change` as JSON bytes.

Change ids are derived from what caused the change (:func:`shared.changes.change_id_for`), so
replaying the same history yields the same ids and outreach can drop repeats:

- ``event``: the event id;
- ``time``: the customer, the stage reached and the day it was reached (and, for a
  membership tier time lowered, the tier and the day of the sweep);
- ``refresh``: the customer and the moment of the refresh;
- ``erasure``: the erasure event's id.

The triggering event and the card are already JSON; they are embedded as they are rather
than parsed and written again.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from services.scoring.core.card import Scored
from shared.changes import Cause, change_id_for
from shared.events import Envelope

# (customer id, change payload), as the outbox takes them.
Outgoing = tuple[str, bytes]


def event_change(
    envelope: Envelope, raw: bytes, card: Scored, before: str, member_before: str | None
) -> Outgoing:
    """An event applied: the card it gave (as of when it was applied), the event as it came
    (``raw``), the stage change when the stage ``before`` it differs from the card's, and the
    membership change when the tier ``member_before`` it does."""
    cid = card.customer_id
    return cid, _payload(
        change_id=change_id_for("event", envelope.event_id),
        customer_id=cid,
        cause="event",
        at=card.as_of,
        card_json=card.json,
        event_json=raw,
        stage_change=(before, card.stage) if before != card.stage else None,
        membership_change=_moved(member_before, card.member_tier),
    )


def time_change(card: Scored, before: str, at: datetime, member_before: str | None) -> Outgoing:
    """A stage or a membership tier that time alone moved (from ``before`` and
    ``member_before`` to the card's), found by a sweep at ``at``."""
    cid = card.customer_id
    parts = ["time", cid, card.stage, str(card.stage_since)]
    if member_before != card.member_tier:
        # The tier lowered on the day it lowered, whatever the stage did.
        parts += ["membership", card.member_tier or "", at.date().isoformat()]
    return cid, _payload(
        change_id=change_id_for(*parts),
        customer_id=cid,
        cause="time",
        at=at,
        card_json=card.json,
        stage_change=(before, card.stage) if before != card.stage else None,
        membership_change=_moved(member_before, card.member_tier),
    )


def refresh_change(card: Scored, before: str, member_before: str | None) -> Outgoing:
    """A card a population refit moved (its tier, strategy or segment; its stage from
    ``before``, judged by the population's new rhythm; its membership tier from
    ``member_before``; or the figures time moves, :class:`~services.scoring.core.card.Moving`),
    as of the refresh."""
    cid = card.customer_id
    return cid, _payload(
        change_id=change_id_for("refresh", cid, card.as_of.isoformat()),
        customer_id=cid,
        cause="refresh",
        at=card.as_of,
        card_json=card.json,
        stage_change=(before, card.stage) if before != card.stage else None,
        membership_change=_moved(member_before, card.member_tier),
    )


def erasure_change(envelope: Envelope, raw: bytes, at: datetime) -> Outgoing:
    """A customer erased by the ``customer.erased`` event ``raw``: an empty card, the tombstone
    outreach forgets them by."""
    cid = envelope.customer_id
    return cid, _payload(
        change_id=change_id_for("erasure", envelope.event_id),
        customer_id=cid,
        cause="erasure",
        at=at,
        card_json=b"{}",
        event_json=raw,
    )


def _moved(before: str | None, after: str | None) -> tuple[str | None, str | None] | None:
    return (before, after) if before != after else None


def _payload(
    *,
    change_id: str,
    customer_id: str,
    cause: Cause,
    at: datetime,
    card_json: bytes,
    event_json: bytes | None = None,
    stage_change: tuple[str, str] | None = None,
    membership_change: tuple[str | None, str | None] | None = None,
) -> bytes:
    when = at.isoformat()
    return orjson.dumps(
        {
            "change_id": change_id,
            "customer_id": customer_id,
            "cause": cause,
            "at": when,
            "event": orjson.Fragment(event_json) if event_json is not None else None,
            "card": orjson.Fragment(card_json),
            "stage_change": (
                {"from": stage_change[0], "to": stage_change[1], "at": when}
                if stage_change
                else None
            ),
            "membership_change": (
                {"from": membership_change[0], "to": membership_change[1], "at": when}
                if membership_change
                else None
            ),
        }
    )
