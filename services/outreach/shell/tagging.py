"""Recording what ``tag`` actions change, in the caller's transaction: each change is a
``customer.tagged`` event on the events outbox (:mod:`services.outreach.store.customer_events`),
published by the relay for scoring to keep. No ledger row: a tag is not a contact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.rules import Match
from services.outreach.core.tagging import Cause, tag_event
from services.outreach.store import customer_events
from shared.events import Envelope
from shared.logging import get_logger

log = get_logger(__name__)

TAGGED = Counter(
    "tend_outreach_tag_changes_total",
    "Tag changes rules made, published to scoring as customer.tagged events",
    ["rule"],
)


async def record_tags(
    conn: AsyncConnection,
    matches: Sequence[tuple[Match, Cause]],
    cards: Mapping[str, Mapping[str, Any]],
    now: datetime,
) -> int:
    """Put the tag change of every tag-action match on the events outbox (those the card
    already shows are skipped), each beside the :class:`Cause` of the change it fired on
    (:data:`NO_CAUSE` for schedules and broadcasts); returns how many were put. A batch's
    tag changes are written in one statement; the same change twice (a stage rule matching two
    changes of one customer, both judged on their newest card) is one event."""
    events: dict[str, Envelope] = {}
    for match, cause in matches:
        event = tag_event(match, cards[match.customer_id], now, cause)
        if event is None or event.event_id in events:
            continue
        events[event.event_id] = event
        TAGGED.labels(match.rule.id).inc()
    await customer_events.add_many(conn, list(events.values()))
    if events:
        log.info("customers_tagged", changes=len(events))
    return len(events)
