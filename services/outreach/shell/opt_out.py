"""A customer's own opt-out: their unsubscribe through the link in a message, and its lifting.

Each runs in the caller's transaction (a request's) and does everything it implies there:
the suppression list, the audit log, the actions still waiting, and the event that tells
scoring (through the events outbox), so that either all of it happens or none does.

An unsubscribe the customer made is theirs: only their own re-subscribe link, or an operator
(``ops:write``) with a reason, lifts it — never a marketing key
(:mod:`services.outreach.api.suppressions` enforces who may call :func:`lift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.opt_out import opt_out_event
from services.outreach.schemas import Suppression
from services.outreach.store import customer_events, suppressions
from services.outreach.store.ledger import suppress_unsubscribed
from services.outreach.store.replica import lock_customers
from shared import audit
from shared.events import EventType
from shared.logging import get_logger

log = get_logger(__name__)

UNSUBSCRIBED = "unsubscribed through the link in a message"
SOURCE = "unsubscribe"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What an unsubscribe did: the entry it left, and how many waiting actions it stopped."""

    suppression: Suppression
    suppressed_actions: int


async def unsubscribe(conn: AsyncConnection, customer_id: str, now: datetime) -> Unsubscribe:
    """The customer unsubscribed through their link: suppress them (over any entry they had),
    suppress every action still waiting for them, and tell scoring. A repeated click changes
    nothing and records nothing."""
    # The decision path's lock: a decision for this customer either finished before (and its
    # action is suppressed below) or runs after and sees the suppression.
    await lock_customers(conn, [customer_id])
    before = await suppressions.get(conn, customer_id, for_update=True)
    suppression = await suppressions.unsubscribed(conn, customer_id, UNSUBSCRIBED, now)
    if suppression != before:
        await audit.record(
            conn,
            actor=audit.UNSUBSCRIBE_LINK,
            service="outreach",
            action="suppression.created" if before is None else "suppression.updated",
            subject=customer_id,
            before=before,
            after=suppression,
        )
    if before is None or before.source != SOURCE:
        event = opt_out_event(customer_id, EventType.CUSTOMER_UNSUBSCRIBED, "link", now)
        await customer_events.add(conn, event)
    suppressed = await suppress_unsubscribed(conn, customer_id, now)
    log.info("customer_unsubscribed", customer_id=customer_id, suppressed=suppressed)
    return Unsubscribe(suppression, suppressed)


async def lift(
    conn: AsyncConnection,
    entry: Suppression,
    now: datetime,
    *,
    actor: audit.Actor,
    how: Literal["link", "operator"] | None,
    reason: str | None,
) -> None:
    """Take ``entry`` (locked by the caller) off the suppression list, audited with
    ``reason``. Lifting the customer's own unsubscribe (``how``: their ``link`` or an
    ``operator``) tells scoring too."""
    await suppressions.delete(conn, entry.customer_id)
    # After a deletion there is nothing to show, but who lifted it and why, when given.
    lifted = None
    if how is not None or reason is not None:
        lifted = {"lifted_by": how or "api", "reason": reason}
    await audit.record(
        conn,
        actor=actor,
        service="outreach",
        action="suppression.deleted",
        subject=entry.customer_id,
        before=entry,
        after=lifted,
    )
    if entry.source == SOURCE:
        assert how is not None  # the caller checked who may lift a customer's own word
        event = opt_out_event(entry.customer_id, EventType.CUSTOMER_RESUBSCRIBED, how, now)
        await customer_events.add(conn, event)
    log.info("suppression_lifted", customer_id=entry.customer_id, actor=actor.name, how=how)
