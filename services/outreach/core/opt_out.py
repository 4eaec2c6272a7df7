"""A customer's own opt-out as the event scoring learns it from: ``customer.unsubscribed``
when they unsubscribe through the link in a message, ``customer.resubscribed`` when that is
lifted (by their own re-subscribe link, or by an operator with a reason)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from shared.events import Envelope, EventType, OptOutData

SOURCE = "outreach"
_NAMESPACE = uuid.UUID("6f1d0c7e-2b7a-4d53-9a31-5b0e8f4c2d19")


def opt_out_event(
    customer_id: str, event_type: EventType, how: Literal["link", "operator"], at: datetime
) -> Envelope:
    """The event of an unsubscribe or a re-subscribe of ``customer_id`` at ``at``. Its id
    comes from what it says, so the same fact announced twice is one event downstream."""
    event_id = uuid.uuid5(_NAMESPACE, f"{event_type.value}:{customer_id}:{at.isoformat()}")
    return Envelope(
        event_id=str(event_id),
        event_type=event_type,
        customer_id=customer_id,
        occurred_at=at,
        received_at=at,
        source=SOURCE,
        data=OptOutData(how=how),
    )
