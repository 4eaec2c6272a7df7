"""A rule's action as the editor's form holds it: a message (its kind, channel, a named
channel, whether it alerts the shop's team, subject and body, an offer) or a ``tag`` action
(the tags it adds and removes, sending nothing), and the JSON document it becomes.

Outreach judges the action; its 422 names fields such as ``body.action.offer.code``, which
:func:`action_field_of` places next to the control that holds the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ["greeting", "follow_up", "recall", "winback", "care", "apology", "announcement", "tag"]
# The kind that sends nothing: it adds and removes the customer's tags.
TAG = "tag"
# What only a message has: a tag action drops these (the form hides their controls for it).
MESSAGE_ONLY = ("channel", "channel_id", "audience", "offer", "template")
# ``preferred``: each customer's own choice of email or SMS.
CHANNELS = ["email", "sms", "webhook", "preferred"]
# The fields of an action the form edits; any other field of a stored action is kept.
EDITED = ("kind", "tags", *MESSAGE_ONLY)


@dataclass
class ActionForm:
    kind: str = "follow_up"
    channel: str = "email"
    # A named channel of the kind (empty: the kind's newest).
    channel_id: str = ""
    # An alert to the shop's own people about the customer, by webhook, rather than a message.
    team: bool = False
    subject: str = ""
    body: str = ""
    # A tag action's tags, separated by spaces (a tag holds none).
    tags_add: str = ""
    tags_remove: str = ""
    offer_code: str = ""
    offer_description: str = ""
    offer_discount: str = ""
    offer_expires_days: str = ""

    @property
    def is_tag(self) -> bool:
        return self.kind == TAG

    @classmethod
    def of_fields(cls, get: Callable[[str], str]) -> ActionForm:
        """The action from posted fields."""
        return cls(
            kind=get("action_kind"),
            channel=get("action_channel"),
            channel_id=get("channel_id"),
            team=get("team_alert") == "on",
            subject=get("subject"),
            body=get("body"),
            tags_add=get("tags_add"),
            tags_remove=get("tags_remove"),
            offer_code=get("offer_code"),
            offer_description=get("offer_description"),
            offer_discount=get("offer_discount"),
            offer_expires_days=get("offer_expires_days"),
        )

    @classmethod
    def of_action(cls, action: dict[str, Any]) -> tuple[ActionForm, dict[str, Any]]:
        """The form of a stored action, and the fields of it the form does not edit."""
        template = action.get("template") or {}
        tags = action.get("tags") or {}
        offer = action.get("offer") or {}
        expires = offer.get("expires_days")
        form = cls(
            kind=action.get("kind", ""),
            channel=action.get("channel") or "email",
            channel_id=action.get("channel_id") or "",
            team=action.get("audience") == "team",
            subject=template.get("subject", ""),
            body=template.get("body", ""),
            tags_add=" ".join(tags.get("add") or []),
            tags_remove=" ".join(tags.get("remove") or []),
            offer_code=offer.get("code") or "",
            offer_description=offer.get("description") or "",
            offer_discount=offer.get("discount") or "",
            offer_expires_days="" if expires is None else str(expires),
        )
        return form, {k: v for k, v in action.items() if k not in EDITED}

    def document(self, kept: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The action outreach takes, with ``kept`` (the stored action's fields the form does
        not edit), and the form's own errors."""
        if self.is_tag:
            tags = {"add": self.tags_add.split(), "remove": self.tags_remove.split()}
            rest = {k: v for k, v in kept.items() if k not in MESSAGE_ONLY}
            return {"kind": TAG, "tags": tags, **rest}, {}
        doc: dict[str, Any] = {
            "kind": self.kind,
            "channel": self.channel,
            "template": {"subject": self.subject, "body": self.body},
        }
        if self.channel_id.strip():
            doc["channel_id"] = self.channel_id.strip()
        if self.team:
            doc["audience"] = "team"
        offer, errors = self.offer()
        if offer is not None:
            doc["offer"] = offer
        return {**doc, **kept}, errors

    def offer(self) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The message's offer (None when its controls are empty), and the form's errors."""
        parts = (self.offer_code, self.offer_description, self.offer_discount)
        if not any(p.strip() for p in (*parts, self.offer_expires_days)):
            return None, {}
        offer: dict[str, Any] = {"code": self.offer_code.strip()}
        if self.offer_description.strip():
            offer["description"] = self.offer_description.strip()
        if self.offer_discount.strip():
            offer["discount"] = self.offer_discount.strip()
        if self.offer_expires_days.strip():
            try:
                offer["expires_days"] = int(self.offer_expires_days)
            except ValueError:
                return offer, {"offer_expires_days": "a whole number of days"}
        return offer, {}


# The control of each field of an action, by its path in the API's error.
_CONTROLS = {
    "action.kind": "action_kind",
    "action.channel": "action_channel",
    "action.channel_id": "channel_id",
    "action.audience": "team_alert",
    "action.template.subject": "subject",
    "action.template.body": "body",
    "action.offer": "offer_code",
    "action.offer.code": "offer_code",
    "action.offer.description": "offer_description",
    "action.offer.discount": "offer_discount",
    "action.offer.expires_days": "offer_expires_days",
    "action.tags": "tags_add",
    "action.tags.add": "tags_add",
    "action.tags.remove": "tags_remove",
}


def action_field_of(path: str, reason: str) -> str:
    """The control of an error under ``action`` (``action.offer.code``, ``action.tags.add.0``);
    ``""`` when no control holds it."""
    named = ".".join(p for p in path.split(".") if not p.isdigit())
    if named in _CONTROLS:
        return _CONTROLS[named]
    if named.startswith("action.template"):
        return "subject" if reason.startswith("subject") else "body"
    if named == "action" and reason.startswith("a tag"):
        return "tags_add"  # a tag action needs tags, or carries something of a message's
    return ""
