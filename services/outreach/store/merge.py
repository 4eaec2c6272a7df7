"""Folding merged customers' rows into their survivor's, inside the consumer's transaction
(:mod:`services.outreach.shell.merge` says what is folded and why).

Every statement here moves what the merged ids still hold, so a merge applied a second time
finds nothing left to move and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.store.ledger import AS_PUBLISHED, QUEUED, publish_as_they_stand

# The status of a row that stands for the action (it went out, is on its way, or was decided
# for a control arm): of two rows with one key, such a row keeps the key.
_STANDING = ("sent", "unknown", "pending", "scheduled", "held", "control")

# Each merged id's actions become the survivor's. Of the rows that share one (rule,
# occurrence) — the survivor's and the merged ids' — one keeps the key: the survivor's own,
# else the one that stands, else the earliest; the others are duplicates and take a key of
# their own (their occurrence, the merged id and a digest) so they stay in the ledger, counted
# by the caps and limits like any contact the person had.
_MOVE = text(
    f"""
    WITH ranked AS (
        SELECT id, customer_id,
            row_number() OVER (
                PARTITION BY rule_id, occurrence
                ORDER BY customer_id = :s DESC,
                    status IN ({", ".join(f"'{s}'" for s in _STANDING)}) DESC,
                    decided_at, id
            ) AS n
        FROM outreach.actions
        WHERE customer_id = :s OR customer_id = ANY(CAST(:merged AS text[]))
    )
    UPDATE outreach.actions a
    SET customer_id = :s, merged_from = coalesce(a.merged_from, a.customer_id),
        occurrence = CASE WHEN r.n = 1 THEN a.occurrence
            ELSE left(a.occurrence, 80) || '~merged~'
                 || md5(a.customer_id || chr(31) || a.occurrence) END
    FROM ranked r
    WHERE a.id = r.id AND a.customer_id = ANY(CAST(:merged AS text[]))
    RETURNING a.id, r.customer_id, a.rule_id, a.status, r.n > 1 AS duplicate
    """
)
# A duplicate still waiting never goes out: the person has that action already. One leased
# for a send (pending, its attempt time ahead) may be on the wire: it is left to delivery.
_DROP_DUPLICATES = text(
    """
    UPDATE outreach.actions
    SET status = 'suppressed', reason = 'merged', next_attempt_at = NULL,
        detail = 'the customer was merged and already has this action'
    WHERE id = ANY(CAST(:ids AS text[])) AND status = ANY(CAST(:queued AS text[]))
      AND NOT (status = 'pending' AND next_attempt_at > :now)
    RETURNING id
    """
)
_AS_THEY_STAND = text(
    f"""
    SELECT {AS_PUBLISHED} FROM outreach.actions WHERE id = ANY(CAST(:ids AS text[]))
    ORDER BY decided_at, id
    """
)
_GOAL_EVENTS = text(
    """
    UPDATE outreach.goal_events SET customer_id = :s
    WHERE customer_id = ANY(CAST(:merged AS text[]))
    """
)
# The most restrictive entry wins: any suppression beats none, and a customer's own
# unsubscribe (which only they or an operator lift) beats one marketing added.
_SUPPRESSION = text(
    """
    INSERT INTO outreach.suppressions AS k (customer_id, reason, source, created_at)
    SELECT :s, reason, source, created_at FROM outreach.suppressions
    WHERE customer_id = ANY(CAST(:merged AS text[]))
    ORDER BY source = 'unsubscribe' DESC, created_at, customer_id
    LIMIT 1
    ON CONFLICT (customer_id) DO UPDATE SET reason = EXCLUDED.reason, source = EXCLUDED.source
    WHERE k.source <> 'unsubscribe' AND EXCLUDED.source = 'unsubscribe'
    RETURNING customer_id
    """
)
_DROP = (
    text("DELETE FROM outreach.suppressions WHERE customer_id = ANY(CAST(:merged AS text[]))"),
    # Their schedules are the survivor's now, recomputed from the survivor's card.
    text("DELETE FROM outreach.schedule WHERE customer_id = ANY(CAST(:merged AS text[]))"),
    # Audiences and broadcasts count the person once.
    text("DELETE FROM outreach.cards WHERE customer_id = ANY(CAST(:merged AS text[]))"),
)
_REKEY = text(
    """
    UPDATE outreach.actions a SET occurrence = :new
    WHERE a.id = ANY(CAST(:moved AS text[])) AND a.occurrence = :old
      AND a.rule_id = ANY(CAST(:rules AS text[]))
      AND NOT EXISTS (
          SELECT 1 FROM outreach.actions b
          WHERE b.rule_id = a.rule_id AND b.customer_id = :s AND b.occurrence = :new
      )
    """
)
# The survivor's actions still to be decided on: held, deferred, or due and not yet taken
# by delivery (a pending row whose attempt time is ahead is leased, or waits for a retry).
_WAITING = text(
    """
    SELECT id, rule_id, customer_id, kind, channel, priority, audience, arm
    FROM outreach.actions
    WHERE customer_id = :s AND (
        status IN ('scheduled', 'held')
        OR (status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= :now))
    )
    ORDER BY priority DESC, decided_at
    FOR UPDATE
    """
)
_ARMS = text(
    """
    UPDATE outreach.actions a SET arm = v.arm
    FROM unnest(CAST(:ids AS text[]), CAST(:arms AS text[])) AS v(id, arm)
    WHERE a.id = v.id
    """
)


@dataclass(frozen=True, slots=True)
class MovedAction:
    """A merged id's action, now the survivor's; ``duplicate`` when the survivor (or another
    merged id) had one with the same key."""

    id: str
    customer_id: str  # the merged id it was under
    rule_id: str
    status: str
    duplicate: bool
    stopped: bool  # a duplicate still waiting, suppressed by the merge


async def move_actions(
    conn: AsyncConnection, survivor: str, merged: Sequence[str], now: datetime
) -> list[MovedAction]:
    """Give the merged ids' actions to ``survivor`` and stop the duplicates still waiting."""
    rows = (await conn.execute(_MOVE, {"s": survivor, "merged": list(merged)})).all()
    duplicates = [r.id for r in rows if r.duplicate]
    stopped: set[str] = set()
    if duplicates:
        params = {"ids": duplicates, "queued": list(QUEUED), "now": now}
        stopped = {r.id for r in await conn.execute(_DROP_DUPLICATES, params)}
    return [
        MovedAction(r.id, r.customer_id, r.rule_id, r.status, r.duplicate, r.id in stopped)
        for r in rows
    ]


async def publish_moved(conn: AsyncConnection, moved: Sequence[MovedAction], now: datetime) -> None:
    """Put every moved action on the actions stream as it now stands: the survivor's, under
    the key it kept or took (a duplicate's own, an episode's the survivor is in), a duplicate
    the merge stopped as a new decision. The stream's newest message of each then says what
    the ledger says."""
    if not moved:
        return
    rows = (await conn.execute(_AS_THEY_STAND, {"ids": [m.id for m in moved]})).all()
    stopped = {m.id for m in moved if m.stopped}
    await publish_as_they_stand(conn, rows, now, decided_again=stopped)


async def move_goal_events(conn: AsyncConnection, survivor: str, merged: Sequence[str]) -> int:
    """The merged ids' goal events are the survivor's: their orders count as its outcomes."""
    result = await conn.execute(_GOAL_EVENTS, {"s": survivor, "merged": list(merged)})
    return int(result.rowcount)


async def fold_suppressions(conn: AsyncConnection, survivor: str, merged: Sequence[str]) -> bool:
    """The survivor takes the most restrictive suppression of the merged ids when it is more
    restrictive than its own; True when the survivor's entry changed."""
    row = (await conn.execute(_SUPPRESSION, {"s": survivor, "merged": list(merged)})).first()
    return row is not None


async def drop_merged(conn: AsyncConnection, merged: Sequence[str]) -> None:
    """Forget the merged ids' own suppression entries, schedules and card replicas (folded
    into the survivor's before this)."""
    for statement in _DROP:
        await conn.execute(statement, {"merged": list(merged)})


async def rekey_episode(
    conn: AsyncConnection,
    survivor: str,
    moved: Sequence[str],
    rule_ids: Sequence[str],
    old: str,
    new: str,
) -> int:
    """Of the ``moved`` actions (a merged record's), those of the stage rules ``rule_ids`` for
    its episode ``old`` belong to the survivor's episode ``new`` (unless the survivor has its
    own)."""
    result = await conn.execute(
        _REKEY,
        {"s": survivor, "moved": list(moved), "rules": list(rule_ids), "old": old, "new": new},
    )
    return int(result.rowcount)


async def waiting(conn: AsyncConnection, survivor: str, now: datetime) -> Sequence[Any]:
    """The survivor's actions still to be decided on, locked, best first."""
    return (await conn.execute(_WAITING, {"s": survivor, "now": now})).all()


async def set_arms(conn: AsyncConnection, arms: dict[str, str | None]) -> None:
    """Write each action's arm (by action id)."""
    if arms:
        await conn.execute(_ARMS, {"ids": list(arms), "arms": list(arms.values())})
