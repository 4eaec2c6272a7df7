"""What clients post to ingest and what they get back."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from services.ingest.settings import ingest_settings, phone_region
from shared.errors import FieldError
from shared.events import (
    ComplaintData,
    ComplaintStatus,
    CustomerData,
    CustomerIdentifier,
    EventType,
    Frozen,
    Identifier,
    OrderData,
    OrderStatus,
    ShortText,
    VisitData,
)
from shared.identifiers import normalise_email, normalise_phone

# As many identifiers as an envelope carries (shared.events.Envelope.identifiers).
MAX_IDENTIFIERS = 20

EventId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@+\-]+$")
]


def _not_in_future(value: datetime) -> datetime:
    # Compared as Unix times: this runs for every event, and is cheaper than aware datetimes.
    settings = ingest_settings()
    allowed = settings.max_future_seconds
    at = value.timestamp()
    if at > time.time() + allowed:
        raise ValueError(f"lies more than {allowed} s in the future")
    if at < settings.earliest_occurred_at.timestamp():
        raise ValueError(
            f"lies before {settings.earliest_occurred_at.isoformat()}, the earliest instant "
            "an event may name"
        )
    return value


# A sign is let through: the field itself refuses a negative amount, saying so.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def plain_amount(value: object, decimals: int) -> object:
    """``value`` if it is an amount as a client should send it: a decimal string without an
    exponent ("1e3" is refused), or a JSON number, with at most ``decimals`` decimals."""
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise ValueError('a plain decimal such as "59.90" (digits, one point, no exponent)')
        places = len(value.partition(".")[2])
    elif isinstance(value, int | float) and not isinstance(value, bool):
        exponent = Decimal(repr(value)).normalize().as_tuple().exponent
        places = max(0, -exponent) if isinstance(exponent, int) else decimals + 1
    else:
        return value  # the field's own type check names the problem
    if places > decimals:
        currency = ingest_settings().base_currency
        raise ValueError(f"at most {decimals} decimals in {currency}")
    return value


_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


class IdentifierIn(CustomerIdentifier):
    """One way a channel knows the customer, normalised as it arrives: an email lower-cased,
    a phone in E.164 (read in ``TEND_PHONE_REGION`` when it has no country code), an
    ``external`` id with the ``source`` that gave it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"kind": "email", "value": "Ada@Example.com", "verified": True},
                {"kind": "phone", "value": "(201) 555-0123"},
                {"kind": "external", "source": "store", "value": "loyalty-88412"},
            ]
        }
    )

    source: ShortText | None = Field(
        None,
        validate_default=True,
        description="who gave an `external` id (`web`, `app`, `store`, `marketplace`, ...); "
        "required for `external`",
    )

    @field_validator("value")
    @classmethod
    def _normalised(cls, v: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind == "email":
            if not _EMAIL.fullmatch(v.strip()):
                raise ValueError("not an email address")
            return normalise_email(v)
        if kind == "phone":
            region = phone_region()
            e164 = normalise_phone(v, region)
            if e164 is None:
                raise ValueError(
                    f"not a possible phone number (read in region {region} without a country code)"
                )
            return e164
        return v

    @field_validator("source")
    @classmethod
    def _source_of_external(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None and info.data.get("kind") == "external":
            raise ValueError("an external id needs the source that gave it")
        return v


class _Event(Frozen):
    event_id: EventId | None = Field(
        None, description="Your id for this event; makes retries safe. Derived when absent."
    )
    customer_id: Identifier
    identifiers: list[IdentifierIn] = Field(
        default_factory=list,
        max_length=MAX_IDENTIFIERS,
        description="How channels know this customer (emails, phones, external ids); a "
        "`verified` one may merge customers automatically (`TEND_INGEST_AUTO_MERGE`).",
    )
    occurred_at: AwareDatetime = Field(description="When it happened, with a UTC offset.")

    @field_validator("occurred_at")
    @classmethod
    def _occurred_at(cls, v: datetime) -> datetime:
        return _not_in_future(v)


# The event type of each status, looked up rather than built: it is asked of every event.
_ORDER_EVENTS = {status: EventType(f"order.{status}") for status in OrderStatus}
_COMPLAINT_EVENTS = {status: EventType(f"complaint.{status}") for status in ComplaintStatus}


def _currency_schema(schema: dict[str, Any]) -> None:
    schema["enum"] = [ingest_settings().base_currency]


class OrderIn(OrderData, _Event):
    """An order in one of its states (placed, paid, refunded, cancelled)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "order_id": "o-1001",
                    "customer_id": "c-42",
                    "occurred_at": "2026-11-20T10:15:00Z",
                    "status": "paid",
                    "amount": "59.90",
                    "currency": "USD",
                    "items": [{"sku": "tea-200g", "quantity": 2, "unit_price": "29.95"}],
                }
            ]
        }
    )

    currency: str = Field(
        description="Must be the configured base currency.",
        json_schema_extra=_currency_schema,
    )

    @field_validator("currency")
    @classmethod
    def _base_currency(cls, v: str) -> str:
        base = ingest_settings().base_currency
        if v != base:
            raise ValueError(f"must be the base currency {base}")
        return v

    @field_validator("amount", "outstanding", mode="before")
    @classmethod
    def _plain_amount(cls, v: object) -> object:
        return plain_amount(v, ingest_settings().amount_decimals())

    @field_validator("items", mode="before")
    @classmethod
    def _plain_prices(cls, v: object) -> object:
        if isinstance(v, list):
            decimals = ingest_settings().amount_decimals()
            for n, item in enumerate(v):
                if isinstance(item, dict) and "unit_price" in item:
                    try:
                        plain_amount(item["unit_price"], decimals)
                    except ValueError as exc:
                        raise ValueError(f"item {n}: unit_price: {exc}") from None
        return v

    def event_type(self) -> EventType:
        return _ORDER_EVENTS[self.status]

    def natural_id(self) -> str:
        if self.refund_id is not None:
            return f"{self.order_id}/{self.refund_id}"
        return self.order_id


class ComplaintIn(ComplaintData, _Event):
    """A complaint opened or resolved."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "complaint_id": "k-7",
                    "customer_id": "c-42",
                    "occurred_at": "2026-11-21T09:00:00Z",
                    "status": "opened",
                    "severity": "high",
                    "order_id": "o-1001",
                }
            ]
        }
    )

    def event_type(self) -> EventType:
        return _COMPLAINT_EVENTS[self.status]

    def natural_id(self) -> str:
        return self.complaint_id


class VisitIn(VisitData, _Event):
    """A visit: in store, on the web or app, a call."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "visit_id": "v-77",
                    "customer_id": "c-42",
                    "occurred_at": "2026-11-21T16:00:00Z",
                    "channel": "store",
                    "duration_seconds": 900,
                }
            ]
        }
    )

    def event_type(self) -> EventType:
        return EventType.VISIT_RECORDED

    def natural_id(self) -> str:
        return self.visit_id


class CustomerIn(CustomerData, _Event):
    """A profile upsert: fields present replace the stored ones, absent ones are kept."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "c-42",
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "birthday": "1990-04-17",
                    "timezone": "Europe/London",
                    "consent": {"email": True, "marketing": True},
                    "tags": ["vip"],
                }
            ]
        }
    )

    occurred_at: AwareDatetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="When the profile changed; defaults to the time received.",
    )

    def event_type(self) -> EventType:
        return EventType.CUSTOMER_UPDATED

    def natural_id(self) -> str | None:
        return None  # a profile change has no id of its own; its content identifies it


IngestItem = OrderIn | ComplaintIn | VisitIn | CustomerIn


class OrderItemIn(OrderIn):
    type: Literal["order"]


class ComplaintItemIn(ComplaintIn):
    type: Literal["complaint"]


class VisitItemIn(VisitIn):
    type: Literal["visit"]


class CustomerItemIn(CustomerIn):
    type: Literal["customer"]


BatchItem = Annotated[
    OrderItemIn | ComplaintItemIn | VisitItemIn | CustomerItemIn, Field(discriminator="type")
]


class BatchIn(BaseModel):
    """Up to 1,000 mixed events, each with a ``type`` (order, complaint, visit, customer)
    beside that kind's fields. Each item is judged on its own."""

    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class EventResult(BaseModel):
    status: Literal["accepted", "duplicate"]
    event_id: str
    event_type: EventType


class ItemResult(BaseModel):
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    event_type: EventType | None = None
    errors: list[FieldError] = []


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]
