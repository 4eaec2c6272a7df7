"""A rule as the editor's form holds it, and the JSON document outreach takes.

The form builds a rule of any trigger (:mod:`.rule_trigger`, with an event's filters), one
condition (:mod:`.rule_expression`; or a JSON expression), any action (:mod:`.rule_action`:
a message, or a ``tag`` action that adds and removes tags), the limits, a control group and
a priority. Outreach judges the rule; its 422 names fields (``body.action.template``), which
:func:`field_of` places next to the form's own control.

The goal's filters (which of its events count: an order of ``amount`` at least 50) are one
test or JSON too. What a stored rule holds beyond the form's controls (a field a newer
outreach added) is kept as it was and sent back with the form's fields (``RuleForm.kept``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.console.pages.rule_action import ActionForm, action_field_of
from services.console.pages.rule_expression import DataFilter, expression, one_test
from services.console.pages.rule_trigger import TriggerForm, trigger_field_of
from shared.events import EventType

# What a goal may count: any event (empty: an order, the default).
GOAL_EVENTS = [e.value for e in EventType]
GOAL_COUNTS = {"first": "the first one counts", "every": "every one adds its value"}
# The goal's fields the form edits; any other is kept.
GOAL_EDITED = ("event", "filters", "within_days", "count")
# The limits the form edits, by control: each a whole number (``once`` is a checkbox).
LIMITS = ("cooldown_days", "max_per_customer", "not_contacted_days", "max_per_day")
# The rule's own fields the form edits (with ``control_percent``); the others are kept.
EDITED = (
    "id",
    "name",
    "description",
    "trigger",
    "conditions",
    "action",
    "limits",
    "priority",
    "enabled",
    "control_percent",
    "goal",
)


@dataclass
class RuleForm:
    rule_id: str = ""
    name: str = ""
    description: str = ""
    trigger: TriggerForm = field(default_factory=TriggerForm)
    cond_field: str = ""
    cond_op: str = "gt"
    cond_value: str = ""
    conditions_json: str = ""
    action: ActionForm = field(default_factory=ActionForm)
    cooldown_days: str = ""
    max_per_customer: str = ""
    not_contacted_days: str = ""
    max_per_day: str = ""
    once: bool = False
    # The share of matches held out as the control group (percent; empty: none).
    control_percent: str = ""
    # The goal: an event (empty with the rest: an order in the kind's window), within how
    # many days (empty: the kind's window), and how its events count.
    goal_event: str = ""
    goal_within_days: str = ""
    goal_count: str = "first"
    # Which of the goal's events count (the ``goal_filter_*`` controls).
    goal_filter: DataFilter = field(default_factory=DataFilter)
    priority: str = "0"
    enabled: bool = True
    # The dry runs: a preview as at an instant (empty: now), a backtest over past days.
    preview_at: str = ""
    backtest_days: str = "30"
    # Whose card the template is rendered on (the editor's "as this customer would get it").
    render_customer: str = ""
    # Fields of the stored rule the form does not edit, kept as they were.
    kept: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of_fields(cls, get: Callable[[str], str], get_all: Callable[[str], list[str]]) -> RuleForm:
        """The form from posted fields (``get(name) -> str``, ``get_all(name) -> [str]``)."""
        kept_text = get("kept")
        try:
            kept = json.loads(kept_text) if kept_text else {}
        except ValueError:
            kept = {}
        return cls(
            rule_id=get("rule_id"),
            name=get("name"),
            description=get("description"),
            trigger=TriggerForm.of_fields(get, get_all),
            cond_field=get("cond_field"),
            cond_op=get("cond_op"),
            cond_value=get("cond_value"),
            conditions_json=get("conditions_json"),
            action=ActionForm.of_fields(get),
            cooldown_days=get("cooldown_days"),
            max_per_customer=get("max_per_customer"),
            not_contacted_days=get("not_contacted_days"),
            max_per_day=get("max_per_day"),
            once=get("once") == "on",
            control_percent=get("control_percent"),
            goal_event=get("goal_event"),
            goal_within_days=get("goal_within_days"),
            goal_count=get("goal_count") or "first",
            goal_filter=DataFilter.of_fields(get, "goal_filter"),
            priority=get("priority") or "0",
            enabled=get("enabled") == "on",
            preview_at=get("preview_at"),
            backtest_days=get("backtest_days") or "30",
            render_customer=get("render_customer"),
            kept=kept if isinstance(kept, dict) else {},
        )

    @classmethod
    def of_rule(cls, rule: dict[str, Any]) -> RuleForm:
        """The form of a stored rule (:func:`editable` says whether the form can hold it)."""
        limits = rule.get("limits") or {}
        form = cls(
            rule_id=rule["id"],
            name=rule.get("name", ""),
            description=rule.get("description", ""),
            once=bool(limits.get("once")),
            control_percent=_text(rule.get("control_percent") or None),
            priority=str(rule.get("priority", 0)),
            enabled=bool(rule.get("enabled", True)),
        )
        for name in LIMITS:
            setattr(form, name, _text(limits.get(name)))
        goal = rule.get("goal") or {}
        form.goal_event = goal.get("event") or ""
        form.goal_within_days = _text(goal.get("within_days"))
        form.goal_count = goal.get("count") or "first"
        form.goal_filter = DataFilter.of_filters(goal.get("filters"))
        goal_extra = {k: v for k, v in goal.items() if k not in GOAL_EDITED}
        goal_extra = {k: v for k, v in goal_extra.items() if v is not None}
        conditions = rule.get("conditions")
        test = one_test(conditions)
        if test:
            form.cond_op, form.cond_field, form.cond_value = test
        elif conditions:
            form.conditions_json = json.dumps(conditions, indent=2)
        form.trigger, trigger_extra = TriggerForm.of_trigger(rule["trigger"])
        form.action, action_extra = ActionForm.of_action(rule.get("action") or {})
        limits_extra = {k: v for k, v in limits.items() if k not in (*LIMITS, "once")}
        form.kept = {
            **({"trigger": trigger_extra} if trigger_extra else {}),
            **({"action": action_extra} if action_extra else {}),
            **({"limits": limits_extra} if limits_extra else {}),
            # What a goal holds beyond the form names its event's fields: it stays with that event.
            **({"goal": {**goal_extra, "event": form.goal_event}} if goal_extra else {}),
            **{k: v for k, v in rule.items() if k not in EDITED},
        }
        return form

    def document(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The rule document outreach takes, and the form's own errors (fields it cannot
        even put into the document)."""
        kept = dict(self.kept)
        trigger, errors = self.trigger.document(kept.pop("trigger", {}))
        action, action_errors = self.action.document(kept.pop("action", {}))
        errors.update(action_errors)
        doc: dict[str, Any] = {
            "id": self.rule_id,
            "name": self.name,
            "description": self.description,
            "trigger": trigger,
            "action": action,
            "enabled": self.enabled,
        }
        try:
            doc["priority"] = int(self.priority)
        except ValueError:
            errors["priority"] = "a whole number, from -1000 to 1000"
        limits: dict[str, Any] = dict(kept.pop("limits", {}))
        for name in LIMITS:
            text = getattr(self, name).strip()
            if text:
                try:
                    limits[name] = int(text)
                except ValueError:
                    errors[name] = "a whole number"
        if self.once:
            limits["once"] = True
        if self.control_percent.strip():
            try:
                doc["control_percent"] = float(self.control_percent)
            except ValueError:
                errors["control_percent"] = "a percentage, from 0 to 50"
        goal, goal_errors = self.goal(kept.pop("goal", {}))
        errors.update(goal_errors)
        doc["goal"] = goal
        if self.action.is_tag:
            # A tag action is not a contact: no limit or control group applies (the form
            # hides their controls for it).
            limits = {}
            doc.pop("control_percent", None)
        doc["limits"] = limits
        if self.conditions_json.strip():
            try:
                doc["conditions"] = json.loads(self.conditions_json)
            except ValueError as e:
                errors["condition"] = f"the JSON expression does not parse: {e}"
        elif (condition := self.condition()) is not None:
            doc["conditions"] = condition
        doc.update(kept)
        return doc, errors

    def goal(self, kept: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The rule's goal (None: the default, an order within the kind's window), with
        ``kept`` (what the stored goal holds beyond the form, while the goal's event is
        theirs), and the form's own errors."""
        filters, error = self.goal_filter.filters()
        errors = {"goal_filter_field": error} if error else {}
        if not (
            self.goal_event
            or self.goal_within_days.strip()
            or self.goal_count != "first"
            or filters is not None
        ):
            return None, errors
        goal: dict[str, Any] = {"event": self.goal_event or EventType.ORDER_PLACED.value}
        if kept.get("event") == goal["event"]:
            goal.update({k: v for k, v in kept.items() if k != "event"})
        if filters is not None:
            goal["filters"] = filters
        goal["count"] = self.goal_count
        if self.goal_within_days.strip():
            try:
                goal["within_days"] = int(self.goal_within_days)
            except ValueError:
                errors["goal_within_days"] = "a whole number of days"
        return goal, errors

    def condition(self) -> dict[str, Any] | None:
        """The one test the form holds over the card (None: none, every customer)."""
        return expression(self.cond_op, self.cond_field, self.cond_value)


def instant_param(local: str) -> str | None:
    """A ``datetime-local`` value (``2026-12-24T09:00``) as the API's ISO instant, read as
    UTC; None when empty."""
    text = local.strip()
    if not text:
        return None
    return text if text.endswith("Z") or "+" in text[10:] else text + "Z"


def editable(rule: dict[str, Any]) -> bool:
    """The form edits a rule of every trigger type outreach knows; another (a document from
    a newer outreach) is shown as JSON."""
    trigger_type = rule.get("trigger", {}).get("type")
    return trigger_type in ("event", "stage", "membership", "schedule", "broadcast")


def field_of(api_field: str, reason: str) -> str:
    """The form control an API error field (``body.action.template``) belongs to; ``""``
    for the form as a whole."""
    path = api_field.removeprefix("body.").removeprefix("body")
    exact = {
        "id": "rule_id",
        "name": "name",
        "description": "description",
        "priority": "priority",
        "control_percent": "control_percent",
        "limits": "cooldown_days",  # a tag action takes none
        "limits.once": "once",
        "goal": "goal_event",
        "goal.event": "goal_event",
        "goal.filters": "goal_filter_field",
        "goal.within_days": "goal_within_days",
        "goal.count": "goal_count",
        # The render of the template on a customer (POST /v1/templates/render).
        "customer_id": "render_customer",
        **{f"limits.{name}": name for name in LIMITS},
    }
    if path in exact:
        return exact[path]
    if path in ("query.at",):
        return "preview_at"
    if path in ("query.days",):
        return "backtest_days"
    if path == "trigger" or path.startswith("trigger."):
        return trigger_field_of(path)
    if path.startswith("conditions"):
        return "condition"
    if path == "action" or path.startswith("action."):
        return action_field_of(path, reason)
    if path.startswith(("template.", "offer")):  # the render's template and offer
        return action_field_of(f"action.{path}", reason)
    return ""


def _text(value: Any) -> str:
    return "" if value is None else str(value)
