"""The contact policy: whether a matched action may reach the customer now.

:func:`decide` is a pure function of the card, the candidate action, the customer's contact
history, their suppression status, the :class:`Policy` and ``now``. Checks run in this order,
and the first that bites decides:

1. **suppressed** (suppression list or unsubscribe): suppress, whatever the kind;
2. **consent**: email needs ``consent.email``, SMS ``consent.sms``; a kind that is not
   transactional also needs ``consent.marketing`` on any channel (when
   ``marketing_consent_required``);
3. **reduce cost**: a customer whose card's strategy is ``reduce_cost`` receives no
   promotional kind (when ``reduce_cost_no_promotions``): suppress with reason
   ``reduce_cost`` — the strategy is a policy, not a message;
4. **limits** of the rule (``once``, ``max_per_customer``, ``cooldown_days``,
   ``not_contacted_days``): suppress with reason ``limit``;
5. **open complaint**: a promotional kind is held, to be re-evaluated once it is resolved;
6. **balance** (when ``balance`` is set): a promotional kind waits until the customer's
   promotions are in proportion with the service they received (:func:`balance_frees_at`):
   deferred with reason ``balance``;
7. **frequency cap**: at most ``count`` non-transactional messages per ``days`` days; an
   action the cap stops is deferred to the first instant the cap allows (higher priority
   first), when that instant is within its kind's ``cap_defer_days``, else suppressed with
   reason ``frequency_cap`` (a greeting belongs to its day: it is never deferred). After a
   balance deferral, the cap is judged at the instant the balance allows;
8. **quiet hours**: deferred to the end of the quiet period in the customer's zone (a
   deferral, never a drop).

Transactional kinds (apology and care by default) skip 2's marketing consent, 6, 7 and 8, and
neither consume nor count against the cap. The cap is finally enforced by the caller in the
database; these functions give the decision for a given history, so previews and backtests
use the same code as the live path.

A slot of the cap held by an action still waiting to go out (deferred past quiet hours, say)
is not yet a contact: :func:`yield_slots` gives it to an action of higher priority the cap
would stop or push back, decided before it goes out; the waiting one waits for the cap's next
free slot (within its kind's horizon) or is suppressed, with ``lower_priority``. A purchase
follow-up is not lost because two announcements of a broadcast wait for the morning.

A rule's ``max_per_day`` is a budget over all its customers, not a check of one: the caller
counts what the rule used of its day in the ledger and :func:`decide_all` takes from what is
left (reason ``daily_limit`` when nothing is).

A contact history holds ``(instant, kind, rule_id)`` entries: ``kind`` is the action's kind,
``team`` for an alert to the shop's people, or ``control`` for an action held out as a control
arm (decided, never sent). The rule's own limits count every entry of the rule, control ones
included, so both arms get the same number of decisions; nothing else counts ``team`` or
``control`` entries — nobody was contacted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from services.outreach.core.arms import Arm, arm_of
from services.outreach.core.calendars import Calendars
from services.outreach.core.rules import ActionKind, Channel, Limits, Match, Rule, channel_for
from services.outreach.core.schedules import LocalTime, ScheduleContext, local_instant, zone_of
from shared.card import Strategy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _in_order(kinds: frozenset[str]) -> list[str]:
    return sorted(kinds)


# A set of action kinds, written in alphabetical order: the same policy reads the same twice
# (a set's own order changes from one process to the next).
Kinds = Annotated[frozenset[ActionKind], PlainSerializer(_in_order, return_type=list[str])]


class FrequencyCap(_Strict):
    count: int = Field(2, ge=1, le=100)
    days: int = Field(7, ge=1, le=365)


class QuietHours(_Strict):
    """Local wall times; ``start`` after ``end`` spans midnight (21:00 to 08:00)."""

    start: LocalTime = time(21)
    end: LocalTime = time(8)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("start and end must differ (omit quiet_hours to have none)")
        return self


def _each_once(v: object) -> object:
    if isinstance(v, list) and all(isinstance(k, str) for k in v) and len(set(v)) != len(v):
        raise ValueError("list each kind once")
    return v


class Balance(_Strict):
    """Value and care in proportion: a promotional contact is allowed at an instant ``t``
    while the customer's promotional contacts in the ``days`` days up to ``t`` are fewer than
    ``promotions_per_service * (service contacts in those days + 1)`` — the ``+ 1`` lets a
    first promotion through before any service. Service contacts are the ``service_kinds``
    sent (or on their way) to the customer; alerts to the team and control-arm decisions never
    count. A promotion over the ratio is deferred to the first instant the ratio allows; a
    service contact decided for the customer meanwhile has it decided again."""

    promotions_per_service: int = Field(2, ge=1, le=100)
    days: int = Field(30, ge=1, le=365)
    service_kinds: Kinds = frozenset({"greeting", "follow_up", "care"})

    @field_validator("service_kinds", mode="before")
    @classmethod
    def _unique(cls, v: object) -> object:
        return _each_once(v)


# At most 1000, at most 6 decimals, plain digits: what the schema states is what is accepted.
_COST_PATTERN = r"^(1000(\.0{1,6})?|[0-9]{1,3}(\.[0-9]{1,6})?)$"


def _cost_text(value: object) -> object:
    # A cost is money: a decimal string, never a binary float (0.1 is not 0.1).
    if isinstance(value, str) and not re.fullmatch(_COST_PATTERN, value):
        raise ValueError('a decimal string from 0 to 1000 with at most 6 decimals, e.g. "0.002"')
    if not isinstance(value, str | Decimal):
        raise ValueError('a decimal string in the base currency, e.g. "0.002"')
    return value


Cost = Annotated[
    Decimal,
    BeforeValidator(_cost_text),
    Field(ge=0, le=1000, max_digits=12, decimal_places=6),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _COST_PATTERN,
            "description": "a decimal in the base currency, at most 1000, 6 decimals",
            "examples": ["0.002"],
        }
    ),
]


class ContactCost(_Strict):
    """What one contact costs by channel, in the base currency (the outcomes report multiplies
    the contacts a strategy saves by it)."""

    email: Cost = Decimal("0.002")
    webhook: Cost = Decimal("0.01")
    sms: Cost = Decimal("0.05")

    def of(self, channel: str) -> Decimal:
        """The cost of one contact through ``channel`` (0 for a channel it does not know)."""
        cost = getattr(self, channel, None)
        return cost if isinstance(cost, Decimal) else Decimal(0)


_CAP_DEFER_DAYS: dict[ActionKind, int] = {
    "follow_up": 3,
    "recall": 7,
    "winback": 14,
    "announcement": 7,
}


AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
AttributeType = Literal["string", "number", "date"]


class Policy(_Strict):
    """Global contact policy settings."""

    frequency_cap: FrequencyCap | None = FrequencyCap()
    quiet_hours: QuietHours | None = QuietHours()
    transactional_kinds: Kinds = frozenset({"apology", "care"})
    promotional_kinds: Kinds = frozenset({"recall", "winback", "announcement"})
    # The kinds a customer of the global control group never receives (the share of customers
    # in it is the setting TEND_OUTREACH_GLOBAL_CONTROL_PERCENT): their actions are decided
    # and recorded with status `control`; a transactional kind always goes, even if listed
    # here (see `held_out_kinds`).
    global_control_kinds: Kinds = frozenset({"greeting", "recall", "winback", "announcement"})
    # Customers whose strategy is `reduce_cost` receive no promotional kind.
    reduce_cost_no_promotions: StrictBool = True
    contact_cost: ContactCost = ContactCost()
    # null: promotions are not weighed against service contacts.
    balance: Balance | None = None
    marketing_consent_required: StrictBool = True
    default_timezone: str = "UTC"
    # The holiday calendars customers keep, and the calendar of those who name none
    # (schedules with `calendar: customer`; see services/outreach/core/calendars.py).
    calendars: Calendars = Calendars()
    # The types of the profile attributes the shop uses: an attribute declared a `date` can
    # drive an `anniversary` or `days_after` schedule (`since: profile.attributes.<name>`).
    attribute_types: dict[AttributeName, AttributeType] = Field(default_factory=dict, max_length=50)
    # How long an action the frequency cap stops may wait for a free slot, by kind (days);
    # a kind not listed is suppressed at once.
    cap_defer_days: dict[ActionKind, Annotated[int, Field(ge=0, le=90)]] = Field(
        default_factory=lambda: dict(_CAP_DEFER_DAYS)
    )

    @field_validator("cap_defer_days", mode="before")
    @classmethod
    def _days_not_booleans(cls, v: object) -> object:
        # JSON's true is not a number of days (pydantic would read it as 1).
        if isinstance(v, dict) and any(isinstance(d, bool) for d in v.values()):
            raise ValueError("each kind's days are a number, not true or false")
        return v

    @property
    def schedule_context(self) -> ScheduleContext:
        """What schedules read of the policy: default zone, calendars, date attributes."""
        dated = frozenset(name for name, kind in self.attribute_types.items() if kind == "date")
        return ScheduleContext(self.default_timezone, self.calendars, dated)

    @property
    def held_out_kinds(self) -> frozenset[str]:
        """The kinds the global control group does not receive: ``global_control_kinds``
        but never a transactional kind (a stored policy that lists one still loads)."""
        return frozenset(self.global_control_kinds - self.transactional_kinds)

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ValueError, KeyError):
            raise ValueError("not an IANA time zone name, e.g. Europe/Paris") from None
        return v

    @field_validator(
        "transactional_kinds", "promotional_kinds", "global_control_kinds", mode="before"
    )
    @classmethod
    def _unique(cls, v: object) -> object:
        return _each_once(v)

    @model_validator(mode="after")
    def _disjoint(self) -> Policy:
        both = self.transactional_kinds & self.promotional_kinds
        if both:
            raise ValueError(f"kinds cannot be transactional and promotional: {sorted(both)}")
        if self.balance is not None:
            served = self.balance.service_kinds & self.promotional_kinds
            if served:
                raise ValueError(
                    f"balance: kinds cannot be service and promotional: {sorted(served)}"
                )
        return self


NO_LIMITS = Limits()
REDUCE_COST = Strategy.REDUCE_COST.value


@dataclass(frozen=True, slots=True)
class Candidate:
    """An action that a rule wants to take for a customer."""

    rule_id: str
    kind: ActionKind
    channel: Channel
    priority: int = 0
    limits: Limits = NO_LIMITS
    audience: str = "customer"  # or "team": an alert to the shop's people, not a contact
    # In a control arm (the rule's, or the global control group): decided like the others,
    # never sent, so it takes no contact's place in the history.
    held_out: bool = False

    @classmethod
    def of(cls, rule: Rule | Match, *, held_out: bool = False) -> Candidate:
        """The candidate a rule (or a match of it) puts forward."""
        r = rule.rule if isinstance(rule, Match) else rule
        a = r.action
        return cls(r.id, a.kind, a.channel, r.priority, r.limits, a.audience, held_out)

    @property
    def contact_kind(self) -> str:
        """How it shows in a contact history: its kind, ``team`` or ``control`` (neither is
        a contact)."""
        if self.audience == TEAM:
            return TEAM
        return CONTROL if self.held_out else self.kind


# The kind a team alert has in a contact history: neither capped nor a contact.
TEAM = "team"
# The kind of a control-arm decision in a contact history: it counts for its rule's own
# limits only (nobody was contacted).
CONTROL = "control"
_NOT_CONTACTS = frozenset({TEAM, CONTROL})


class Outcome(StrEnum):
    SEND = "send"
    DEFER = "defer"
    HOLD = "hold"
    SUPPRESS = "suppress"


class Reason(StrEnum):
    NO_CONSENT = "no_consent"
    SUPPRESSED = "suppressed"
    FREQUENCY_CAP = "frequency_cap"
    LIMIT = "limit"
    LOWER_PRIORITY = "lower_priority"
    OPEN_COMPLAINT = "open_complaint"  # the reason of a hold
    QUIET_HOURS = "quiet_hours"  # the reason of a deferral
    REDUCE_COST = "reduce_cost"  # the customer's strategy: no promotions
    BALANCE = "balance"  # a deferral: promotions out of proportion with service
    DAILY_LIMIT = "daily_limit"  # the rule's own budget for the day is spent


@dataclass(frozen=True, slots=True)
class Decision:
    """``send`` now; ``defer`` until ``until`` (UTC); ``hold`` until the complaint is resolved;
    or ``suppress`` for ``reason``. ``detail`` is for people reading logs and previews."""

    outcome: Outcome
    reason: Reason | None = None
    until: datetime | None = None
    detail: str = ""

    @property
    def goes_out(self) -> bool:
        """Sent now or later: it takes a frequency-cap slot."""
        return self.outcome in (Outcome.SEND, Outcome.DEFER)


SEND = Decision(Outcome.SEND)


def standing_refusal(
    card: Mapping[str, Any], kind: str, channel: str, policy: Policy
) -> Decision | None:
    """The suppression a customer's own standing makes of an action to them of ``kind`` by
    ``channel``, whenever it is decided: their consent to the channel and to marketing, and
    a reduce-cost strategy's promotions. None when their standing lets it through (the
    suppression list, the rule's limits, an open complaint, the cap and quiet hours are
    judged when it is decided)."""
    transactional = kind in policy.transactional_kinds
    profile = card.get("profile") or {}
    consent = profile.get("consent") or {}
    channel = channel_for(channel, card)
    if channel == "email" and consent.get("email") is not True:
        return Decision(Outcome.SUPPRESS, Reason.NO_CONSENT, detail="no email consent")
    if channel == "sms" and consent.get("sms") is not True:
        return Decision(Outcome.SUPPRESS, Reason.NO_CONSENT, detail="no SMS consent")
    marketing = consent.get("marketing") is True
    if not transactional and policy.marketing_consent_required and not marketing:
        return Decision(Outcome.SUPPRESS, Reason.NO_CONSENT, detail="no marketing consent")
    promotional = kind in policy.promotional_kinds
    if promotional and policy.reduce_cost_no_promotions and card.get("strategy") == REDUCE_COST:
        detail = "the customer's strategy is reduce_cost: no promotions"
        return Decision(Outcome.SUPPRESS, Reason.REDUCE_COST, detail=detail)
    return None


def decide(
    card: Mapping[str, Any],
    candidate: Candidate,
    history: Sequence[tuple[datetime, str, str]],
    *,
    suppressed: bool,
    policy: Policy,
    now: datetime,
) -> Decision:
    """The decision for one candidate; see the module docstring for the order of checks.

    ``history`` must hold every contact within the longest window in play (the cap, the
    rule's cooldown and not-contacted days; see :func:`history_days`) and, when the rule has
    ``once`` or ``max_per_customer``, every contact the rule ever made with this customer.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if candidate.audience == TEAM:
        # An alert to the shop's people: only the rule's own limits apply.
        over = _over_limit(candidate, history, now)
        return Decision(Outcome.SUPPRESS, Reason.LIMIT, detail=over) if over else SEND
    if suppressed:
        return Decision(Outcome.SUPPRESS, Reason.SUPPRESSED, detail="customer is suppressed")
    refused = standing_refusal(card, candidate.kind, candidate.channel, policy)
    if refused is not None:
        return refused
    transactional = candidate.kind in policy.transactional_kinds
    promotional = candidate.kind in policy.promotional_kinds
    over = _over_limit(candidate, history, now)
    if over:
        return Decision(Outcome.SUPPRESS, Reason.LIMIT, detail=over)
    open_complaints = (card.get("complaints") or {}).get("open") or 0
    if open_complaints > 0 and promotional:
        return Decision(Outcome.HOLD, Reason.OPEN_COMPLAINT, detail="a complaint is open")
    if transactional:
        return SEND
    # The earliest instant it may go out, and why it waits until then.
    earliest, why, detail = now, None, ""
    balance = policy.balance
    if balance is not None and promotional:
        allowed = balance_frees_at(history, balance, policy.promotional_kinds, now)
        if allowed > now:
            earliest, why = allowed, Reason.BALANCE
            detail = (
                f"promotions out of proportion with service ({balance.promotions_per_service} "
                f"per service contact over {balance.days} days)"
            )
    cap = policy.frequency_cap
    if cap is not None:
        exempt = {*policy.transactional_kinds, *_NOT_CONTACTS}
        counted = sorted(at for at, kind, _ in history if kind not in exempt)
        free = cap_frees_at(counted, cap, earliest)
        if free > earliest:
            horizon = timedelta(days=policy.cap_defer_days.get(candidate.kind, 0))
            if free - earliest > horizon:
                since = now - timedelta(days=cap.days)
                used = sum(1 for at in counted if since < at <= now)
                waiting = sum(1 for at in counted if at > now)
                detail = f"{used} messages in the last {cap.days} days"
                if waiting:
                    detail += f" and {waiting} waiting to go out"
                detail += f" (cap {cap.count})"
                return Decision(Outcome.SUPPRESS, Reason.FREQUENCY_CAP, detail=detail)
            earliest = free
            if why is None:
                why = Reason.FREQUENCY_CAP
                detail = f"the frequency cap ({cap.count} per {cap.days} days) allows it then"
    if why is not None:
        slot = earliest
        if policy.quiet_hours is not None:
            zone = zone_of(card, policy.default_timezone)
            slot = quiet_until(policy.quiet_hours, zone, earliest) or earliest
        return Decision(Outcome.DEFER, why, slot, detail)
    if policy.quiet_hours is not None:
        zone = zone_of(card, policy.default_timezone)
        until = quiet_until(policy.quiet_hours, zone, now)
        if until is not None:
            return Decision(Outcome.DEFER, Reason.QUIET_HOURS, until, "quiet hours")
    return SEND


def balance_frees_at(
    history: Sequence[tuple[datetime, str, str]],
    balance: Balance,
    promotional: frozenset[str],
    now: datetime,
) -> datetime:
    """The first instant from ``now`` at which one more promotion keeps the balance (see
    :class:`Balance`): ``now`` itself when it does. The rule is judged at that instant over the
    ``days`` before it, counting the contacts sent and those already planned up to it; the
    instants where the answer can change are ``now``, each promotion leaving the window and
    each planned service contact arriving, so it is found among them (once every promotion
    has left the window, one is always allowed)."""
    span = timedelta(days=balance.days)
    promos = [at for at, kind, _ in history if kind in promotional]
    services = [at for at, kind, _ in history if kind in balance.service_kinds]

    def allowed(t: datetime) -> bool:
        p = sum(1 for at in promos if t - span < at <= t)
        s = sum(1 for at in services if t - span < at <= t)
        return p < balance.promotions_per_service * (s + 1)

    moments = sorted(
        {
            now,
            *(at + span for at in promos if at + span > now),
            *(at for at in services if at > now),
        }
    )
    for t in moments:
        if allowed(t):
            return t
    return moments[-1]  # not reached: at the last moment no promotion is in the window


def cap_frees_at(counted: Sequence[datetime], cap: FrequencyCap, now: datetime) -> datetime:
    """The first instant from ``now`` at which one more message keeps every window of the
    cap within its count, given the messages ``counted`` (sent, and deferred to their
    instant, sorted): ``now`` itself when there is room."""
    days = timedelta(days=cap.days)
    candidates = sorted({now, *(at + days for at in counted if at + days > now)})
    for at in candidates:
        ends = [at, *(t for t in counted if t > at)]
        if all(
            sum(1 for t in counted if end - days < t <= end) + 1 <= cap.count
            for end in ends
            if end - days < at <= end
        ):
            return at
    return candidates[-1]


def _over_limit(
    candidate: Candidate, history: Sequence[tuple[datetime, str, str]], now: datetime
) -> str | None:
    limits = candidate.limits
    own = [at for at, _, rule_id in history if rule_id == candidate.rule_id]
    # The rule's control-arm decisions count like its sent ones: both arms are decided alike.
    if limits.once and own:
        return "once: already decided"
    if limits.max_per_customer is not None and len(own) >= limits.max_per_customer:
        return f"max_per_customer: {len(own)} decided"
    if limits.cooldown_days is not None:
        since = now - timedelta(days=limits.cooldown_days)
        if any(at > since for at in own):
            return f"cooldown_days: decided within {limits.cooldown_days} days"
    if limits.not_contacted_days is not None:
        since = now - timedelta(days=limits.not_contacted_days)
        if any(at > since for at, kind, _ in history if kind not in _NOT_CONTACTS):
            return f"not_contacted_days: contacted within {limits.not_contacted_days} days"
    return None


def arm_of_rule(rule: Rule, customer_id: str, policy: Policy, global_percent: float) -> Arm | None:
    """The arm one action of ``rule`` for the customer falls in
    (:func:`services.outreach.core.arms.arm_of`), the global control group being
    ``global_percent`` of the customers, held out of the policy's kinds."""
    return arm_of(
        rule.id,
        customer_id,
        kind=rule.action.kind,
        audience=rule.action.audience,
        control_percent=rule.control_percent,
        global_percent=global_percent,
        global_kinds=policy.held_out_kinds,
    )


def limits_free_at(
    limits: Limits, own: datetime | None, contact: datetime | None
) -> datetime | None:
    """The first instant a rule's time-bound limits let it act for a customer again, given
    the instant of its last decision its limits count (``own``) and of the customer's last
    contact (``contact``): its ``cooldown_days`` after the one, its ``not_contacted_days``
    after the other. None when neither holds it back."""
    ends = []
    if limits.cooldown_days is not None and own is not None:
        ends.append(own + timedelta(days=limits.cooldown_days))
    if limits.not_contacted_days is not None and contact is not None:
        ends.append(contact + timedelta(days=limits.not_contacted_days))
    return max(ends) if ends else None


def quiet_until(quiet: QuietHours, zone: ZoneInfo, now: datetime) -> datetime | None:
    """The UTC instant quiet hours end if ``now`` is inside them in ``zone``, else None."""
    local = now.astimezone(zone)
    wall = local.time().replace(tzinfo=None, fold=0)
    if quiet.start < quiet.end:
        inside = quiet.start <= wall < quiet.end
    else:
        inside = wall >= quiet.start or wall < quiet.end
    if not inside:
        return None
    day = local.date() if wall < quiet.end else local.date() + timedelta(days=1)
    return local_instant(day, quiet.end, zone)


def history_days(limits: Limits, policy: Policy) -> int:
    """How many days of history :func:`decide` needs for a rule (besides the rule's own
    contacts, which ``once`` and ``max_per_customer`` need in full)."""
    windows = [limits.cooldown_days, limits.not_contacted_days]
    if policy.frequency_cap is not None:
        windows.append(policy.frequency_cap.days)
    if policy.balance is not None:
        # Twice the window: a promotion deferred into it was decided up to a window before.
        windows.append(2 * policy.balance.days)
    return max((w for w in windows if w is not None), default=0)


def _within_the_day(
    candidate: Candidate, decision: Decision, daily_left: dict[str, int]
) -> Decision:
    """``decision``, or a ``daily_limit`` suppression when it would take a slot of its rule's
    day (go out, or wait for a complaint to close) and none is left."""
    if not (decision.goes_out or decision.outcome is Outcome.HOLD):
        return decision
    left = daily_left[candidate.rule_id]
    if left <= 0:
        detail = f"the rule's daily limit of {candidate.limits.max_per_day} is reached"
        return Decision(Outcome.SUPPRESS, Reason.DAILY_LIMIT, detail=detail)
    daily_left[candidate.rule_id] = left - 1
    return decision


def rank(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best first: higher priority, then rule id, so ties are broken the same way every time."""
    return sorted(candidates, key=lambda c: (-c.priority, c.rule_id))


def decide_all(
    card: Mapping[str, Any],
    candidates: Sequence[Candidate],
    history: Sequence[tuple[datetime, str, str]],
    *,
    suppressed: bool,
    policy: Policy,
    now: datetime,
    daily_left: dict[str, int] | None = None,
) -> list[tuple[Candidate, Decision]]:
    """Decisions for candidates competing at the same moment, best-ranked first.

    Each one that goes out (now or deferred) counts as a contact for the ones after it, so
    when they compete for cap slots the higher priority takes the first; the others wait for
    the next free slot within their kind's horizon, or are suppressed with ``lower_priority``
    (``frequency_cap`` when the history alone already fills the cap).

    ``daily_left`` holds what is left today of the rules with a ``max_per_day``, and is taken
    from: one that would go out (or be held) when its rule's day is spent is suppressed with
    reason ``daily_limit`` instead, and leaves its cap slot to the candidates after it.
    """
    taken: list[tuple[datetime, str, str]] = []
    out: list[tuple[Candidate, Decision]] = []
    for candidate in rank(candidates):
        seen = [*history, *taken]
        decision = decide(card, candidate, seen, suppressed=suppressed, policy=policy, now=now)
        if daily_left is not None and candidate.rule_id in daily_left:
            decision = _within_the_day(candidate, decision, daily_left)
        # Only another rule can take a slot "first": repeats of one rule are simply capped.
        capped = decision.outcome is Outcome.SUPPRESS and decision.reason is Reason.FREQUENCY_CAP
        if capped and any(rule_id != candidate.rule_id for _, _, rule_id in taken):
            alone = decide(card, candidate, history, suppressed=suppressed, policy=policy, now=now)
            if alone.reason is not Reason.FREQUENCY_CAP:
                detail = "the last cap slots went to higher-priority actions"
                decision = Decision(Outcome.SUPPRESS, Reason.LOWER_PRIORITY, detail=detail)
        if decision.goes_out:
            taken.append((decision.until or now, candidate.contact_kind, candidate.rule_id))
        out.append((candidate, decision))
    return out


@dataclass(frozen=True, slots=True)
class Waiting:
    """An action decided earlier that waits to go out at ``at`` (its row ``action_id``),
    holding a slot of the cap: ``candidate`` is how it competes again."""

    action_id: str
    candidate: Candidate
    at: datetime


def _is_capped(decision: Decision) -> bool:
    return decision.outcome is Outcome.SUPPRESS and decision.reason in (
        Reason.FREQUENCY_CAP,
        Reason.LOWER_PRIORITY,
    )


def _held_by_cap(decision: Decision) -> bool:
    """Stopped by the cap: suppressed, or deferred to the cap's next free slot."""
    return _is_capped(decision) or (
        decision.outcome is Outcome.DEFER and decision.reason is Reason.FREQUENCY_CAP
    )


def _sooner(new: Decision, old: Decision, now: datetime) -> bool:
    """Whether ``new`` gets the action out, and sooner than ``old`` would."""
    if not new.goes_out:
        return False
    return not old.goes_out or (new.until or now) < (old.until or now)


def yield_slots(
    card: Mapping[str, Any],
    candidates: Sequence[Candidate],
    decided: Sequence[tuple[Candidate, Decision]],
    history: Sequence[tuple[datetime, str, str]],
    waiting: Sequence[Waiting],
    *,
    suppressed: bool,
    policy: Policy,
    now: datetime,
    daily_left: dict[str, int] | None = None,
) -> tuple[list[tuple[Candidate, Decision]], list[tuple[Waiting, Decision]]] | None:
    """Cap slots held by waiting actions of lower priority, given to the ``candidates`` the
    cap stopped or pushed back (``decided`` is :func:`decide_all`'s word on them over
    ``history``, which holds the waiting actions' entries): the candidates and the waiting
    actions of lower priority are decided together, best-ranked first, as if none had been
    decided yet.

    Returns the candidates' new decisions and the waiting actions whose slot was taken, each
    with its new decision: suppressed with ``lower_priority``, or (within its kind's
    ``cap_defer_days``) deferred to the cap's next free slot. None when no stopped candidate
    gets out sooner, or when a waiting action would come out of it otherwise (sooner, or
    stopped for another reason): then ``decided`` stands. ``daily_left`` is taken from as
    :func:`decide_all` takes, for the candidates (a waiting action holds its day's slot).
    """
    before = {id(c): d for c, d in decided}
    stopped = {id(c): c for c, d in decided if _held_by_cap(d)}
    if not stopped or not waiting:
        return None
    best = max(c.priority for c in stopped.values())
    rest = list(history)
    lower: list[Waiting] = []
    for w in waiting:
        entry = (w.at, w.candidate.contact_kind, w.candidate.rule_id)
        day_bound = daily_left is not None and w.candidate.rule_id in daily_left
        # A kind the cap does not count holds no slot to give.
        counted = w.candidate.kind not in policy.transactional_kinds
        if w.candidate.priority < best and counted and not day_bound and entry in rest:
            rest.remove(entry)
            lower.append(w)
    if not lower:
        return None
    joint = decide_all(
        card,
        [*candidates, *(w.candidate for w in lower)],
        rest,
        suppressed=suppressed,
        policy=policy,
        now=now,
        daily_left=daily_left,
    )
    again = {id(w.candidate): w for w in lower}
    mine: list[tuple[Candidate, Decision]] = []
    moved: list[tuple[Waiting, Decision]] = []
    for candidate, decision in joint:
        held = again.get(id(candidate))
        if held is None:
            mine.append((candidate, decision))
        elif decision.goes_out and (decision.until or now) == held.at:
            continue  # it keeps its slot
        elif _is_capped(decision) or (
            _held_by_cap(decision) and decision.until is not None and decision.until > held.at
        ):
            moved.append((held, decision))
        else:
            return None  # it would change otherwise: leave every decision as it was
    taker = rank([c for c, d in mine if id(c) in stopped and _sooner(d, before[id(c)], now)])
    if not moved or not taker:
        return None
    gave = f"gave its frequency-cap slot to {taker[0].rule_id} (priority {taker[0].priority})"
    return mine, [(w, _gave_way(d, gave)) for w, d in moved]


def _gave_way(decision: Decision, gave: str) -> Decision:
    """A waiting action's new decision, saying whom its slot went to."""
    if decision.outcome is Outcome.DEFER:
        return Decision(
            Outcome.DEFER, Reason.LOWER_PRIORITY, decision.until, f"{gave}; waits for the next"
        )
    return Decision(Outcome.SUPPRESS, Reason.LOWER_PRIORITY, detail=f"{gave} before it went out")
