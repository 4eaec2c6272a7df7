"""Forgetting a customer.

Scoring announces an erasure with an ``erasure`` change (an empty card). Outreach then drops
the customer's card replica, schedule entries, suppression, goal events (their orders, visits
and the like: their conversions leave the outcome figures), unrelayed actions and delivery
attempts — theirs and those of every id merged into them, whose aliases go too; the decided
actions stay in the ledger for the counts, stripped of their content and re-labelled with an
anonymous id, and any still waiting are suppressed. The registry remembers the erasure by a
digest (of each id) so that an older change arriving afterwards does not bring the customer
back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.store import aliases
from shared.changes import Change
from shared.logging import get_logger
from shared.privacy import anonymous_id, customer_digest, erased_at

log = get_logger(__name__)

_FORGET = (
    text("DELETE FROM outreach.cards WHERE customer_id = :id"),
    text("DELETE FROM outreach.schedule WHERE customer_id = :id"),
    text("DELETE FROM outreach.suppressions WHERE customer_id = :id"),
    text("DELETE FROM outreach.outbox WHERE customer_id = :id"),
    text("DELETE FROM outreach.events_outbox WHERE customer_id = :id"),
    # What they did after being contacted: their conversions leave the outcome figures.
    text("DELETE FROM outreach.goal_events WHERE customer_id = :id"),
    # The audit log keeps that a suppression was added or lifted, and by whom, not for whom.
    text(
        """
        UPDATE auth.audit_log SET subject = :anonymous, before = NULL, after = NULL
        WHERE subject = :id AND action LIKE 'suppression.%'
        """
    ),
    # Before the actions are re-labelled: their attempts go with their content.
    text(
        """
        DELETE FROM outreach.delivery_attempts
        WHERE action_id IN (SELECT id FROM outreach.actions WHERE customer_id = :id)
        """
    ),
    text(
        """
        UPDATE outreach.actions SET customer_id = :anonymous, subject = NULL, body = NULL,
            offer = NULL, detail = NULL, last_error = NULL, merged_from = NULL,
            status = CASE WHEN status IN ('scheduled', 'held', 'pending') THEN 'suppressed'
                          ELSE status END,
            reason = CASE WHEN status IN ('scheduled', 'held', 'pending') THEN 'erased'
                          ELSE reason END,
            next_attempt_at = NULL
        WHERE customer_id = :id
        """
    ),
)
_REGISTER = text(
    """
    INSERT INTO outreach.erasures AS e (customer_digest, erased_at, change_id)
    VALUES (:digest, :at, :change_id)
    ON CONFLICT (customer_digest) DO UPDATE SET
        erased_at = greatest(e.erased_at, EXCLUDED.erased_at), change_id = EXCLUDED.change_id
    """
)


async def erased(conn: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, datetime]:
    """When each of these customers was erased, for those who were."""
    return await erased_at(conn, "outreach", customer_ids)


async def forget(conn: AsyncConnection, change: Change) -> None:
    """Apply an erasure change inside the consumer's transaction: the customer and every id
    merged into them (each registered, so a change still on its way under a merged id does
    not bring them back)."""
    cid = change.customer_id
    anonymous = anonymous_id(change.event.event_id if change.event else change.change_id)
    for customer_id in [cid, *await aliases.aliases_of(conn, cid)]:
        for statement in _FORGET:
            await conn.execute(statement, {"id": customer_id, "anonymous": anonymous})
        await conn.execute(
            _REGISTER,
            {
                "digest": customer_digest(customer_id),
                "at": change.at,
                "change_id": change.change_id,
            },
        )
    await aliases.forget(conn, cid)
    log.info("customer_erased", change_id=change.change_id)
