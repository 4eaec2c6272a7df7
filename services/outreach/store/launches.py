"""Broadcast launches: when each was first launched and the content it carried (as its cards
carried it), kept for the customers who wait in the rule's line for a later day's slot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.store.tables import launches

_OF = text(
    """
    SELECT l.rule_id, l.launch_id, l.content
    FROM outreach.launches l
    JOIN unnest(CAST(:rules AS text[]), CAST(:launches AS text[])) AS t(r, l)
        ON l.rule_id = t.r AND l.launch_id = t.l
    """
)


async def record(
    conn: AsyncConnection,
    rule_id: str,
    launch_id: str,
    content: Mapping[str, Any] | None,
    at: datetime,
    actor: str | None,
) -> bool:
    """Keep a launch's content; whether it is a new launch (launching again with the same id
    keeps the first)."""
    inserted = await conn.execute(
        insert(launches)
        .values(rule_id=rule_id, launch_id=launch_id, content=content, launched_at=at, actor=actor)
        .on_conflict_do_nothing(index_elements=["rule_id", "launch_id"])
        .returning(launches.c.launch_id)
    )
    return inserted.first() is not None


async def contents(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Mapping[str, Any] | None]:
    """Each known ``(rule_id, launch_id)``'s content (None: the launch carried none); an
    unknown launch is absent."""
    if not keys:
        return {}
    rows = await conn.execute(
        _OF, {"rules": [k[0] for k in keys], "launches": [k[1] for k in keys]}
    )
    return {(r.rule_id, r.launch_id): r.content for r in rows}


# A rule's launches, newest first, with what each decided so far (by status) and how many
# still wait in the rule's line for it. The ledger's rows are found through its unique index
# (rule, customer, occurrence): the rule's whole range is read, once per page.
_OF_RULE = text(
    """
    SELECT l.launch_id, l.launched_at, l.actor,
        coalesce(jsonb_array_length(l.content -> 'items'), 0) AS items,
        (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb) FROM (
            SELECT a.status, count(*) AS n FROM outreach.actions a
            WHERE a.rule_id = l.rule_id AND a.occurrence = l.launch_id GROUP BY a.status
        ) s) AS statuses,
        (SELECT count(*) FROM outreach.schedule w
            WHERE w.rule_id = l.rule_id AND w.launch_id = l.launch_id) AS waiting
    FROM outreach.launches l
    WHERE l.rule_id = :rule
    ORDER BY l.launched_at DESC, l.launch_id
    LIMIT :limit
    """
)


async def of_rule(conn: AsyncConnection, rule_id: str, limit: int) -> list[Any]:
    """Up to ``limit`` of ``rule_id``'s launches, newest first: ``launch_id``,
    ``launched_at``, ``actor``, ``items`` (of its content), ``statuses`` (its actions by
    status) and ``waiting`` (its customers still in the rule's line)."""
    return list(await conn.execute(_OF_RULE, {"rule": rule_id, "limit": limit}))
