"""The contact policy: whether a matched action may reach the customer now.

:func:`decide` is a pure function of the card, the candidate action, the customer's contact
history, their suppression status, the :class:`Policy` and ``now``. Checks run in this order,
and the first that bites decides:

1. **suppressed** (suppression list or unsubscribe): suppress, whatever the kind;
2. **consent**: email needs ``consent.email``; a kind that is not transactional also needs
   ``consent.marketing`` on any channel (when ``marketing_consent_required``);
3. **limits** of the rule (``once``, ``max_per_customer``, ``cooldown_days``,
   ``not_contacted_days``): suppress with reason ``limit``;
4. **open complaint**: a promotional kind is held, to be re-evaluated once it is resolved;
5. **frequency cap**: at most ``count`` non-transactional messages per ``days`` days; an
   action the cap stops is deferred to the first instant the cap allows (higher priority
   first), when that instant is within its kind's ``cap_defer_days``, else suppressed with
   reason ``frequency_cap`` (a greeting belongs to its day: it is never deferred);
6. **quiet hours**: deferred to the end of the quiet period in the customer's zone (a
   deferral, never a drop).

Transactional kinds (apology and care by default) skip 2's marketing consent, 5 and 6, and
neither consume nor count against the cap. The cap is finally enforced by the caller in the
database; these functions give the decision for a given history, so previews and backtests
use the same code as the live path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    field_validator,
    model_validator,
)

from services.outreach.core.rules import ActionKind, Channel, Limits, Match, Rule
from services.outreach.core.schedules import LocalTime, local_instant, zone_of


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


_CAP_DEFER_DAYS: dict[ActionKind, int] = {
    "follow_up": 3,
    "recall": 7,
    "winback": 14,
    "announcement": 7,
}


class Policy(_Strict):
    """Global contact policy settings."""

    frequency_cap: FrequencyCap | None = FrequencyCap()
    quiet_hours: QuietHours | None = QuietHours()
    transactional_kinds: frozenset[ActionKind] = frozenset({"apology", "care"})
    promotional_kinds: frozenset[ActionKind] = frozenset({"recall", "winback", "announcement"})
    marketing_consent_required: StrictBool = True
    default_timezone: str = "UTC"
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

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ValueError, KeyError):
            raise ValueError("not an IANA time zone name, e.g. Europe/Paris") from None
        return v

    @field_validator("transactional_kinds", "promotional_kinds", mode="before")
    @classmethod
    def _unique(cls, v: object) -> object:
        if isinstance(v, list) and all(isinstance(k, str) for k in v) and len(set(v)) != len(v):
            raise ValueError("list each kind once")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> Policy:
        both = self.transactional_kinds & self.promotional_kinds
        if both:
            raise ValueError(f"kinds cannot be transactional and promotional: {sorted(both)}")
        return self


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Candidate:
    """An action that a rule wants to take for a customer."""

    rule_id: str
    kind: ActionKind
    channel: Channel
    priority: int = 0
    limits: Limits = NO_LIMITS
    audience: str = "customer"  # or "team": an alert to the shop's people, not a contact

    @classmethod
    def of(cls, rule: Rule | Match) -> Candidate:
        """The candidate a rule (or a match of it) puts forward."""
        r = rule.rule if isinstance(rule, Match) else rule
        a = r.action
        return cls(r.id, a.kind, a.channel, r.priority, r.limits, a.audience)

    @property
    def contact_kind(self) -> str:
        """How it shows in a contact history: its kind, or ``team`` (never a contact)."""
        return TEAM if self.audience == TEAM else self.kind


# The kind a team alert has in a contact history: neither capped nor a contact.
TEAM = "team"


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
    transactional = candidate.kind in policy.transactional_kinds
    profile = card.get("profile") or {}
    consent = profile.get("consent") or {}
    if candidate.channel == "email" and consent.get("email") is not True:
        return Decision(Outcome.SUPPRESS, Reason.NO_CONSENT, detail="no email consent")
    marketing = consent.get("marketing") is True
    if not transactional and policy.marketing_consent_required and not marketing:
        return Decision(Outcome.SUPPRESS, Reason.NO_CONSENT, detail="no marketing consent")
    over = _over_limit(candidate, history, now)
    if over:
        return Decision(Outcome.SUPPRESS, Reason.LIMIT, detail=over)
    open_complaints = (card.get("complaints") or {}).get("open") or 0
    if open_complaints > 0 and candidate.kind in policy.promotional_kinds:
        return Decision(Outcome.HOLD, Reason.OPEN_COMPLAINT, detail="a complaint is open")
    if transactional:
        return SEND
    cap = policy.frequency_cap
    if cap is not None:
        exempt = {*policy.transactional_kinds, TEAM}
        counted = sorted(at for at, kind, _ in history if kind not in exempt)
        free = cap_frees_at(counted, cap, now)
        if free > now:
            horizon = timedelta(days=policy.cap_defer_days.get(candidate.kind, 0))
            if free - now > horizon:
                since = now - timedelta(days=cap.days)
                used = sum(1 for at in counted if since < at <= now)
                detail = f"{used} messages in the last {cap.days} days (cap {cap.count})"
                return Decision(Outcome.SUPPRESS, Reason.FREQUENCY_CAP, detail=detail)
            slot = free
            if policy.quiet_hours is not None:
                zone = zone_of(card, policy.default_timezone)
                slot = quiet_until(policy.quiet_hours, zone, free) or free
            detail = f"the frequency cap ({cap.count} per {cap.days} days) allows it then"
            return Decision(Outcome.DEFER, Reason.FREQUENCY_CAP, slot, detail)
    if policy.quiet_hours is not None:
        zone = zone_of(card, policy.default_timezone)
        until = quiet_until(policy.quiet_hours, zone, now)
        if until is not None:
            return Decision(Outcome.DEFER, Reason.QUIET_HOURS, until, "quiet hours")
    return SEND


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
    if limits.once and own:
        return "once: already sent"
    if limits.max_per_customer is not None and len(own) >= limits.max_per_customer:
        return f"max_per_customer: {len(own)} sent"
    if limits.cooldown_days is not None:
        since = now - timedelta(days=limits.cooldown_days)
        if any(at > since for at in own):
            return f"cooldown_days: sent within {limits.cooldown_days} days"
    if limits.not_contacted_days is not None:
        since = now - timedelta(days=limits.not_contacted_days)
        if any(at > since for at, kind, _ in history if kind != TEAM):
            return f"not_contacted_days: contacted within {limits.not_contacted_days} days"
    return None


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
    return max((w for w in windows if w is not None), default=0)


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
) -> list[tuple[Candidate, Decision]]:
    """Decisions for candidates competing at the same moment, best-ranked first.

    Each one that goes out (now or deferred) counts as a contact for the ones after it, so
    when they compete for cap slots the higher priority takes the first; the others wait for
    the next free slot within their kind's horizon, or are suppressed with ``lower_priority``
    (``frequency_cap`` when the history alone already fills the cap).
    """
    taken: list[tuple[datetime, str, str]] = []
    out: list[tuple[Candidate, Decision]] = []
    for candidate in rank(candidates):
        seen = [*history, *taken]
        decision = decide(card, candidate, seen, suppressed=suppressed, policy=policy, now=now)
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
