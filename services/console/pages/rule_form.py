"""A rule as the editor's form holds it, and the JSON document outreach takes.

The form builds a rule of any trigger (:mod:`.rule_trigger`), one condition (or a JSON
expression), the action's kind, channel and template (or, for a ``tag`` action, the tags it
adds and removes), a cooldown and a priority. Outreach judges the rule; its 422 names fields
(``body.action.template``), which :func:`field_of` places next to the form's own control.

What a stored rule holds beyond the form's controls (an offer, a goal, a control group) is
kept as it was and sent back with the form's fields (``RuleForm.kept``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.console.pages.rule_trigger import TriggerForm, trigger_field_of

KINDS = ["greeting", "follow_up", "recall", "winback", "care", "apology", "announcement", "tag"]
# The kind that sends nothing: it adds and removes the customer's tags.
TAG = "tag"
# What only a message has: a tag action drops these (the form hides their controls for it).
MESSAGE_ONLY = ("channel", "channel_id", "audience", "offer", "template")
# ``preferred``: each customer's own choice of email or SMS.
CHANNELS = ["email", "sms", "webhook", "preferred"]
OPERATORS = {
    "eq": "equals",
    "ne": "does not equal",
    "gt": "is more than",
    "gte": "is at least",
    "lt": "is less than",
    "lte": "is at most",
    "exists": "is present",
    "has_tag": "has the tag",
}

FIELDS = [
    "rule_id",
    "name",
    "description",
    "trigger_type",
    "trigger_event",
    "stage_from",
    "stage_to",
    "member_to",
    "member_from",
    "member_direction",
    "entered_within_days",
    "schedule_at",
    "since",
    "after_days",
    "rhythm_multiple",
    "catch_up_days",
    "calendar_name",
    "calendar_dates",
    "holiday_calendar",
    "cron_expression",
    "condition",
    "action_kind",
    "action_channel",
    "subject",
    "body",
    "tags_add",
    "tags_remove",
    "cooldown_days",
    "priority",
    "preview_at",
    "backtest_days",
    "render_customer",
]


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
    action_kind: str = "follow_up"
    action_channel: str = "email"
    subject: str = ""
    body: str = ""
    # A tag action's tags, separated by spaces (a tag holds none).
    tags_add: str = ""
    tags_remove: str = ""
    cooldown_days: str = ""
    once: bool = False
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
            action_kind=get("action_kind"),
            action_channel=get("action_channel"),
            subject=get("subject"),
            body=get("body"),
            tags_add=get("tags_add"),
            tags_remove=get("tags_remove"),
            cooldown_days=get("cooldown_days"),
            once=get("once") == "on",
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
        action = rule.get("action", {})
        template = action.get("template") or {}
        tags = action.get("tags") or {}
        limits = rule.get("limits") or {}
        form = cls(
            rule_id=rule["id"],
            name=rule.get("name", ""),
            description=rule.get("description", ""),
            action_kind=action.get("kind", ""),
            action_channel=action.get("channel") or "email",
            subject=template.get("subject", ""),
            body=template.get("body", ""),
            tags_add=" ".join(tags.get("add") or []),
            tags_remove=" ".join(tags.get("remove") or []),
            cooldown_days=str(limits.get("cooldown_days") or ""),
            once=bool(limits.get("once")),
            priority=str(rule.get("priority", 0)),
            enabled=bool(rule.get("enabled", True)),
        )
        conditions = rule.get("conditions")
        simple = _simple(conditions)
        if simple:
            form.cond_op, form.cond_field, form.cond_value = simple
        elif conditions:
            form.conditions_json = json.dumps(conditions, indent=2)
        form.trigger, trigger_extra = TriggerForm.of_trigger(rule["trigger"])
        edited = ("kind", "channel", "template", "tags")
        action_extra = {k: v for k, v in action.items() if k not in edited}
        limits_extra = {k: v for k, v in limits.items() if k not in ("cooldown_days", "once")}
        rest = {
            k: v
            for k, v in rule.items()
            if k
            not in (
                "id",
                "name",
                "description",
                "trigger",
                "conditions",
                "action",
                "limits",
                "priority",
                "enabled",
            )
        }
        form.kept = {
            **({"trigger": trigger_extra} if trigger_extra else {}),
            **({"action": action_extra} if action_extra else {}),
            **({"limits": limits_extra} if limits_extra else {}),
            **rest,
        }
        return form

    def document(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The rule document outreach takes, and the form's own errors (fields it cannot
        even put into the document)."""
        kept = dict(self.kept)
        trigger, errors = self.trigger.document(kept.pop("trigger", {}))
        doc: dict[str, Any] = {
            "id": self.rule_id,
            "name": self.name,
            "description": self.description,
            "trigger": trigger,
            "action": self.action(kept.pop("action", {})),
            "enabled": self.enabled,
        }
        try:
            doc["priority"] = int(self.priority)
        except ValueError:
            errors["priority"] = "a whole number, from -1000 to 1000"
        limits: dict[str, Any] = dict(kept.pop("limits", {}))
        if self.cooldown_days:
            try:
                limits["cooldown_days"] = int(self.cooldown_days)
            except ValueError:
                errors["cooldown_days"] = "a whole number of days"
        if self.once:
            limits["once"] = True
        # A tag action is not a contact: no limit applies (the form hides them for it).
        doc["limits"] = {} if self.action_kind == TAG else limits
        if self.conditions_json.strip():
            try:
                doc["conditions"] = json.loads(self.conditions_json)
            except ValueError as e:
                errors["condition"] = f"the JSON expression does not parse: {e}"
        elif self.cond_field or (self.cond_op == "has_tag" and self.cond_value):
            # A tag test names no card field: its value is the tag.
            doc["conditions"] = self.condition()
        doc.update(kept)
        return doc, errors

    def action(self, kept: dict[str, Any]) -> dict[str, Any]:
        """The action outreach takes, with ``kept``, the stored action's fields the form does
        not edit (a tag action takes none of a message's)."""
        if self.action_kind == TAG:
            tags = {"add": self.tags_add.split(), "remove": self.tags_remove.split()}
            rest = {k: v for k, v in kept.items() if k not in MESSAGE_ONLY}
            return {"kind": TAG, "tags": tags, **rest}
        return {
            "kind": self.action_kind,
            "channel": self.action_channel,
            "template": {"subject": self.subject, "body": self.body},
            **kept,
        }

    def condition(self) -> dict[str, Any]:
        if self.cond_op == "has_tag":
            return {"has_tag": self.cond_value}
        if self.cond_op == "exists":
            return {"exists": self.cond_field}
        return {self.cond_op: [self.cond_field, _value(self.cond_value)]}


def instant_param(local: str) -> str | None:
    """A ``datetime-local`` value (``2026-12-24T09:00``) as the API's ISO instant, read as
    UTC; None when empty."""
    text = local.strip()
    if not text:
        return None
    return text if text.endswith("Z") or "+" in text[10:] else text + "Z"


def _value(text: str) -> Any:
    """A typed value: a number, true/false, null or a quoted string as JSON; other text as
    it is (``key``, ``at_risk``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _simple(conditions: Any) -> tuple[str, str, str] | None:
    """``(op, field, value)`` of a one-comparison expression the form shows as such."""
    if not isinstance(conditions, dict) or len(conditions) != 1:
        return None
    [(op, arg)] = conditions.items()
    if op == "has_tag" and isinstance(arg, str):
        return op, "", arg
    if op == "exists" and isinstance(arg, str):
        return op, arg, ""
    if op in OPERATORS and isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str):
        value = arg[1]
        return op, arg[0], value if isinstance(value, str) else json.dumps(value)
    return None


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
        "action.kind": "action_kind",
        "action.channel": "action_channel",
        "action.channel_id": "action_channel",
        "action.audience": "action_channel",  # a team alert goes by webhook
        "action.template.subject": "subject",
        "action.template.body": "body",
        "limits.cooldown_days": "cooldown_days",
        # The render of the template on a customer (POST /v1/templates/render).
        "template.subject": "subject",
        "template.body": "body",
        "customer_id": "render_customer",
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
    if path.startswith("action.template"):
        return "subject" if reason.startswith("subject") else "body"
    if path.startswith("action.kind"):
        return "action_kind"
    if path.startswith("action.tags.remove"):
        return "tags_remove"
    if path.startswith("action.tags") or (path == "action" and reason.startswith("a tag")):
        return "tags_add"
    return ""
