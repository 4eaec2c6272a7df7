"""The inbox of applied changes: a change id claimed once is never applied again (replays,
redeliveries) while it is remembered.

A change caused by an event has its id from the event's id, which ingest takes for new again
once its retention is over (``TEND_EVENT_ID_RETENTION_DAYS``): the inbox remembers an id for
the consumers' retention (a day less, :func:`shared.settings.inbox_retention`), counted from
when ingest received the event (for other changes, from when scoring made them), and is
pruned hourly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_CLAIM = text(
    """
    INSERT INTO outreach.inbox AS i (change_id, received_at)
    SELECT DISTINCT ON (c) c, r
    FROM unnest(CAST(:ids AS text[]), CAST(:times AS timestamptz[])) AS t(c, r)
    ORDER BY c, r
    ON CONFLICT (change_id) DO UPDATE SET received_at = EXCLUDED.received_at
    WHERE i.received_at < EXCLUDED.received_at - CAST(:keep AS interval)
    RETURNING change_id
    """
)
_PRUNE = text("DELETE FROM outreach.inbox WHERE received_at < now() - CAST(:keep AS interval)")


async def claim(
    conn: AsyncConnection,
    change_ids: Sequence[str],
    times: Sequence[datetime],
    keep: timedelta,
) -> set[str]:
    """The ids among ``change_ids`` new to the inbox, now claimed: never seen, or seen only
    from a time (``times``, one per change) more than ``keep`` before this one."""
    result = await conn.execute(
        _CLAIM, {"ids": list(change_ids), "times": list(times), "keep": keep}
    )
    return set(result.scalars())


async def prune(conn: AsyncConnection, keep: timedelta) -> int:
    """Forget the changes from more than ``keep`` ago; returns how many."""
    return int((await conn.execute(_PRUNE, {"keep": keep})).rowcount)
