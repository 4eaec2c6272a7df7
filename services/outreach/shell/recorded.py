"""The recorded history a backtest replays: the change stream itself
(``crm.customer-changes.v1``, kept 35 days), read from an instant to the end it has now."""

from __future__ import annotations

from datetime import datetime

from services.outreach.core.changes import read_change
from shared.changes import Change
from shared.kafka_read import read_until_end


async def recorded_changes(bootstrap: str, topic: str, since: datetime) -> list[Change]:
    """Every change on ``topic`` from ``since`` to the end it has now, oldest first."""
    out: list[Change] = []
    async for batch in read_until_end(bootstrap, topic, since=since):
        out.extend(read_change(r.value) for r in batch)
    out.sort(key=lambda c: c.at)  # stable: one customer's changes keep their order
    return out
