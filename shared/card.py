"""The score card: what scoring says about a customer at a moment (``as_of``).

This is the contract between scoring and its readers. Scoring's read API answers with it
(``GET /v1/customers/{id}``), and every change on ``crm.customer-changes.v1`` carries it as
JSON (:class:`shared.changes.Change`), which is how outreach knows a customer. Scoring
computes it (``services.scoring.core.card``); nothing here depends on how.

Conventions of the JSON form:

- Money (``Decimal``) is a decimal string, exact, net of refunds, written the same way
  everywhere (:func:`money_text`: at least two decimals, no trailing zeros past them —
  ``"70.00"``, ``"70.125"``); cancelled orders count nowhere.
- Times are UTC ISO 8601 with ``Z`` — every instant, ``stage_since`` included (the UTC
  midnight the stage was entered); days (``date``: a birthday) are UTC days.
- Windows in a field's name (``spend_30d``, ``expected_orders_90d``, ``clv_365d``,
  ``visits.last_30d``) are trailing windows ending at ``as_of``, and are fixed: they are not
  settings.
- A section or field that needs the population (the whole customer base, refitted on a
  schedule) is null until the population has been fitted: ``rfm``, ``prediction``'s model
  figures, ``tier`` and ``strategy``. A prospect (no purchase yet) never has ``rfm``,
  ``prediction`` or ``strategy``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from shared.events import Severity

_CENT = Decimal("0.01")


def money_text(amount: Decimal) -> str:
    """An amount as every API and change writes it: at least two decimals, and no trailing
    zeros past them (``"70.00"``, ``"70.125"``, ``"1200.00"``), never an exponent."""
    trimmed = amount.normalize()
    exponent = trimmed.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        trimmed = amount.quantize(_CENT)
    return format(trimmed, "f")


Money = Annotated[Decimal, PlainSerializer(money_text, return_type=str, when_used="json")]


def _midnight_of_a_day(value: object) -> object:
    # A bare day ("2026-10-01", or a date) is that day's UTC midnight: every instant on the
    # card is a datetime, and changes written before stage_since was one still read.
    if isinstance(value, str) and len(value) == 10:
        return f"{value}T00:00:00+00:00"
    if isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


class Stage(StrEnum):
    """Where a customer is in their lifecycle, from their purchase days and how long they
    have been silent measured against their purchase rhythm: ``prospect`` (no purchase yet),
    ``new`` (one purchase day), ``growing`` (a repeat buyer), ``mature`` (a regular buyer on
    rhythm), ``declining`` and ``churned`` (silent for longer than their rhythm allows),
    ``reactivated`` (bought again after churning; one who buys while declining is back in
    the stage that purchase gives them)."""

    PROSPECT = "prospect"
    NEW = "new"
    GROWING = "growing"
    MATURE = "mature"
    DECLINING = "declining"
    CHURNED = "churned"
    REACTIVATED = "reactivated"


class Tier(StrEnum):
    """The customer's value tier (80/20): where their ``value_score`` falls among the
    population's, ``key`` for the top share, ``low`` for the bottom share, ``regular`` in
    between."""

    KEY = "key"
    REGULAR = "regular"
    LOW = "low"


class Strategy(StrEnum):
    """The quadrant of current value (``value_score``) and potential (``prediction.clv_365d``),
    each high when at or above the population median."""

    DEVELOP = "develop"  # high value, high potential
    MAINTAIN = "maintain"  # high value, low potential
    NURTURE = "nurture"  # low value, high potential
    REDUCE_COST = "reduce_cost"  # low value, low potential


class Segment(StrEnum):
    """The RFM segment of the customer's recency, frequency and monetary scores."""

    CHAMPIONS = "champions"
    LOYAL = "loyal"
    POTENTIAL_LOYALIST = "potential_loyalist"
    NEW = "new"
    PROMISING = "promising"
    NEED_ATTENTION = "need_attention"
    ABOUT_TO_SLEEP = "about_to_sleep"
    AT_RISK = "at_risk"
    CANNOT_LOSE = "cannot_lose"
    HIBERNATING = "hibernating"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Unsubscribed(_Model):
    """The customer's own unsubscribe: when, and how (``link``: the link in a message)."""

    at: datetime
    how: str


class Consent(_Model):
    """What the customer agreed to be contacted by; no until they say yes. While the
    customer is ``unsubscribed`` (by their own hand, until they or an operator lift it),
    ``marketing`` is false whatever clients wrote."""

    email: bool = False
    sms: bool = False
    marketing: bool = False
    unsubscribed: Unsubscribed | None = None


class Profile(_Model):
    """Who the customer is, as clients wrote it: each field is the latest write of it known,
    whatever ``as_of`` (null or empty until written)."""

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    birthday: date | None = None
    timezone: str | None = None  # an IANA name, e.g. "Europe/Paris"
    locale: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2, e.g. "CN"
    preferred_channel: str | None = None  # "email" or "sms": for rules that say `preferred`
    consent: Consent = Consent()
    tags: list[str] = Field(default_factory=list)
    # The loyalty tier in force (not scoring's value ``tier``): the one the client set, or
    # else the one scoring computes from the shop's membership tiers (see ``Card.membership``).
    member_tier: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)  # free-form, from clients


class Value(_Model):
    """Money net of refunds; cancelled orders do not exist here."""

    lifetime_spend: Money
    spend_30d: Money
    spend_90d: Money
    spend_365d: Money
    orders: int  # live (not cancelled) orders
    average_order_value: Money | None  # null without orders
    first_order_at: datetime | None
    last_order_at: datetime | None
    purchase_interval_days: float | None  # median gap between purchase days
    outstanding: Money  # still owed on live orders


class Rfm(_Model):
    """Recency, frequency and monetary scores, 1 to 5 by quintiles of the population's buyers
    (fewer days since the last purchase, more orders and more spend score higher), and the
    segment they place the customer in."""

    recency: int
    frequency: int
    monetary: int
    segment: Segment


# The windows (days after ``as_of``) ``Prediction.p_order`` forecasts, its keys as strings.
P_ORDER_DAYS = (7, 30, 90)


class Prediction(_Model):
    """BG/NBD and Gamma-Gamma on daily periods; money figures need Gamma-Gamma parameters."""

    frequency: int  # repeat purchase days (x)
    recency_days: float  # first to last purchase day (t_x)
    age_days: float  # first purchase day to as_of (T)
    # Null until the population is first fitted, and for a customer without a repeat
    # purchase day (frequency 0): BG/NBD judges that a customer has left from the gaps
    # between repeat purchases, so it would give them 1 however long their silence.
    p_alive: float | None
    expected_orders_90d: float | None
    expected_order_value: float | None
    clv_365d: float | None
    # The probability of at least one order within 7, 30 and 90 days after as_of, keyed by
    # the days as strings ({"7": 0.04, "30": 0.15, "90": 0.33}); null until the population
    # is first fitted (and on changes written before it existed). A one-time buyer has it.
    p_order: dict[str, float] | None = None


class OpenBySeverity(_Model):
    """Open complaints counted by severity (one recorded before severities were kept counts
    in none)."""

    low: int = 0
    medium: int = 0
    high: int = 0


class OpenComplaint(_Model):
    """One open complaint: what it is about and when it falls due."""

    complaint_id: str
    severity: Severity | None  # null only when recorded before severities were kept
    category: str | None
    opened_at: datetime  # when it was raised (its earliest event)
    due_at: datetime  # opened_at + the response-time target of the tier it is held to


OPEN_COMPLAINTS_LISTED = 10


class Complaints(_Model):
    """Complaints raised up to ``as_of``."""

    open: int  # whose latest status is opened
    total: int
    last_at: datetime | None  # when the most recent complaint was raised
    open_by_severity: OpenBySeverity = OpenBySeverity()
    overdue: int = 0  # open past their due_at
    # The oldest open complaints, oldest first, at most OPEN_COMPLAINTS_LISTED of them.
    open_items: list[OpenComplaint] = Field(default_factory=list)


class Visits(_Model):
    """Visits recorded up to ``as_of``."""

    last_30d: int
    total: int
    last_at: datetime | None


class Bought(_Model):
    """What a customer bought in one category (or of one brand): net spend (each order's net
    shared among its lines by their value, so refunds subtract) and the last purchase."""

    spend: Money
    last_at: datetime  # the moment of the latest live order with such an item


class LastItem(_Model):
    """One line of one of the customer's latest orders."""

    sku: str
    category: str | None = None
    brand: str | None = None
    quantity: int
    unit_price: Money
    bought_at: datetime


# How many names the top lists hold, and how many lines ``last_items`` keeps.
PREFERENCES_TOP = 5
LAST_ITEMS = 10


class Preferences(_Model):
    """What the customer buys, from the ``category`` and ``brand`` of their live orders' items
    up to ``as_of`` (cancelled orders, and orders refunded in full, count nowhere). Every
    category and brand is listed (a shop has few); the top lists hold at most
    :data:`PREFERENCES_TOP` names, ties broken by name."""

    categories: dict[str, Bought] = Field(default_factory=dict)
    brands: dict[str, Bought] = Field(default_factory=dict)
    top_categories_by_spend: list[str] = Field(default_factory=list)
    top_categories_by_recency: list[str] = Field(default_factory=list)
    # The lines of the latest orders, newest order first, at most LAST_ITEMS of them.
    last_items: list[LastItem] = Field(default_factory=list)


class NextMembershipTier(_Model):
    """The tier above the customer's and what is missing to reach it: either suffices
    (null: that tier has no such threshold)."""

    tier: str
    missing_spend: Money | None
    missing_orders: int | None


class Membership(_Model):
    """The customer's membership tier (``profile.member_tier``) and how it was reached.

    ``source: backend``: the tier the client set wins (``since`` is when it was last written);
    ``computed``: the highest tier of the shop's configuration whose spend or order threshold
    the last 365 days reach. ``since`` is when the tier in force was entered (null: never had
    one), ``previous`` the tier left then and ``direction`` whether that was an upgrade or a
    downgrade — an episode rules trigger on once, as they do on a stage."""

    tier: str | None
    source: Literal["backend", "computed"]
    since: datetime | None
    previous: str | None
    direction: Literal["upgrade", "downgrade"] | None
    basis: Literal["spend_365d", "orders_365d"] | None  # what reached the computed tier
    spend_365d: Money
    orders_365d: int
    next: NextMembershipTier | None  # null: the top tier, or the backend's


class Card(_Model):
    """A customer's score card at ``as_of`` (the read API and the change stream carry it)."""

    customer_id: str
    as_of: datetime
    profile: Profile
    # Every tag of the customer: the backend's own (``profile.tags``, which the backend
    # replaces whole) and then those rules set (``rule_tags``, facts of their own that only a
    # rule takes off). Conditions' ``has_tag`` and the customer list's ``tag`` read this.
    tags: list[str] = Field(default_factory=list)
    rule_tags: list[str] = Field(default_factory=list)
    value: Value
    value_score: float  # the composite that tier and strategy rank on
    rfm: Rfm | None
    prediction: Prediction | None
    tier: Tier | None
    strategy: Strategy | None
    stage: Stage
    # The UTC midnight the stage was entered (stages move at midnights); null for prospects.
    # Changes written before it was an instant carry the day alone: read as its midnight.
    stage_since: Annotated[datetime | None, BeforeValidator(_midnight_of_a_day)]
    # The stage the customer left to enter this one; null for prospects.
    previous_stage: Stage | None = None
    next_transition_at: datetime | None  # when time alone would move the stage
    complaints: Complaints
    visits: Visits
    updated_at: datetime | None  # the newest event time applied, up to as_of
    # Empty on changes written before it existed.
    preferences: Preferences = Preferences()
    # Null while the shop configures no membership tiers and the client set no member_tier
    # (and on changes written before it existed).
    membership: Membership | None = None

    @model_validator(mode="before")
    @classmethod
    def _tags_of_older_cards(cls, raw: Any) -> Any:
        # A card written before rules could tag has the backend's tags alone.
        if isinstance(raw, dict) and "tags" not in raw:
            profile = raw.get("profile")
            own = profile.get("tags") if isinstance(profile, dict) else getattr(profile, "tags", [])
            return {**raw, "tags": list(own or [])}
        return raw
