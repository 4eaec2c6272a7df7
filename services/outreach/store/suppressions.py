"""The suppression list: customers who hear nothing from outreach, whatever the rule, each
with why (``reason``) and who put them there (``source``: ``api`` or ``unsubscribe``).

Every function answers the entry as a :class:`~services.outreach.schemas.Suppression`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.schemas import Suppression

_COLUMNS = "customer_id, reason, source, created_at"
_ADD = text(
    f"""
    INSERT INTO outreach.suppressions ({_COLUMNS})
    VALUES (:customer_id, :reason, 'api', :now)
    ON CONFLICT (customer_id) DO NOTHING
    RETURNING {_COLUMNS}
    """
)
_ONE = text(f"SELECT {_COLUMNS} FROM outreach.suppressions WHERE customer_id = :c")
_ONE_FOR_UPDATE = text(
    f"SELECT {_COLUMNS} FROM outreach.suppressions WHERE customer_id = :c FOR UPDATE"
)
_DELETE = text(f"DELETE FROM outreach.suppressions WHERE customer_id = :c RETURNING {_COLUMNS}")
_UNSUBSCRIBE = text(
    f"""
    INSERT INTO outreach.suppressions ({_COLUMNS})
    VALUES (:c, :reason, 'unsubscribe', :now)
    ON CONFLICT (customer_id) DO UPDATE SET reason = EXCLUDED.reason,
        source = EXCLUDED.source
    RETURNING {_COLUMNS}
    """
)
_IS_SUPPRESSED = text("SELECT 1 FROM outreach.suppressions WHERE customer_id = :c")


async def page(conn: AsyncConnection, after: str | None, limit: int) -> Sequence[Suppression]:
    """Up to ``limit`` entries in customer id order, after customer id ``after`` if given."""
    where = "WHERE customer_id > :after" if after is not None else ""
    query = text(
        f"SELECT {_COLUMNS} FROM outreach.suppressions {where} ORDER BY customer_id LIMIT :n"
    )
    rows = (await conn.execute(query, {"after": after, "n": limit})).all()
    return [Suppression.model_validate(r) for r in rows]


async def add(
    conn: AsyncConnection, customer_id: str, reason: str, now: datetime
) -> Suppression | None:
    """Suppress the customer (source ``api``); None when they already were."""
    row = (
        await conn.execute(_ADD, {"customer_id": customer_id, "reason": reason, "now": now})
    ).first()
    return Suppression.model_validate(row) if row is not None else None


async def get(
    conn: AsyncConnection, customer_id: str, *, for_update: bool = False
) -> Suppression | None:
    """The customer's entry, or None; ``for_update`` locks it until the transaction ends."""
    query = _ONE_FOR_UPDATE if for_update else _ONE
    row = (await conn.execute(query, {"c": customer_id})).first()
    return Suppression.model_validate(row) if row is not None else None


async def is_suppressed(conn: AsyncConnection, customer_id: str) -> bool:
    return await conn.scalar(_IS_SUPPRESSED, {"c": customer_id}) is not None


async def delete(conn: AsyncConnection, customer_id: str) -> Suppression | None:
    """Lift the customer's suppression; the entry lifted, or None when there was none."""
    row = (await conn.execute(_DELETE, {"c": customer_id})).first()
    return Suppression.model_validate(row) if row is not None else None


async def unsubscribed(
    conn: AsyncConnection, customer_id: str, reason: str, now: datetime
) -> Suppression:
    """Suppress the customer by their own unsubscribe (source ``unsubscribe``), over any entry
    they had."""
    row = (await conn.execute(_UNSUBSCRIBE, {"c": customer_id, "reason": reason, "now": now})).one()
    return Suppression.model_validate(row)
