"""Outreach rules (trigger + conditions + action + limits + priority) and the index that finds
the rules a change matches.

A rule as JSON::

    {"id": "winback-churned", "name": "Win back churned customers",
     "trigger": {"type": "stage", "from": [], "to": ["churned"]},
     "conditions": {"in": ["tier", ["key", "regular"]]},
     "action": {"kind": "winback", "channel": "email",
                "template": {"subject": "We miss you", "body": "Hello {{ customer.name }}"},
                "offer": {"code": "BACK15", "description": "15% off"}},
     "limits": {"cooldown_days": 90}, "priority": 50}

Triggers, by ``type``: ``event`` (an event type and optional ``filters``, a condition over the
event's ``data``), ``stage`` (a transition: ``from``/``to`` lists, empty = any),
``membership`` (a membership tier entered: ``from``/``to`` tier names, empty = any, and an
optional ``direction``), ``schedule`` (by ``kind``: ``birthday``, ``anniversary``,
``days_after``, ``calendar``, ``cron``; see :mod:`services.outreach.core.schedules`) and
``broadcast`` (fired only when an operator launches it over the card replica; the audience is
the rule's conditions).

Every model is strict: an unknown field is an error, and each error names its field. An
action's identity, the *occurrence key*, is the event id for event triggers, the stage
episode (``churned@2026-10-01``: the stage and the day it was entered) for stage triggers,
the membership episode (``membership:gold@2026-10-01T09:30:00Z``) for membership triggers,
the customer's local date for schedules and the launch id for broadcasts; (rule, customer,
occurrence) is unique, so a replayed change never acts twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.outreach.core import conditions, templates
from services.outreach.core.conditions import BEFORE_KEY as BEFORE
from services.outreach.core.conditions import Predicate
from services.outreach.core.goals import Goal, goal_of
from services.outreach.core.schedules import (
    AnniversarySchedule,
    BirthdaySchedule,
    CalendarSchedule,
    CronSchedule,
    DaysAfterSchedule,
    holiday_cases,
)
from services.outreach.core.template_limits import DEFAULT_LIMITS, RenderLimits
from services.outreach.core.trust import trusted
from shared.card import Stage
from shared.changes import Change
from shared.events import EventType

ActionKind = Literal[
    "greeting", "follow_up", "recall", "winback", "care", "apology", "announcement", "tag"
]
# The one kind that sends nothing: it adds or removes tags (:class:`TagChange`).
TAG: Literal["tag"] = "tag"
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^\S+$")]
Channel = Literal["webhook", "email", "sms", "preferred"]
# ``preferred``: each customer's own choice (:func:`preferred_channel`).
PREFERRED = "preferred"


def preferred_channel(card: Mapping[str, Any]) -> str:
    """The channel a ``preferred`` action takes for this customer: the profile's
    ``preferred_channel`` when they consented to it; else email if they consented to email,
    else SMS if to that; else email (which the consent check then suppresses)."""
    profile = card.get("profile") or {}
    consent = profile.get("consent") or {}
    chosen = profile.get("preferred_channel")
    if chosen in ("email", "sms") and consent.get(chosen) is True:
        return str(chosen)
    if consent.get("email") is not True and consent.get("sms") is True:
        return "sms"
    return "email"


def channel_for(channel: str, card: Mapping[str, Any]) -> str:
    """The channel an action of ``channel`` takes for the customer of ``card``."""
    return preferred_channel(card) if channel == PREFERRED else channel


RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ChannelRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _invalid(kind: str, errors: list[str]) -> PydanticCustomError:
    # A custom error keeps the message ours ("all[1].gt: unknown card field ...") instead of
    # pydantic's "Value error, ..." prefix, and its location is the field being validated.
    return PydanticCustomError(kind, "{detail}", {"detail": "; ".join(errors)})


class EventTrigger(_Strict):
    """Fires on an event of type ``event`` whose ``data`` passes ``filters`` (a condition)."""

    type: Literal["event"]
    event: EventType
    filters: dict[str, Any] | None = None
    # Only for an event recorded at most this many days after it happened: a history loaded
    # later (last year's complaints, orders) is judged, not answered.
    recorded_within_days: int | None = Field(None, ge=1, le=3650)

    @field_validator("event")
    @classmethod
    def _event(cls, v: EventType) -> EventType:
        if v is EventType.CUSTOMER_ERASED:
            raise ValueError("an erased customer is forgotten, not contacted: no rule fires on it")
        if v is EventType.CUSTOMER_UNSUBSCRIBED:
            raise ValueError("a customer who unsubscribed is not contacted: no rule fires on it")
        return v

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        event = info.data.get("event")
        if v is not None and event is not None and not trusted(info):
            errors = conditions.validate(v, conditions.event_schema(event))
            if errors:
                raise _invalid("invalid_filters", errors)
        return v


class StageTrigger(_Strict):
    """Fires once per stage episode: the first time the customer is in one of ``to``, having
    entered it from one of ``from`` (empty: any), while the conditions hold — whether the
    stage was entered live, in a replayed history, or the conditions came true later (a refit,
    a profile update). With ``entered_within_days``, only while the episode began at most that
    many days before the change (so an imported history does not reach customers lost years
    ago)."""

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    type: Literal["stage"]
    from_: list[Stage] = Field(default_factory=list, alias="from")
    to: list[Stage] = Field(default_factory=list)
    entered_within_days: int | None = Field(None, ge=1, le=3650)


TierName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class MembershipTrigger(_Strict):
    """Fires once per membership episode: the first time the customer holds one of ``to``
    (empty: any tier), having left one of ``from`` (empty: any, none included) by an
    ``upgrade`` or a ``downgrade`` (``direction``; null: either), while the conditions hold —
    "welcome to gold" is ``{"type": "membership", "to": ["gold"], "direction": "upgrade"}``.
    The episode is the card's ``membership`` (its tier and ``since``); another order within
    the tier does not begin a new one. With ``entered_within_days``, only while the episode
    began at most that many days before the change. Tiers scoring computes only: a
    ``member_tier`` the backend sets is the backend's to celebrate (an event rule on
    ``customer.updated`` can filter on it)."""

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    type: Literal["membership"]
    from_: list[TierName] = Field(default_factory=list, alias="from", max_length=50)
    to: list[TierName] = Field(default_factory=list, max_length=50)
    direction: Literal["upgrade", "downgrade"] | None = None
    entered_within_days: int | None = Field(None, ge=1, le=3650)


class BroadcastTrigger(_Strict):
    """Fires only when an operator launches the rule; the conditions select the audience."""

    type: Literal["broadcast"]


Schedule = Annotated[
    BirthdaySchedule | AnniversarySchedule | DaysAfterSchedule | CalendarSchedule | CronSchedule,
    Field(discriminator="kind"),
]
Trigger = Annotated[
    EventTrigger | StageTrigger | MembershipTrigger | Schedule | BroadcastTrigger,
    Field(discriminator="type"),
]


class Offer(_Strict):
    """An incentive the template can show (``offer.code``...)."""

    code: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    discount: Annotated[str, StringConstraints(max_length=32)] | None = None
    expires_days: int | None = Field(None, ge=1, le=3650)


class TagChange(_Strict):
    """The tags a ``tag`` action adds to the customer and takes off them."""

    add: list[Tag] = Field(default_factory=list, max_length=20)
    remove: list[Tag] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _something_apart(self) -> TagChange:
        if not self.add and not self.remove:
            raise ValueError("a tag action adds or removes at least one tag")
        both = sorted(set(self.add) & set(self.remove))
        if both:
            raise ValueError(f"a tag is added or removed, not both: {', '.join(both)}")
        return self


# What a tag action carries in place of a message, never sent nor shown: the rule's JSON
# has no channel and no template for it.
_NO_MESSAGE = {"channel": "webhook", "template": {"body": "-"}}


class Action(_Strict):
    """What to send and how. Each part of the template must compile and keep within the
    hard limits as written; rendering it on the sample card is :func:`template_errors`,
    run when the rule is saved.

    Kind ``tag`` sends nothing: it adds and removes the customer's tags (``tags``), facts
    scoring keeps apart from the backend's tag list. It has no channel, template or offer,
    and no consent, cap, quiet hours or contact history apply: it is not a contact."""

    kind: ActionKind
    tags: TagChange | None = None
    channel: Channel
    # A named channel of that kind (several webhook channels can coexist: a CRM for customer
    # messages, a team's chat for alerts); null: the kind's current channel, the newest.
    channel_id: ChannelRef | None = None
    # `team`: an alert to the shop's own people about the customer (a complaint to answer),
    # not a message to the customer: no consent, suppression, open-complaint hold, cap or
    # quiet hours apply, and it never counts as a contact with the customer. By webhook.
    audience: Literal["customer", "team"] = "customer"
    offer: Offer | None = None
    template: templates.Template

    @model_validator(mode="before")
    @classmethod
    def _tag_sends_nothing(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or raw.get("kind") != TAG:
            if isinstance(raw, dict) and raw.get("tags") is not None:
                raise ValueError("only a tag action (kind tag) has tags")
            return raw
        if raw.get("tags") is None:
            raise ValueError("a tag action needs tags: {add: [...], remove: [...]}")
        extra = sorted(k for k in ("channel", "channel_id", "template", "offer") if k in raw)
        if extra or raw.get("audience", "customer") != "customer":
            sent = extra or ["audience"]
            raise ValueError(f"a tag action sends no message: no {', '.join(sent)}")
        return {**raw, **_NO_MESSAGE}

    @model_serializer(mode="wrap")
    def _no_message_shown(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(self)
        if self.kind == TAG:
            for name in ("channel", "channel_id", "template", "offer", "audience"):
                dumped.pop(name, None)
        else:
            dumped.pop("tags", None)
        return dumped

    @property
    def is_tag(self) -> bool:
        """Whether this action tags rather than sends."""
        return self.kind == TAG

    @field_validator("audience")
    @classmethod
    def _team_by_webhook(cls, v: str, info: ValidationInfo) -> str:
        if v == "team" and info.data.get("channel") != "webhook":
            raise ValueError("a team alert goes to a team's webhook channel: channel webhook")
        return v

    @field_validator("template")
    @classmethod
    def _subject(cls, v: templates.Template, info: ValidationInfo) -> templates.Template:
        if info.data.get("channel") in ("email", PREFERRED) and not v.subject.strip():
            raise _invalid("invalid_template", ["subject: an email needs a subject"])
        return v


class Limits(_Strict):
    """Per-rule limits, checked by the policy against the customer's contact history.

    ``cooldown_days``, ``max_per_customer`` and ``once`` count this rule's own messages;
    ``not_contacted_days`` counts every message the customer received, from any rule.
    ``max_per_day`` is the rule's budget over all customers: at most this many of its actions
    go out (or are held out as its control arm) per day of the shop's default time zone; the
    most valuable customers of a decision come first. The others of a schedule, stage,
    membership or broadcast rule are not recorded but wait in the rule's line for a later day
    (:func:`waits_in_line`; a broadcast's for the launch that passed them over); an event's
    are suppressed with reason ``daily_limit`` (a message about an event is owed now or not
    at all).
    """

    cooldown_days: int | None = Field(None, ge=1, le=3650)
    max_per_customer: int | None = Field(None, ge=1, le=10_000)
    once: StrictBool = False
    not_contacted_days: int | None = Field(None, ge=1, le=3650)
    max_per_day: int | None = Field(None, ge=1, le=1_000_000)


class Rule(_Strict):
    """A rule marketing writes; see the module docstring for the JSON shape."""

    id: RuleId
    name: Text
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    trigger: Trigger
    conditions: dict[str, Any] | None = None
    action: Action
    limits: Limits = Limits()
    priority: int = Field(0, ge=-1000, le=1000, description="higher wins")
    enabled: StrictBool = True
    # What the rule is for (see services.outreach.core.goals); null: an order within the
    # kind's default window.
    goal: Goal | None = None
    # The share of matches held out as the rule's control arm (stable per customer): decided
    # and recorded with status `control`, never sent, their goal tracked like the sent ones'.
    control_percent: float = Field(0, ge=0, le=50, strict=True)

    @field_validator("limits")
    @classmethod
    def _no_limits_on_tags(cls, v: Limits, info: ValidationInfo) -> Limits:
        action = info.data.get("action")
        if action is not None and action.is_tag and v != Limits():
            raise ValueError("a tag action is not a contact: no cooldown, cap or once applies")
        return v

    @field_validator("control_percent")
    @classmethod
    def _customers_only(cls, v: float, info: ValidationInfo) -> float:
        action = info.data.get("action")
        if v and action is not None and action.is_tag:
            raise ValueError("a tag action sends nothing: it has no control group")
        return v

    @property
    def measured_goal(self) -> Goal:
        """The goal this rule's actions are measured against, every field filled."""
        return goal_of(self.action.kind, self.goal)

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if v is not None and not trusted(info):
            trigger = info.data.get("trigger")
            if isinstance(trigger, EventTrigger):
                errors = conditions.validate(v, conditions.EVENT_CARD)
            elif conditions.names_before(v):
                errors = [
                    f"{conditions.BEFORE_KEY}.<field> is the card as it stood before an event: "
                    "only a rule with an event trigger has one"
                ]
            else:
                errors = conditions.validate(v)
            if errors:
                raise _invalid("invalid_conditions", errors)
        return v


def template_errors(rule: Rule, limits: RenderLimits = DEFAULT_LIMITS) -> list[tuple[str, str]]:
    """``(field, why)`` for each part of the rule's template that does not render on the
    sample card with the rule's offer within ``limits`` (``action.template.body``,
    ``template_limit: loop iterations over 10000``). This renders: it may take up to the
    limits' time, so the API runs it off the event loop."""
    if rule.action.is_tag:
        return []  # no message to render
    offer = rule.action.offer.model_dump(mode="json") if rule.action.offer else None
    holidays = holiday_cases(rule.trigger)  # a calendar rule's template may name `holiday`
    return [
        (f"action.template.{part}", why)
        for part, why in templates.check_parts(rule.action.template, offer, limits, holidays)
    ]


# The triggers whose customers a spent daily limit leaves waiting in the rule's line: a
# schedule comes round again (its own schedule row is the line), and an episode (a stage, a
# membership tier) lasts (a schedule row of its own, due the next day); an event's moment and
# a broadcast's launch pass.
EPISODE_TRIGGERS = frozenset({"stage", "membership"})
LINED_TRIGGERS = EPISODE_TRIGGERS | {"schedule", "broadcast"}


def waits_in_line(rule: Rule) -> bool:
    """Whether the customers ``rule``'s spent daily limit passes over wait in its line for a
    later day's slots (rather than being suppressed with ``daily_limit``)."""
    return rule.limits.max_per_day is not None and rule.trigger.type in LINED_TRIGGERS


def rank_key(rule: Rule) -> tuple[int, str]:
    """Higher priority first; the rule id breaks ties so the order never depends on input."""
    return -rule.priority, rule.id


class EventSeen(NamedTuple):
    """What the rule index reads of a change's event: its type, its id (the occurrence of the
    actions it fires), its ``data`` as JSON (what a trigger's ``filters`` look at) and how
    long after it happened it was recorded (``recorded_within_days``)."""

    event_type: str
    event_id: str
    data: Mapping[str, Any]
    recorded_after: timedelta = timedelta(0)


# What an action records of the card it was decided on, to group outcomes by.
RECORDED_FIELDS = ("tier", "strategy")


class Match(NamedTuple):
    """A rule that fires for a customer; ``occurrence`` makes the action's identity.
    ``judged``: the card fields (``tier``, ``strategy``) the rule judged the customer by as
    they stood before the event, with their values then; the action records those (an action
    serves the strategy its rule chose the customer for)."""

    rule: Rule
    customer_id: str
    occurrence: str
    judged: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class _Entry:
    rule: Rule
    when: Predicate | None
    filters: Predicate | None = None
    from_: frozenset[str] = frozenset()
    within_days: int | None = None
    direction: str | None = None
    before: bool = False  # the conditions name the card as it stood before the event
    judged: tuple[str, ...] = ()  # the tier, strategy they read only as it stood before


class Episode(NamedTuple):
    """The stage a card is in, since when (the UTC day it was entered) and from which stage:
    a stage rule acts at most once per episode, so its key is the actions' occurrence."""

    stage: str
    since: str | None  # ISO date; None for prospects
    previous: str | None

    @classmethod
    def of(cls, card: Mapping[str, Any]) -> Episode:
        since = card.get("stage_since")
        return cls(
            str(card.get("stage")),
            None if since is None else str(since)[:10],
            card.get("previous_stage"),
        )

    @property
    def key(self) -> str:
        return f"{self.stage}@{self.since or ''}"

    def began_within(self, days: int, as_of: object) -> bool:
        """Whether the episode began at most ``days`` days before ``as_of`` (the card's)."""
        if self.since is None or not isinstance(as_of, str):
            return False
        return (date.fromisoformat(as_of[:10]) - date.fromisoformat(self.since)).days <= days


# The stages time alone enters: their day is a number of silent days after the last purchase,
# judged by the customer's rhythm (the population's, for a short history), so it may move.
TIME_DRIVEN_STAGES = frozenset({"declining", "churned"})


def redated(before: Episode, card: Mapping[str, Any]) -> Episode | None:
    """The episode ``card`` is in when it is ``before`` dated anew rather than a new one:
    the same stage entered by time, on another day, with no purchase since ``before`` began
    (a new population rhythm, or a late or cancelled order, moved the silence's thresholds).
    None otherwise: a customer who bought since began a new silence, whatever its stage."""
    now = Episode.of(card)
    if now.stage != before.stage or now.stage not in TIME_DRIVEN_STAGES:
        return None
    if now.since is None or before.since is None or now.since == before.since:
        return None
    last_order = (card.get("value") or {}).get("last_order_at")
    if last_order is not None and str(last_order)[:10] >= before.since:
        return None
    return now


class MemberEpisode(NamedTuple):
    """The membership tier a card holds (null: none), since when, which tier it left and
    whether that was an upgrade; None when the card has no membership episode (never a tier,
    or a card from before membership)."""

    tier: str | None
    since: str  # the instant, as the card writes it
    previous: str | None
    direction: str | None

    @classmethod
    def of(cls, card: Mapping[str, Any]) -> MemberEpisode | None:
        m = card.get("membership")
        # A backend's own tier has no episode here: its ``since`` is when it was last written,
        # and a backend that sends whole profiles writes it again with every update.
        if not isinstance(m, Mapping) or m.get("since") is None or m.get("source") == "backend":
            return None
        return cls(m.get("tier"), str(m["since"]), m.get("previous"), m.get("direction"))

    @property
    def key(self) -> str:
        return f"membership:{self.tier or ''}@{self.since}"

    def began_within(self, days: int, as_of: object) -> bool:
        """Whether the episode began at most ``days`` days before ``as_of`` (the card's)."""
        if not isinstance(as_of, str):
            return False
        return (date.fromisoformat(as_of[:10]) - date.fromisoformat(self.since[:10])).days <= days


class RuleFailure(NamedTuple):
    """A rule that raised while matching or scheduling one customer's change: it was skipped
    for that change (the others went on). ``error`` is the exception as text."""

    rule_id: str
    error: str

    @classmethod
    def of(cls, rule_id: str, exc: BaseException, where: str) -> RuleFailure:
        return cls(rule_id, f"{where}: {type(exc).__name__}: {exc}"[:500])


class RuleSet:
    """The enabled rules, indexed so a change only meets the rules its trigger can match.

    Event rules are keyed by event type, stage rules by target stage and membership rules by
    target tier, so most rules are
    never looked at; the survivors run their compiled filters and conditions.

    One rule never stops the others: a rule whose conditions do not compile is left out and
    listed in :attr:`broken`, and a rule that raises while matching a change is skipped for
    that change and reported in the ``failures`` list the caller passes (the shell counts
    them and disables a rule that keeps failing).
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        enabled = sorted((r for r in rules if r.enabled), key=rank_key)
        ids = [r.id for r in enabled]
        if len(set(ids)) != len(ids):
            raise ValueError("rule ids must be unique")
        self.broken: dict[str, str] = {}
        self._when: dict[str, Predicate | None] = {}
        self._by_event: dict[str, list[_Entry]] = {}
        self._by_stage: dict[str | None, list[_Entry]] = {}
        self._by_member: dict[str | None, list[_Entry]] = {}
        self._filtered: set[str] = set()  # event types some rule filters on
        # Event types some rule's conditions read the card before the event of.
        self.before_events: set[str] = set()
        kept: list[Rule] = []
        for r in enabled:
            try:
                self._index(r)
            except Exception as exc:  # a stored rule that no longer compiles
                self.broken[r.id] = RuleFailure.of(r.id, exc, "compile").error
                continue
            kept.append(r)
        self.rules = tuple(kept)
        self.schedules = tuple(r for r in kept if r.trigger.type == "schedule")
        self.broadcasts = tuple(r for r in kept if r.trigger.type == "broadcast")

    def _index(self, r: Rule) -> None:
        t = r.trigger
        if isinstance(t, EventTrigger):
            when = (
                conditions.compile_expr(r.conditions, conditions.EVENT_CARD)
                if r.conditions
                else None
            )
            schema = conditions.event_schema(t.event)
            filters = conditions.compile_expr(t.filters, schema) if t.filters else None
            before = conditions.names_before(r.conditions)
            entry = _Entry(
                r,
                when,
                filters,
                within_days=t.recorded_within_days,
                before=before,
                judged=conditions.judged_before(r.conditions, RECORDED_FIELDS),
            )
            self._by_event.setdefault(t.event.value, []).append(entry)
            if filters is not None:
                self._filtered.add(t.event.value)
            if before:
                self.before_events.add(t.event.value)
            self._when[r.id] = when
            return
        when = conditions.compile_expr(r.conditions) if r.conditions else None
        if isinstance(t, StageTrigger):
            entry = _Entry(r, when, None, frozenset(t.from_), t.entered_within_days)
            targets: list[str | None] = [*t.to] or [None]  # None: any target stage
            for target in targets:
                self._by_stage.setdefault(target, []).append(entry)
        elif isinstance(t, MembershipTrigger):
            entry = _Entry(r, when, None, frozenset(t.from_), t.entered_within_days, t.direction)
            tiers: list[str | None] = [*t.to] or [None]  # None: any tier
            for tier in tiers:
                self._by_member.setdefault(tier, []).append(entry)
        self._when[r.id] = when

    def conditions_hold(
        self, rule: Rule, card: Mapping[str, Any], failures: list[RuleFailure] | None = None
    ) -> bool:
        """Whether ``rule``'s conditions hold for ``card`` (for schedules and broadcasts); a
        rule that raises does not hold, and is reported in ``failures``."""
        if rule.id not in self._when:
            return False  # not an enabled rule of this set
        when = self._when[rule.id]
        try:
            return when is None or when(card)
        except Exception as exc:
            if failures is not None:
                failures.append(RuleFailure.of(rule.id, exc, "conditions"))
            return False

    def would_act(self, rule_id: str, customer_id: str, card: Mapping[str, Any]) -> bool | None:
        """Whether the rule, were its schedule row due now, would act for the customer with
        ``card``: a schedule rule's conditions hold, or a stage or membership rule matches the
        episode the card is in. None when the rule is not an enabled rule of this set (gone,
        paused, or not compiling)."""
        rule = next((r for r in self.rules if r.id == rule_id), None)
        if rule is None:
            return None
        if rule.trigger.type == "schedule":
            return self.conditions_hold(rule, card)
        return any(m.rule.id == rule_id for m in self.match_parts(customer_id, card))

    def match(
        self,
        change: Change,
        failures: list[RuleFailure] | None = None,
        *,
        before: Mapping[str, Any] | None = None,
    ) -> list[Match]:
        """The rules a change fires, best first. Schedules and broadcasts never match here.
        ``before``: the customer's card before the change (their previous change's), for the
        event rules whose conditions read it (:attr:`before_events`); None: not known."""
        event = change.event
        seen = None
        if event is not None and event.event_type in self._by_event:
            # Filters read the event's data as JSON, as it travelled; only read it for them.
            filtered = event.event_type in self._filtered
            data = event.data.model_dump(mode="json") if filtered else {}
            late = event.received_at - event.occurred_at
            seen = EventSeen(event.event_type, event.event_id, data, late)
        return self.match_parts(
            change.customer_id, change.card, event=seen, failures=failures, before=before
        )

    def match_parts(
        self,
        customer_id: str,
        card: Mapping[str, Any],
        *,
        event: EventSeen | None = None,
        failures: list[RuleFailure] | None = None,
        before: Mapping[str, Any] | None = None,
    ) -> list[Match]:
        """The rules fired by a change: those of ``event`` (the event that came with it), and
        the stage and membership rules of the episodes the card is in, best first. A stage
        rule matches on every change of its episode; the ledger's (rule, customer, episode)
        key makes it act once. A rule that raises is skipped and reported in ``failures``."""
        out: list[Match] = []
        if event is not None:
            for e in self._by_event.get(event.event_type, ()):
                try:  # free unless it raises: this loop is the consumer's hot path
                    if e.filters is not None and not e.filters(event.data):
                        continue
                    if e.within_days is not None and event.recorded_after > timedelta(
                        days=e.within_days
                    ):
                        continue
                    if e.when is None or e.when({**card, BEFORE: before} if e.before else card):
                        judged = (
                            tuple((f, before.get(f)) for f in e.judged)
                            if e.judged and before is not None
                            else ()
                        )
                        out.append(Match(e.rule, customer_id, event.event_id, judged))
                except Exception as exc:
                    if failures is not None:
                        failures.append(RuleFailure.of(e.rule.id, exc, "match"))
        if self._by_stage:
            episode = Episode.of(card)
            entries = [*self._by_stage.get(episode.stage, ()), *self._by_stage.get(None, ())]
            for e in entries:
                if e.from_ and episode.previous not in e.from_:
                    continue
                try:
                    if e.within_days is not None and not episode.began_within(
                        e.within_days, card.get("as_of")
                    ):
                        continue
                    if e.when is None or e.when(card):
                        out.append(Match(e.rule, customer_id, episode.key))
                except Exception as exc:
                    if failures is not None:
                        failures.append(RuleFailure.of(e.rule.id, exc, "match"))
        if self._by_member:
            out += self._match_membership(customer_id, card, failures)
        if len(out) > 1:
            out.sort(key=lambda m: rank_key(m.rule))
        return out

    def _match_membership(
        self, customer_id: str, card: Mapping[str, Any], failures: list[RuleFailure] | None
    ) -> list[Match]:
        # Like the stage rules: every change within the episode matches, the ledger's
        # (rule, customer, episode) key makes the rule act once.
        episode = MemberEpisode.of(card)
        if episode is None:
            return []
        entries = [*self._by_member.get(None, ())]
        if episode.tier is not None:
            entries = [*self._by_member.get(episode.tier, ()), *entries]
        out: list[Match] = []
        for e in entries:
            if e.from_ and episode.previous not in e.from_:
                continue
            if e.direction is not None and episode.direction != e.direction:
                continue
            try:
                if e.within_days is not None and not episode.began_within(
                    e.within_days, card.get("as_of")
                ):
                    continue
                if e.when is None or e.when(card):
                    out.append(Match(e.rule, customer_id, episode.key))
            except Exception as exc:
                if failures is not None:
                    failures.append(RuleFailure.of(e.rule.id, exc, "match"))
        return out
