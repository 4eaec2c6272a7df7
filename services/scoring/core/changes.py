"""Writing changes for the outbox: the :class:`shared.changes.Change` contract as bytes.

The triggering event and the card are already JSON; they are embedded as they are rather
than parsed and written again.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from shared.changes import Cause


def change_payload(
    *,
    change_id: str,
    customer_id: str,
    cause: Cause,
    at: datetime,
    card_json: bytes,
    event_json: bytes | None = None,
    stage_change: tuple[str, str] | None = None,
) -> bytes:
    return orjson.dumps(
        {
            "change_id": change_id,
            "customer_id": customer_id,
            "cause": cause,
            "at": at.isoformat(),
            "event": orjson.Fragment(event_json) if event_json is not None else None,
            "card": orjson.Fragment(card_json),
            "stage_change": (
                {"from": stage_change[0], "to": stage_change[1], "at": at.isoformat()}
                if stage_change
                else None
            ),
        }
    )
