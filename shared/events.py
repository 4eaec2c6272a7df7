"""The event envelope and the payload of every event type on ``crm.customer-events.v1``.

Payloads are frozen and versioned: a consumer that reads ``schema_version`` it does not know
sends the record to the DLQ rather than guessing. Money is ``Decimal`` end to end and is written
to JSON as a string so no float rounding ever touches an amount.

How the contract evolves without breaking a rolling deploy: a field may be *added* within a
version, so consumers ignore fields they do not know (:meth:`Envelope.from_json` reads leniently,
while ingest still refuses unknown fields from clients, naming them); a field removed or retyped
needs a new ``schema_version``, which consumers learn to accept before producers send it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from babel import Locale
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

SCHEMA_VERSION: Literal[1] = 1

# Identifiers a shop already has (numbers, UUIDs, "cust-42", emails as ids): printable, no spaces.
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@+\-]+$")
]


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store U+0000 in text or jsonb: an event carrying one could be
    # accepted here and never applied downstream, so it is refused at the door.
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


@dataclass(frozen=True, slots=True)
class _NoNul(AfterValidator):
    """The NUL check, which says so in the JSON Schema (a pattern) for clients to read."""

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.setdefault("pattern", NO_NUL_PATTERN)
        return schema


NO_NUL_PATTERN = "^[^\\u0000]*$"
NoNul = _NoNul(_no_nul)
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul]
Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=16, decimal_places=4),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,12}(\.[0-9]{1,4})?$"},
                # As a JSON number: the same bounds, at most 4 decimals.
                {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 999_999_999_999.9999,
                    "multipleOf": 0.0001,
                },
            ],
            "description": "a non-negative decimal (at most 12 digits before the point and 4 "
            'after), best sent as a string: "59.90"',
            "examples": ["59.90"],
        }
    ),
]

_TIMEZONES = frozenset(available_timezones())

# The validation context of a consumer's read: unknown fields, added by a newer producer
# within the same schema version, are ignored rather than refused.
LENIENT: dict[str, str] = {"read": "consumer"}


class Frozen(BaseModel):
    """Strict, immutable model: unknown fields are an error, never silently dropped, unless a
    consumer reads with :data:`LENIENT` (fields a newer producer added)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EventType(StrEnum):
    ORDER_PLACED = "order.placed"
    ORDER_PAID = "order.paid"
    ORDER_REFUNDED = "order.refunded"
    ORDER_CANCELLED = "order.cancelled"
    COMPLAINT_OPENED = "complaint.opened"
    COMPLAINT_RESOLVED = "complaint.resolved"
    VISIT_RECORDED = "visit.recorded"
    CUSTOMER_UPDATED = "customer.updated"
    # Published by ingest on a request to erase a customer: every consumer forgets them.
    CUSTOMER_ERASED = "customer.erased"
    # Published by outreach: the customer unsubscribed through the link in a message, and
    # that unsubscribe lifted (by the customer's own re-subscribe link, or by an operator).
    CUSTOMER_UNSUBSCRIBED = "customer.unsubscribed"
    CUSTOMER_RESUBSCRIBED = "customer.resubscribed"
    # Published by ingest under the survivor's key: the merged customers are the survivor
    # from now on (their facts fold into the survivor's; their ids become aliases).
    CUSTOMER_MERGED = "customer.merged"
    # Published by outreach: a rule's ``tag`` action added or removed tags of the customer
    # (tags of their own, apart from the backend's ``tags``, which the backend replaces whole).
    CUSTOMER_TAGGED = "customer.tagged"


class OrderStatus(StrEnum):
    PLACED = "placed"
    PAID = "paid"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class ComplaintStatus(StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class VisitChannel(StrEnum):
    STORE = "store"
    WEB = "web"
    APP = "app"
    PHONE = "phone"
    SALES_CALL = "sales_call"


class OrderItem(Frozen):
    """One line of an order. ``category`` and ``brand`` (optional) feed the customer's
    purchase preferences on the card (spend and last purchase per category and per brand)."""

    sku: ShortText
    quantity: int = Field(ge=1, le=100_000)
    unit_price: Money
    category: ShortText | None = None
    brand: ShortText | None = None


class OrderData(Frozen):
    """An order in one of its states. ``amount`` is the order total (for a refund: the amount
    refunded); ``outstanding`` is what the customer still owes on it."""

    order_id: Identifier
    status: OrderStatus
    amount: Money
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    items: list[OrderItem] = Field(default_factory=list, max_length=500)
    outstanding: Money = Decimal(0)
    channel: ShortText | None = None
    # A refund's own id, so that several partial refunds of one order are several events.
    refund_id: Identifier | None = None

    @field_validator("refund_id")
    @classmethod
    def _refund_id_on_refunds(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("status") is not OrderStatus.REFUNDED:
            raise ValueError("only a refund (status refunded) carries a refund_id")
        return v


class ComplaintData(Frozen):
    complaint_id: Identifier
    status: ComplaintStatus
    severity: Severity = Severity.MEDIUM
    category: ShortText | None = None
    text: Annotated[str, StringConstraints(max_length=4000), NoNul] | None = None
    order_id: Identifier | None = None


class VisitData(Frozen):
    visit_id: Identifier
    channel: VisitChannel
    duration_seconds: int | None = Field(None, ge=0, le=7 * 24 * 3600)


class Consent(Frozen):
    email: StrictBool = False
    sms: StrictBool = False
    marketing: StrictBool = False


# Checked with fullmatch: Python's ``$`` also matches before a final newline, a schema's not.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9 ()\-]{4,31}$")
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")


def _text_schema(max_length: int, pattern: str, **more: Any) -> WithJsonSchema:
    # What a field's own validator checks, stated for clients (the validator keeps its
    # message); a NUL is refused by every text field, so the patterns exclude it too.
    return WithJsonSchema({"type": "string", "maxLength": max_length, "pattern": pattern, **more})


# Python's ``\s`` spelled out (the 29 characters str.isspace() knows), and NUL: a schema's
# ``\s`` is ECMA's, which differs.
_NOT_SPACE_AT_NUL = (
    "[^@\\u0000\\t\\n\\u000b\\f\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000]"
)
_EMAIL_SCHEMA = _text_schema(
    254,
    f"^{_NOT_SPACE_AT_NUL}{{1,64}}@{_NOT_SPACE_AT_NUL}+\\.{_NOT_SPACE_AT_NUL}+$",
    examples=["ada@example.com"],
)
_PHONE_SCHEMA = _text_schema(32, _PHONE.pattern, examples=["+33 6 12 34 56 78"])
_LOCALE_SCHEMA = _text_schema(35, _LOCALE.pattern, examples=["en-US"])
# ISO 3166-1 alpha-2 codes as CLDR (babel) lists them, without its groupings and
# pseudo-regions (EU, UN, QO...); XK (Kosovo) is user-assigned but in common use.
_COUNTRIES = frozenset(
    code
    for code in Locale("en").territories
    if isinstance(code, str)
    and len(code) == 2
    and code.isalpha()
    and code not in {"EU", "EZ", "QO", "UN", "XA", "XB", "ZZ"}
)
_COUNTRY_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "enum": sorted(_COUNTRIES),
        "description": "an ISO 3166-1 alpha-2 country code, upper case",
        "examples": ["CN"],
    }
)
_TIMEZONE_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "enum": sorted(_TIMEZONES),
        "description": "an IANA time zone name",
        "examples": ["Europe/Paris"],
    }
)
_ATTRIBUTES_SCHEMA = WithJsonSchema(
    {
        "type": "object",
        "maxProperties": 50,
        "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": NO_NUL_PATTERN},
        "additionalProperties": {"type": "string", "maxLength": 1024, "pattern": NO_NUL_PATTERN},
        "examples": [{"shoe_size": "42"}],
    }
)
# A date (YYYY-MM-DD) whose year is 1900 to 2100.
_BIRTHDAY_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "format": "date",
        "pattern": "^(19[0-9]{2}|20[0-9]{2}|2100)-[0-9]{2}-[0-9]{2}$",
        "examples": ["1990-04-17"],
    }
)


class CustomerData(Frozen):
    """A profile upsert: fields present replace the stored ones; absent fields are kept."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200), NoNul] | None = None
    email: Annotated[str, StringConstraints(max_length=254), NoNul, _EMAIL_SCHEMA] | None = None
    phone: Annotated[str, StringConstraints(max_length=32), NoNul, _PHONE_SCHEMA] | None = None
    birthday: Annotated[date, _BIRTHDAY_SCHEMA] | None = None
    timezone: Annotated[str, StringConstraints(max_length=64), NoNul, _TIMEZONE_SCHEMA] | None = (
        None
    )
    locale: Annotated[str, StringConstraints(max_length=35), NoNul, _LOCALE_SCHEMA] | None = None
    # Whose holidays the customer keeps (outreach's calendars); absent: read off the locale.
    country: Annotated[str, _COUNTRY_SCHEMA] | None = None
    # Where the customer would rather be reached, for rules that send by `preferred`.
    preferred_channel: Literal["email", "sms"] | None = None
    consent: Consent | None = None
    tags: list[ShortText] | None = Field(None, max_length=50)
    member_tier: ShortText | None = None
    attributes: (
        Annotated[
            dict[
                Annotated[str, StringConstraints(min_length=1, max_length=64), NoNul],
                Annotated[str, StringConstraints(max_length=1024), NoNul],
            ],
            _ATTRIBUTES_SCHEMA,
        ]
        | None
    ) = Field(None, max_length=50)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.fullmatch(v):
            raise ValueError("not an email address")
        return v

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is not None and not _PHONE.fullmatch(v):
            raise ValueError("not a phone number (digits, spaces, ( ) - and a leading +)")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        if v is not None and v not in _TIMEZONES:
            raise ValueError("not an IANA time zone name, e.g. Europe/Paris")
        return v

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str | None) -> str | None:
        if v is not None and not _LOCALE.fullmatch(v):
            raise ValueError("not a locale tag, e.g. en-US")
        return v

    @field_validator("country")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is not None and v not in _COUNTRIES:
            raise ValueError("not an ISO 3166-1 alpha-2 country code, e.g. CN")
        return v

    @field_validator("birthday")
    @classmethod
    def _birthday(cls, v: date | None) -> date | None:
        if v is not None and not (1900 <= v.year <= 2100):
            raise ValueError("birthday year must be between 1900 and 2100")
        return v

    @model_serializer(mode="wrap")
    def _only_sent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An upsert: a field the client did not send must stay absent downstream, not
        # become null (which would erase the stored value).
        dumped: dict[str, Any] = handler(self)
        return {k: v for k, v in dumped.items() if k in self.model_fields_set}

    def zone(self) -> ZoneInfo | None:
        return ZoneInfo(self.timezone) if self.timezone else None


class ErasureData(Frozen):
    """The right to erasure exercised: everything held on the customer is to be forgotten.

    The tombstone carries nothing personal; ``requested_by`` names the API key that asked."""

    requested_by: ShortText


class OptOutData(Frozen):
    """A customer's own unsubscribe, or its lifting, as outreach learned it: ``how`` says by
    what — ``link`` (the customer's own signed link) or ``operator`` (an ``ops:write`` key,
    whose reason is in the audit log)."""

    how: Literal["link", "operator"]


class TagData(Frozen):
    """Tags a rule set on the customer (``add``) or took off (``remove``), by the rule
    ``rule_id``. A tag in neither list keeps whatever the latest word about it was."""

    add: list[ShortText] = Field(default_factory=list, max_length=50)
    remove: list[ShortText] = Field(default_factory=list, max_length=50)
    rule_id: ShortText
    # How many tag changes led to this one: 0 when an order, a stage or a schedule moved the
    # rule; one more than its cause's when the rule fired on a tag change (a chain has a bound).
    depth: int = Field(0, ge=0, le=100)

    @model_validator(mode="after")
    def _apart(self) -> TagData:
        both = set(self.add) & set(self.remove)
        if both:
            raise ValueError(f"a tag is added or removed, not both: {sorted(both)}")
        return self


class MergeData(Frozen):
    """Customers found to be one person: each id in ``merged_ids`` is the event's customer (the
    survivor) from now on. ``actor`` names the API key that asked, or ``auto:<identifier kind>``
    when a verified identifier matched; ``reason`` is the operator's words or the evidence."""

    merged_ids: list[Identifier] = Field(min_length=1, max_length=100)
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500), NoNul]
    actor: ShortText


class CustomerIdentifier(Frozen):
    """One way a channel knows a person: an ``email``, a ``phone`` (E.164 once ingest has
    normalised it), or an ``external`` id that a ``source`` (``web``, ``app``, ``store``,
    ``marketplace``, or any name a shop uses) gave them. ``verified`` says the backend vouches
    for it (a confirmed email, a phone that answered a code)."""

    kind: Literal["email", "phone", "external"]
    value: Annotated[str, StringConstraints(min_length=1, max_length=254), NoNul]
    source: ShortText | None = None
    verified: StrictBool = False


Payload = (
    OrderData
    | ComplaintData
    | VisitData
    | CustomerData
    | ErasureData
    | OptOutData
    | MergeData
    | TagData
)

PAYLOAD_OF: dict[EventType, type[Frozen]] = {
    EventType.ORDER_PLACED: OrderData,
    EventType.ORDER_PAID: OrderData,
    EventType.ORDER_REFUNDED: OrderData,
    EventType.ORDER_CANCELLED: OrderData,
    EventType.COMPLAINT_OPENED: ComplaintData,
    EventType.COMPLAINT_RESOLVED: ComplaintData,
    EventType.VISIT_RECORDED: VisitData,
    EventType.CUSTOMER_UPDATED: CustomerData,
    EventType.CUSTOMER_ERASED: ErasureData,
    EventType.CUSTOMER_UNSUBSCRIBED: OptOutData,
    EventType.CUSTOMER_RESUBSCRIBED: OptOutData,
    EventType.CUSTOMER_MERGED: MergeData,
    EventType.CUSTOMER_TAGGED: TagData,
}


class Envelope(Frozen):
    """One customer event as it travels on Kafka (value: this model as JSON; key: customer_id)."""

    event_id: Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
    event_type: EventType
    schema_version: Literal[1] = 1
    customer_id: Identifier
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    source: ShortText
    data: Payload
    # The identifiers the backend sent with the event (normalised by ingest).
    identifiers: list[CustomerIdentifier] = Field(default_factory=list, max_length=20)
    # The customer id the backend addressed, when ingest resolved it to a merge survivor
    # (``customer_id``); kept for audit.
    addressed_to: Identifier | None = None

    @model_validator(mode="before")
    @classmethod
    def _payload_by_type(cls, raw: Any, info: ValidationInfo) -> Any:
        # Parse ``data`` as the payload its event type names, so a union never guesses.
        if isinstance(raw, dict) and isinstance(raw.get("data"), dict):
            try:
                payload_type = PAYLOAD_OF[EventType(str(raw.get("event_type")))]
            except ValueError:
                return raw  # the event_type error is reported by field validation
            lenient = info.context is LENIENT
            raw = {
                **raw,
                "data": payload_type.model_validate(
                    raw["data"], extra="ignore" if lenient else None
                ),
            }
        return raw

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        """An event as a consumer reads it: fields it does not know are ignored."""
        return cls.model_validate_json(raw, extra="ignore", context=LENIENT)


def event_type_for(kind: str, status: str | None) -> EventType:
    """The event type of an ingest item: ``order`` + ``paid`` → ``order.paid``."""
    if kind == "order":
        return EventType(f"order.{status}")
    if kind == "complaint":
        return EventType(f"complaint.{status}")
    if kind == "visit":
        return EventType.VISIT_RECORDED
    if kind == "customer":
        return EventType.CUSTOMER_UPDATED
    raise ValueError(f"unknown event kind {kind!r}")
