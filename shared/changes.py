"""A change on ``crm.customer-changes.v1``: what happened to a customer and their new card.

Scoring writes one for every event it applies (``cause: event``), for every stage that moves
with time (``time``), for every card a population refit moves or whose figures time alone
moved since the last one published (``refresh``: trailing windows, RFM scores, P(alive) in
steps) and for every customer erased (``erasure``: an empty card, the tombstone outreach
forgets them by). Outreach reads them. The card travels as JSON (the read API's card), so
outreach never imports scoring.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.events import LENIENT, Envelope

Cause = Literal["event", "time", "refresh", "erasure"]

_NAMESPACE = uuid.UUID("0d5b8f62-6c0e-4b8e-9d4b-6a3c2f7e9a10")
_NAMESPACE_BYTES = _NAMESPACE.bytes


def change_id_for(*parts: str) -> str:
    """A deterministic change id: a replay of the same history yields the same ids, so a
    consumer can drop repeats (the first part is the cause)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + ":".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    # The canonical UUID text, without building a UUID object (this runs for every change).
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Consumers ignore the fields they do not know (a producer may add one in a rolling deploy).
class StageChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    from_: Annotated[str, Field(alias="from")]
    to: str
    at: AwareDatetime


class MembershipChange(BaseModel):
    """The membership tier moved (``profile.member_tier``; null: none): by an order, a
    refund, a backend's write, or time as the year's spend fell. The card's ``membership``
    says whether it was an upgrade or a downgrade."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    from_: Annotated[str | None, Field(alias="from")]
    to: str | None
    at: AwareDatetime


class Change(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    change_id: str
    customer_id: str
    cause: Cause
    at: datetime
    event: Envelope | None = None
    card: dict[str, Any]
    stage_change: StageChange | None = None
    membership_change: MembershipChange | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> Change:
        """A change as a consumer reads it: fields it does not know, in the change or in the
        event it carries, are ignored."""
        return cls.model_validate_json(raw, extra="ignore", context=LENIENT)
