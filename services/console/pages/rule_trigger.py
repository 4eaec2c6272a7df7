"""A rule's trigger as the editor's form holds it: every trigger outreach's rule schema has
(an event, a stage transition, a membership tier entered, the five schedules, a broadcast)
with its own controls, and the JSON document it becomes.

An event trigger's ``filters`` (a test of the event's data: ``severity equals high``) are
shown as one test (:mod:`.rule_expression`) or, when they are more, as JSON. A stored
trigger's fields the form has no control for (one a newer outreach added) travel in the
form's ``kept`` fields with the trigger's type, and go back only into a trigger of that type:
editing a rule loses nothing, and a rule turned into another trigger takes none of the old
one's fields along.

Outreach judges the trigger; its 422 names fields such as
``body.trigger.schedule.cron.expression``, which :func:`trigger_field_of` places next to the
control that holds the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.console.pages.rule_expression import DataFilter, described
from shared.card import Stage
from shared.events import EventType

# Events a rule may fire on (outreach refuses the others: an erased or unsubscribed customer
# is not contacted).
EVENTS = [
    e.value
    for e in EventType
    if e
    not in (
        EventType.CUSTOMER_ERASED,
        EventType.CUSTOMER_UNSUBSCRIBED,
        EventType.CUSTOMER_RESUBSCRIBED,
    )
]
STAGES = [s.value for s in Stage]
# The form's trigger choice: the trigger types, a schedule by its kind.
TRIGGERS = {
    "event": "an event happens",
    "stage": "the customer enters a stage",
    "membership": "the customer enters a membership tier",
    "birthday": "on the customer's birthday",
    "anniversary": "on the anniversary of a date (the first order by default)",
    "days_after": "a number of days after a date",
    "calendar": "on the dates of a calendar",
    "cron": "on a cron schedule",
    "broadcast": "when launched (a broadcast)",
}
SCHEDULES = ("birthday", "anniversary", "days_after", "calendar", "cron")
# Schedules with a local time of day.
TIMED = ("birthday", "anniversary", "days_after", "calendar")
# Schedules counted from a card date (``since``; empty: the kind's own default).
DATED = ("anniversary", "days_after")
# A membership trigger's direction: either (null), or only one way.
DIRECTIONS = {"": "up or down", "upgrade": "by an upgrade", "downgrade": "by a downgrade"}
# The fields of each trigger the form edits (with ``type`` and ``kind``); any other field of a
# stored trigger is kept as it was.
EDITED = {
    "event": {"event", "filters", "recorded_within_days"},
    "stage": {"from", "to", "entered_within_days"},
    "membership": {"from", "to", "direction", "entered_within_days"},
    "birthday": {"at"},
    "anniversary": {"at", "since"},
    "days_after": {"at", "since", "days", "rhythm_multiple", "catch_up_days"},
    "calendar": {"at", "name", "calendar", "dates", "solemn_days"},
    "cron": {"expression"},
    "broadcast": set(),
}


@dataclass
class TriggerForm:
    type: str = "event"
    event: str = "order.paid"
    # An event's filters (the ``filter_*`` controls).
    filter: DataFilter = field(default_factory=DataFilter)
    recorded_within_days: str = ""
    stage_from: list[str] = field(default_factory=list)
    stage_to: list[str] = field(default_factory=list)
    entered_within_days: str = ""
    member_from: str = ""
    member_to: str = ""
    member_direction: str = ""
    at: str = "09:00"
    since: str = ""
    after_days: str = ""
    rhythm_multiple: str = ""
    catch_up_days: str = ""
    calendar_name: str = ""
    calendar_dates: str = ""
    holiday_calendar: str = ""
    solemn_days: bool = False
    cron: str = ""

    @classmethod
    def of_fields(
        cls, get: Callable[[str], str], get_all: Callable[[str], list[str]]
    ) -> TriggerForm:
        """The trigger from posted fields."""
        return cls(
            type=get("trigger_type") or "event",
            event=get("trigger_event"),
            filter=DataFilter.of_fields(get, "filter"),
            recorded_within_days=get("recorded_within_days"),
            stage_from=get_all("stage_from"),
            stage_to=get_all("stage_to"),
            entered_within_days=get("entered_within_days"),
            member_from=get("member_from"),
            member_to=get("member_to"),
            member_direction=get("member_direction"),
            at=get("schedule_at"),
            since=get("since"),
            after_days=get("after_days"),
            rhythm_multiple=get("rhythm_multiple"),
            catch_up_days=get("catch_up_days"),
            calendar_name=get("calendar_name"),
            calendar_dates=get("calendar_dates"),
            holiday_calendar=get("holiday_calendar"),
            solemn_days=get("solemn_days") == "on",
            cron=get("cron_expression"),
        )

    @classmethod
    def of_trigger(cls, trigger: dict[str, Any]) -> tuple[TriggerForm, dict[str, Any]]:
        """The form of a stored trigger, and the fields of it the form does not edit (with
        the trigger's ``type`` and ``kind``, so they go back only into a trigger of that
        type; empty when there are none)."""
        kind = trigger.get("type", "event")
        if kind == "schedule":
            kind = trigger.get("kind", "")
        form = cls(type=kind)
        if kind == "event":
            form.event = trigger.get("event") or ""
            form.recorded_within_days = _text(trigger.get("recorded_within_days"))
            form.filter = DataFilter.of_filters(trigger.get("filters"))
        elif kind == "stage":
            form.stage_from = list(trigger.get("from") or [])
            form.stage_to = list(trigger.get("to") or [])
        elif kind == "membership":
            form.member_from = ", ".join(trigger.get("from") or [])
            form.member_to = ", ".join(trigger.get("to") or [])
            form.member_direction = trigger.get("direction") or ""
        form.entered_within_days = _text(trigger.get("entered_within_days"))
        form.at = str(trigger.get("at") or "09:00")[:5]
        form.since = trigger.get("since") or ""
        form.after_days = _text(trigger.get("days"))
        form.rhythm_multiple = _text(trigger.get("rhythm_multiple"))
        form.catch_up_days = _text(trigger.get("catch_up_days"))
        form.calendar_name = trigger.get("name") or ""
        form.calendar_dates = "\n".join(trigger.get("dates") or [])
        form.holiday_calendar = trigger.get("calendar") or ""
        form.solemn_days = trigger.get("solemn_days") is True
        form.cron = trigger.get("expression") or ""
        edited = EDITED.get(kind, set()) | {"type", "kind"}
        extra = {k: v for k, v in trigger.items() if k not in edited}
        if not extra:
            return form, {}
        tags: dict[str, Any] = {k: trigger[k] for k in ("type", "kind") if k in trigger}
        return form, {**tags, **extra}

    def document(self, kept: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The trigger outreach takes (with ``kept``, the stored trigger's fields the form
        does not edit, when the trigger is still of their type), and the form's own errors
        (numbers that are not numbers)."""
        errors: dict[str, str] = {}

        def number(name: str, text: str, parse: Callable[[str], float | int], what: str) -> Any:
            try:
                return parse(text)
            except ValueError:
                errors[name] = what
                return None

        whole = "a whole number of days"
        doc: dict[str, Any]
        if self.type == "event":
            doc = {"type": "event", "event": self.event}
            filters, error = self.filter.filters()
            if error:
                errors["filter_field"] = error
            elif filters is not None:
                doc["filters"] = filters
            if self.recorded_within_days:
                doc["recorded_within_days"] = number(
                    "recorded_within_days", self.recorded_within_days, int, whole
                )
        elif self.type in ("stage", "membership"):
            if self.type == "stage":
                doc = {"type": "stage", "from": self.stage_from, "to": self.stage_to}
            else:
                doc = {
                    "type": "membership",
                    "from": tier_names(self.member_from),
                    "to": tier_names(self.member_to),
                    "direction": self.member_direction or None,
                }
            if self.entered_within_days:
                doc["entered_within_days"] = number(
                    "entered_within_days", self.entered_within_days, int, whole
                )
        elif self.type not in SCHEDULES:
            doc = {"type": self.type}  # broadcast (or what outreach will refuse)
        else:
            doc = {"type": "schedule", "kind": self.type}
            if self.type in TIMED:
                doc["at"] = self.at
            if self.type in DATED and self.since.strip():
                doc["since"] = self.since.strip()
            if self.type == "days_after":
                if self.after_days:
                    doc["days"] = number("after_days", self.after_days, int, whole)
                if self.rhythm_multiple:
                    doc["rhythm_multiple"] = number(
                        "rhythm_multiple", self.rhythm_multiple, float, "a number, such as 1.5"
                    )
                if self.catch_up_days:
                    doc["catch_up_days"] = number("catch_up_days", self.catch_up_days, int, whole)
            elif self.type == "calendar":
                doc["name"] = self.calendar_name
                doc["dates"] = self.calendar_dates.replace(",", " ").split()
                if self.holiday_calendar.strip():
                    doc["calendar"] = self.holiday_calendar.strip()
                if self.solemn_days:
                    doc["solemn_days"] = True
            elif self.type == "cron":
                doc["expression"] = self.cron
        if all(kept.get(k) == doc.get(k) for k in ("type", "kind")):
            doc = {**doc, **{k: v for k, v in kept.items() if k not in doc}}
        return doc, errors


def trigger_words(trigger: dict[str, Any]) -> str:
    """A stored trigger in a few words, for the rules list: an event with its filters
    (``event: complaint.opened where severity equals high``), a stage or tier entered, a
    schedule's kind."""
    kind = trigger.get("type", "")
    if kind == "event":
        filters = trigger.get("filters")
        where = f" where {described(filters)}" if filters else ""
        return f"event: {trigger.get('event')}{where}"
    if kind in ("stage", "membership") and trigger.get("to"):
        return f"{kind}: to {', '.join(trigger['to'])}"
    if kind == "schedule":
        return f"schedule: {str(trigger.get('kind', '')).replace('_', ' ')}"
    return str(kind)


def tier_names(text: str) -> list[str]:
    """Membership tier names written one a line or comma-separated (a name may hold spaces)."""
    return [name.strip() for name in text.replace("\n", ",").split(",") if name.strip()]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# The control of each field of a trigger, by the field's name in the API's error.
_CONTROLS = {
    "event": "trigger_event",
    "filters": "filter_field",
    "recorded_within_days": "recorded_within_days",
    "from": "stage_from",
    "to": "stage_to",
    "entered_within_days": "entered_within_days",
    "at": "schedule_at",
    "since": "since",
    "days": "after_days",
    "rhythm_multiple": "rhythm_multiple",
    "catch_up_days": "catch_up_days",
    "name": "calendar_name",
    "dates": "calendar_dates",
    "calendar": "holiday_calendar",
    "solemn_days": "holiday_calendar",
    "expression": "cron_expression",
}
# A membership trigger's tiers and direction have controls of their own.
_MEMBERSHIP_CONTROLS = {
    **_CONTROLS,
    "from": "member_from",
    "to": "member_to",
    "direction": "member_direction",
}
# Where an error about a whole trigger of a kind goes (its fields together are wrong).
_WHOLE = {
    "days_after": "after_days",  # exactly one of days or rhythm_multiple
    "calendar": "holiday_calendar",  # a calendar, dates or both; dates with `customer` only
}


def trigger_field_of(path: str) -> str:
    """The control of an error under ``trigger`` (``trigger.schedule.cron.expression``,
    ``trigger.membership.to.0``); the trigger choice itself for the trigger as a whole."""
    parts = [p for p in path.split(".")[1:] if not p.isdigit()]
    # The union's tags sit between ``trigger`` and the field: the type, and a schedule's kind.
    tags = 2 if parts[:1] == ["schedule"] else 1
    tag, fields = parts[:tags], parts[tags:]
    if not fields:
        return _WHOLE.get(tag[-1], "trigger_type") if len(tag) == 2 else "trigger_type"
    controls = _MEMBERSHIP_CONTROLS if tag == ["membership"] else _CONTROLS
    return controls.get(fields[0], "trigger_type")
