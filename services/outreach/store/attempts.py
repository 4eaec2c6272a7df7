"""Delivery attempts: one row per attempt to send an action, written by the delivery worker
in the transaction that records the attempt's outcome on the action, read by the action's
detail (``GET /v1/actions/{id}``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.store import tables

# Kept of an error's text: enough to read what went wrong, never a whole response body.
ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class AttemptRow:
    action_id: str
    attempt: int  # 1 for the first
    at: datetime
    outcome: str  # the sender's verdict: sent, retry, failed, gone, unknown
    reason: str | None
    http_status: int | None
    error: str | None
    duration_ms: int


_COLUMNS = [f.name for f in fields(AttemptRow)]
_TYPES = {
    "action_id": "text",
    "attempt": "smallint",
    "at": "timestamptz",
    "outcome": "text",
    "reason": "text",
    "http_status": "smallint",
    "error": "text",
    "duration_ms": "integer",
}
# A second record of the same attempt (a retried transaction) changes nothing.
_INSERT = text(
    f"""
    INSERT INTO outreach.delivery_attempts ({", ".join(_COLUMNS)})
    SELECT * FROM unnest({", ".join(f"CAST(:{c} AS {_TYPES[c]}[])" for c in _COLUMNS)})
    ON CONFLICT (action_id, attempt) DO NOTHING
    """
)


async def record(conn: AsyncConnection, rows: Sequence[AttemptRow]) -> None:
    """Keep these attempts (one statement for the batch)."""
    if not rows:
        return
    columns = {c: [getattr(r, c) for r in rows] for c in _COLUMNS}
    columns["error"] = [e[:ERROR_CHARS] if e else e for e in columns["error"]]
    await conn.execute(_INSERT, columns)


_t = tables.delivery_attempts


async def of_action(conn: AsyncConnection, action_id: str) -> list[AttemptRow]:
    """The action's attempts, first first."""
    rows = await conn.execute(
        select(*(_t.c[c] for c in _COLUMNS))
        .where(_t.c.action_id == action_id)
        .order_by(_t.c.attempt)
    )
    return [AttemptRow(*r) for r in rows]
