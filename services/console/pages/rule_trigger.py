"""A rule's trigger as the editor's form holds it: every trigger outreach's rule schema has
(an event, a stage transition, the five schedules, a broadcast) with its own controls, and
the JSON document it becomes.

Outreach judges the trigger; its 422 names fields such as
``body.trigger.schedule.cron.expression``, which :func:`trigger_field_of` places next to the
control that holds the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    "birthday": "on the customer's birthday",
    "anniversary": "on the anniversary of the first order",
    "days_after": "a number of days after a date",
    "calendar": "on the dates of a calendar",
    "cron": "on a cron schedule",
    "broadcast": "when launched (a broadcast)",
}
SCHEDULES = ("birthday", "anniversary", "days_after", "calendar", "cron")
# Schedules with a local time of day.
TIMED = ("birthday", "anniversary", "days_after", "calendar")


@dataclass
class TriggerForm:
    type: str = "event"
    event: str = "order.paid"
    stage_from: list[str] = field(default_factory=list)
    stage_to: list[str] = field(default_factory=list)
    entered_within_days: str = ""
    at: str = "09:00"
    since: str = "value.last_order_at"
    after_days: str = ""
    rhythm_multiple: str = ""
    catch_up_days: str = ""
    calendar_name: str = ""
    calendar_dates: str = ""
    cron: str = ""

    @classmethod
    def of_fields(
        cls, get: Callable[[str], str], get_all: Callable[[str], list[str]]
    ) -> TriggerForm:
        """The trigger from posted fields."""
        return cls(
            type=get("trigger_type") or "event",
            event=get("trigger_event"),
            stage_from=get_all("stage_from"),
            stage_to=get_all("stage_to"),
            entered_within_days=get("entered_within_days"),
            at=get("schedule_at"),
            since=get("since"),
            after_days=get("after_days"),
            rhythm_multiple=get("rhythm_multiple"),
            catch_up_days=get("catch_up_days"),
            calendar_name=get("calendar_name"),
            calendar_dates=get("calendar_dates"),
            cron=get("cron_expression"),
        )

    @classmethod
    def of_trigger(cls, trigger: dict[str, Any]) -> tuple[TriggerForm, dict[str, Any]]:
        """The form of a stored trigger, and the fields of it the form does not edit."""
        kind = trigger.get("type", "event")
        if kind == "schedule":
            kind = trigger.get("kind", "")
        form = cls(type=kind)
        if kind == "event":
            form.event = trigger.get("event", "")
            extra = {k: v for k, v in trigger.items() if k not in ("type", "event")}
            return form, extra
        if kind == "stage":
            form.stage_from = list(trigger.get("from") or [])
            form.stage_to = list(trigger.get("to") or [])
            form.entered_within_days = _text(trigger.get("entered_within_days"))
        form.at = str(trigger.get("at") or "09:00")[:5]
        form.since = trigger.get("since") or form.since
        form.after_days = _text(trigger.get("days"))
        form.rhythm_multiple = _text(trigger.get("rhythm_multiple"))
        form.catch_up_days = _text(trigger.get("catch_up_days"))
        form.calendar_name = trigger.get("name") or ""
        form.calendar_dates = "\n".join(trigger.get("dates") or [])
        form.cron = trigger.get("expression") or ""
        return form, {}

    def document(self, kept: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The trigger outreach takes (``kept``: the stored event trigger's fields the form
        does not edit), and the form's own errors (numbers that are not numbers)."""
        errors: dict[str, str] = {}

        def number(name: str, text: str, parse: Callable[[str], float | int], what: str) -> Any:
            try:
                return parse(text)
            except ValueError:
                errors[name] = what
                return None

        whole = "a whole number of days"
        if self.type == "event":
            return {"type": "event", "event": self.event, **kept}, errors
        if self.type == "stage":
            doc: dict[str, Any] = {"type": "stage", "from": self.stage_from, "to": self.stage_to}
            if self.entered_within_days:
                doc["entered_within_days"] = number(
                    "entered_within_days", self.entered_within_days, int, whole
                )
            return doc, errors
        if self.type not in SCHEDULES:
            return {"type": self.type}, errors  # broadcast (or what outreach will refuse)
        doc = {"type": "schedule", "kind": self.type}
        if self.type in TIMED:
            doc["at"] = self.at
        if self.type == "days_after":
            doc["since"] = self.since
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
        elif self.type == "cron":
            doc["expression"] = self.cron
        return doc, errors


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# The control of each field of a trigger, by the field's last name in the API's error.
_CONTROLS = {
    "event": "trigger_event",
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
    "expression": "cron_expression",
}


def trigger_field_of(path: str) -> str:
    """The control of an error under ``trigger`` (``trigger.schedule.cron.expression``,
    ``trigger.stage.to.0``); the trigger choice itself for the trigger as a whole."""
    parts = [p for p in path.split(".")[1:] if not p.isdigit()]
    # The union's tags (``schedule``, ``cron``) sit between ``trigger`` and the field.
    named = [p for p in parts if p in _CONTROLS and p not in ("event",)] or [
        p for p in parts[1:] if p == "event"
    ]
    if named:
        return _CONTROLS[named[-1]]
    if parts[-2:] == ["schedule", "days_after"]:
        return "after_days"  # exactly one of days or rhythm_multiple
    return "trigger_type"
