"""The alias map (``outreach.aliases``): each merged customer id and the survivor it is from the
merge on. A change that still arrives under a merged id is the survivor's
(:mod:`services.outreach.shell.consumer`); erasing the survivor erases its aliases.

Merges chain: when a survivor is itself merged later, the ids merged into it follow it to the
new survivor, so the map always points at the customer who is, never at an alias.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_SURVIVORS = text(
    """
    SELECT customer_id, survivor_id FROM outreach.aliases
    WHERE customer_id = ANY(CAST(:ids AS text[]))
    """
)
_OF = text(
    """
    SELECT customer_id FROM outreach.aliases
    WHERE survivor_id = :s ORDER BY customer_id
    """
)
# The ids merged into an id being merged now follow it to the new survivor.
_FOLLOW = text(
    """
    UPDATE outreach.aliases SET survivor_id = :s
    WHERE survivor_id = ANY(CAST(:merged AS text[]))
    """
)
# A merge applied again (a redelivery, a replay) finds its rows there and changes nothing.
_RECORD = text(
    """
    INSERT INTO outreach.aliases (customer_id, survivor_id, merged_at, change_id)
    SELECT m, :s, :at, :change_id FROM unnest(CAST(:merged AS text[])) AS t(m)
    ON CONFLICT (customer_id) DO NOTHING
    """
)
_FORGET = text("DELETE FROM outreach.aliases WHERE survivor_id = :s")


async def survivors(conn: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, str]:
    """The survivor of each of these ids that is an alias (the others are left out)."""
    ids = sorted(set(customer_ids))
    if not ids:
        return {}
    rows = await conn.execute(_SURVIVORS, {"ids": ids})
    return {r.customer_id: r.survivor_id for r in rows}


async def survivor_of(conn: AsyncConnection, customer_id: str) -> str:
    """The customer ``customer_id`` is: its survivor when it was merged, else itself."""
    return (await survivors(conn, [customer_id])).get(customer_id, customer_id)


async def aliases_of(conn: AsyncConnection, survivor: str) -> list[str]:
    """Every id merged into ``survivor``."""
    return list((await conn.execute(_OF, {"s": survivor})).scalars())


async def record(
    conn: AsyncConnection, survivor: str, merged: Sequence[str], at: datetime, change_id: str
) -> None:
    """``merged`` are ``survivor`` from now on (and so are the ids merged into them)."""
    await conn.execute(_FOLLOW, {"s": survivor, "merged": list(merged)})
    await conn.execute(
        _RECORD, {"s": survivor, "merged": list(merged), "at": at, "change_id": change_id}
    )


async def forget(conn: AsyncConnection, survivor: str) -> None:
    """Drop ``survivor``'s aliases (the survivor is erased)."""
    await conn.execute(_FORGET, {"s": survivor})
