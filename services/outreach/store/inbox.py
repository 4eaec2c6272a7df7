"""The inbox of applied changes: a change id claimed once is never applied again (replays,
redeliveries)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_CLAIM = text(
    """
    INSERT INTO outreach.inbox (change_id, received_at)
    SELECT c, now() FROM unnest(CAST(:ids AS text[])) AS t(c)
    ON CONFLICT (change_id) DO NOTHING
    RETURNING change_id
    """
)


async def claim(conn: AsyncConnection, change_ids: Sequence[str]) -> set[str]:
    """The ids among ``change_ids`` never seen before, now claimed."""
    return set((await conn.execute(_CLAIM, {"ids": list(change_ids)})).scalars())
