"""Rule health in the rules table: failures counted since the rule was last saved, the last
error, and the reason outreach gave when it disabled a rule that kept failing."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_ADD = text(
    """
    UPDATE outreach.rules AS r
    SET failures = r.failures + f.n, last_error = f.error, last_error_at = :now
    FROM unnest(CAST(:ids AS text[]), CAST(:counts AS int[]), CAST(:errors AS text[]))
        AS f(id, n, error)
    WHERE r.id = f.id AND r.deleted_at IS NULL
    RETURNING r.id, r.failures, r.enabled
    """
)
_REASON = text("UPDATE outreach.rules SET disabled_reason = :reason WHERE id = :id")


async def add_failures(
    conn: AsyncConnection, failures: Mapping[str, tuple[int, str]], now: datetime
) -> dict[str, tuple[int, bool]]:
    """Count ``failures`` (rule id → (times, last error)); returns each rule's new total and
    whether it is still enabled (deleted rules are not counted)."""
    if not failures:
        return {}
    ids = sorted(failures)  # one lock order for every writer
    rows = await conn.execute(
        _ADD,
        {
            "ids": ids,
            "counts": [failures[i][0] for i in ids],
            "errors": [failures[i][1] for i in ids],
            "now": now,
        },
    )
    return {r.id: (r.failures, r.enabled) for r in rows}


async def set_disabled_reason(conn: AsyncConnection, rule_id: str, reason: str) -> None:
    await conn.execute(_REASON, {"id": rule_id, "reason": reason})
