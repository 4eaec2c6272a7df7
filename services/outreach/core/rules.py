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
event's ``data``), ``stage`` (a transition: ``from``/``to`` lists, empty = any), ``schedule``
(by ``kind``: ``birthday``, ``anniversary``, ``days_after``, ``calendar``, ``cron``; see
:mod:`services.outreach.core.schedules`) and ``broadcast`` (fired only when an operator launches
it over the card replica; the audience is the rule's conditions).

Every model is strict: an unknown field is an error, and each error names its field. An
action's identity, the *occurrence key*, is the event id for event triggers, the change id
for stage triggers, the customer's local date for schedules and the launch id for broadcasts;
(rule, customer, occurrence) is unique, so a replayed change never acts twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from services.outreach.core import conditions, templates
from services.outreach.core.conditions import Predicate
from services.outreach.core.schedules import (
    AnniversarySchedule,
    BirthdaySchedule,
    CalendarSchedule,
    CronSchedule,
    DaysAfterSchedule,
)
from shared.card import Stage
from shared.changes import Change
from shared.events import EventType

ActionKind = Literal[
    "greeting", "follow_up", "recall", "winback", "care", "apology", "announcement"
]
Channel = Literal["webhook", "email"]
RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,63}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]


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

    @field_validator("event")
    @classmethod
    def _event(cls, v: EventType) -> EventType:
        if v is EventType.CUSTOMER_ERASED:
            raise ValueError("an erased customer is forgotten, not contacted: no rule fires on it")
        return v

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        event = info.data.get("event")
        if v is not None and event is not None:
            errors = conditions.validate(v, conditions.event_schema(event))
            if errors:
                raise _invalid("invalid_filters", errors)
        return v


class StageTrigger(_Strict):
    """Fires when the stage moves from one of ``from`` to one of ``to`` (empty: any)."""

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    type: Literal["stage"]
    from_: list[Stage] = Field(default_factory=list, alias="from")
    to: list[Stage] = Field(default_factory=list)


class BroadcastTrigger(_Strict):
    """Fires only when an operator launches the rule; the conditions select the audience."""

    type: Literal["broadcast"]


Schedule = Annotated[
    BirthdaySchedule | AnniversarySchedule | DaysAfterSchedule | CalendarSchedule | CronSchedule,
    Field(discriminator="kind"),
]
Trigger = Annotated[
    EventTrigger | StageTrigger | Schedule | BroadcastTrigger, Field(discriminator="type")
]


class Offer(_Strict):
    """An incentive the template can show (``offer.code``...)."""

    code: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    description: Annotated[str, StringConstraints(max_length=500)] = ""
    discount: Annotated[str, StringConstraints(max_length=32)] | None = None
    expires_days: int | None = Field(None, ge=1, le=3650)


class Action(_Strict):
    """What to send and how; the template must render on the sample card with the offer."""

    kind: ActionKind
    channel: Channel
    # Before the template: the template is checked by rendering it with this offer.
    offer: Offer | None = None
    template: templates.Template

    @field_validator("template")
    @classmethod
    def _renders(cls, v: templates.Template, info: ValidationInfo) -> templates.Template:
        if info.data.get("channel") == "email" and not v.subject.strip():
            raise _invalid("invalid_template", ["subject: an email needs a subject"])
        if "offer" not in info.data:
            return v  # the offer is invalid and reported; rendering without it would mislead
        offer = info.data["offer"]
        errors = templates.check(v, offer.model_dump() if offer is not None else None)
        if errors:
            raise _invalid("invalid_template", errors)
        return v


class Limits(_Strict):
    """Per-rule limits, checked by the policy against the customer's contact history.

    ``cooldown_days``, ``max_per_customer`` and ``once`` count this rule's own messages;
    ``not_contacted_days`` counts every message the customer received, from any rule.
    """

    cooldown_days: int | None = Field(None, ge=1, le=3650)
    max_per_customer: int | None = Field(None, ge=1, le=10_000)
    once: StrictBool = False
    not_contacted_days: int | None = Field(None, ge=1, le=3650)


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

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            errors = conditions.validate(v)
            if errors:
                raise _invalid("invalid_conditions", errors)
        return v


def rank_key(rule: Rule) -> tuple[int, str]:
    """Higher priority first; the rule id breaks ties so the order never depends on input."""
    return -rule.priority, rule.id


class EventSeen(NamedTuple):
    """What the rule index reads of a change's event: its type, its id (the occurrence of the
    actions it fires) and its ``data`` as JSON (what a trigger's ``filters`` look at)."""

    event_type: str
    event_id: str
    data: Mapping[str, Any]


class Match(NamedTuple):
    """A rule that fires for a customer; ``occurrence`` makes the action's identity."""

    rule: Rule
    customer_id: str
    occurrence: str


@dataclass(frozen=True, slots=True)
class _Entry:
    rule: Rule
    when: Predicate | None
    filters: Predicate | None = None
    from_: frozenset[str] = frozenset()


class RuleSet:
    """The enabled rules, indexed so a change only meets the rules its trigger can match.

    Event rules are keyed by event type and stage rules by target stage, so most rules are
    never looked at; the survivors run their compiled filters and conditions.
    """

    def __init__(self, rules: Iterable[Rule]) -> None:
        enabled = sorted((r for r in rules if r.enabled), key=rank_key)
        ids = [r.id for r in enabled]
        if len(set(ids)) != len(ids):
            raise ValueError("rule ids must be unique")
        self._when = {
            r.id: conditions.compile_expr(r.conditions) if r.conditions else None for r in enabled
        }
        self._by_event: dict[str, list[_Entry]] = {}
        self._by_stage: dict[str | None, list[_Entry]] = {}
        self._filtered: set[str] = set()  # event types some rule filters on
        self.rules = tuple(enabled)
        self.schedules = tuple(r for r in enabled if r.trigger.type == "schedule")
        self.broadcasts = tuple(r for r in enabled if r.trigger.type == "broadcast")
        for r in enabled:
            t, when = r.trigger, self._when[r.id]
            if isinstance(t, EventTrigger):
                schema = conditions.event_schema(t.event)
                filters = conditions.compile_expr(t.filters, schema) if t.filters else None
                entry = _Entry(r, when, filters)
                self._by_event.setdefault(t.event.value, []).append(entry)
                if filters is not None:
                    self._filtered.add(t.event.value)
            elif isinstance(t, StageTrigger):
                entry = _Entry(r, when, None, frozenset(t.from_))
                targets: list[str | None] = [*t.to] or [None]  # None: any target stage
                for target in targets:
                    self._by_stage.setdefault(target, []).append(entry)

    def conditions_hold(self, rule: Rule, card: Mapping[str, Any]) -> bool:
        """Whether ``rule``'s conditions hold for ``card`` (for schedules and broadcasts)."""
        if rule.id not in self._when:
            return False  # not an enabled rule of this set
        when = self._when[rule.id]
        return when is None or when(card)

    def match(self, change: Change) -> list[Match]:
        """The rules a change fires, best first. Schedules and broadcasts never match here."""
        event, moved = change.event, change.stage_change
        seen = None
        if event is not None and event.event_type in self._by_event:
            # Filters read the event's data as JSON, as it travelled; only read it for them.
            filtered = event.event_type in self._filtered
            data = event.data.model_dump(mode="json") if filtered else {}
            seen = EventSeen(event.event_type, event.event_id, data)
        return self.match_parts(
            change.customer_id,
            change.card,
            change.change_id,
            event=seen,
            moved=None if moved is None else (moved.from_, moved.to),
        )

    def match_parts(
        self,
        customer_id: str,
        card: Mapping[str, Any],
        change_id: str,
        *,
        event: EventSeen | None = None,
        moved: tuple[str, str] | None = None,
    ) -> list[Match]:
        """The rules fired by a change's parts: ``event`` (the event that came with it) and
        ``moved`` (its stage transition, ``(from, to)``), best first."""
        if event is None and moved is None:
            return []
        out: list[Match] = []
        if event is not None:
            for e in self._by_event.get(event.event_type, ()):
                if e.filters is not None and not e.filters(event.data):
                    continue
                if e.when is None or e.when(card):
                    out.append(Match(e.rule, customer_id, event.event_id))
        if moved is not None:
            before, after = moved
            entries = [*self._by_stage.get(after, ()), *self._by_stage.get(None, ())]
            for e in entries:
                if e.from_ and before not in e.from_:
                    continue
                if e.when is None or e.when(card):
                    out.append(Match(e.rule, customer_id, change_id))
        if len(out) > 1:
            out.sort(key=lambda m: rank_key(m.rule))
        return out
