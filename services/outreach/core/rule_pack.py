"""The default rule pack: the rules a new deployment starts with, as the JSON the rules API
takes, so each one also documents the syntax. Marketing edits them like any other rule.

Notes on a few of them:

- ``winback-churned`` has no limit of its own: its occurrence is the churn episode (the day
  the customer became churned), so it fires once per churn, and again after a reactivation
  and a new churn — whether the churn was seen live, in an imported history, or the customer
  became key or regular only later. It reaches only customers lost within the last 180 days.
- ``care-key-quiet`` runs daily but only reaches a key customer nobody has contacted for 60
  days: ``not_contacted_days`` looks at every message they received, ``cooldown_days`` keeps
  this rule itself to once per 60 days even if other messages did go out in between.
- ``new-arrivals`` is a broadcast: it fires only when an operator launches it, to the
  customers its conditions select.
- Every complaint is answered: an apology for high severity, an acknowledgement for the
  others, and ``complaint-team-alert`` tells the team (a team alert: no consent, cap or quiet
  hours, never a contact with the customer) through the current webhook channel — name a
  team's own channel in it (``channel_id``) to keep alerts apart from customer messages.
"""

from __future__ import annotations

from typing import Any

from services.outreach.core.rules import Rule

_SIGN_OFF = "\n\nThe Tend shop\nUnsubscribe: {{ unsubscribe_url }}"

DEFAULT_PACK: list[dict[str, Any]] = [
    {
        "id": "birthday-greeting",
        "name": "Birthday greeting",
        "trigger": {"type": "schedule", "kind": "birthday", "at": "09:00"},
        "action": {
            "kind": "greeting",
            "channel": "email",
            "template": {
                "subject": "Happy birthday{% if customer.name %}, {{ customer.name }}{% endif %}!",
                "body": "Hello {{ customer.name or 'there' }},\n\nAll of us wish you a happy "
                "birthday.{% if offer %} Here is a gift: {{ offer.description }}, with the "
                "code {{ offer.code }}.{% endif %}" + _SIGN_OFF,
            },
            "offer": {"code": "BIRTHDAY10", "description": "10% off one order", "discount": "10%"},
        },
        "limits": {"cooldown_days": 300},
        "priority": 40,
    },
    {
        "id": "holiday-greeting",
        "name": "Holiday greeting",
        "trigger": {
            "type": "schedule",
            "kind": "calendar",
            "name": "holidays",
            "dates": ["12-25", "01-01"],
            "at": "09:00",
        },
        "action": {
            "kind": "greeting",
            "channel": "webhook",
            "template": {
                "subject": "Season's greetings",
                "body": "Season's greetings, {{ customer.name or 'friend' }}, from all of us.",
            },
        },
        "priority": 10,
    },
    {
        "id": "purchase-follow-up",
        "name": "Follow-up 7 days after a purchase",
        "trigger": {
            "type": "schedule",
            "kind": "days_after",
            "since": "value.last_order_at",
            "days": 7,
        },
        "action": {
            "kind": "follow_up",
            "channel": "email",
            "template": {
                "subject": "How is your order?",
                "body": "Hello {{ customer.name or 'there' }},\n\nYour order arrived about a "
                "week ago. How do you like it? Just reply to this message." + _SIGN_OFF,
            },
        },
        "limits": {"cooldown_days": 14},
        "priority": 30,
    },
    {
        "id": "rhythm-recall",
        "name": "Recall at 1.5x the customer's purchase rhythm",
        "trigger": {
            "type": "schedule",
            "kind": "days_after",
            "since": "value.last_order_at",
            "rhythm_multiple": 1.5,
        },
        "conditions": {"exists": "value.purchase_interval_days"},
        "action": {
            "kind": "recall",
            "channel": "email",
            "template": {
                "subject": "Time for a refill?",
                "body": "Hello {{ customer.name or 'there' }},\n\nYou usually order every "
                "{{ card.value.purchase_interval_days | round | int }} days, so we thought "
                "you might be running low." + _SIGN_OFF,
            },
        },
        "limits": {"cooldown_days": 30},
        "priority": 50,
    },
    {
        "id": "winback-churned",
        "name": "Win back key and regular customers lost within the last 180 days",
        "trigger": {"type": "stage", "from": [], "to": ["churned"], "entered_within_days": 180},
        "conditions": {"in": ["tier", ["key", "regular"]]},
        "action": {
            "kind": "winback",
            "channel": "email",
            "template": {
                "subject": "We miss you{% if customer.name %}, {{ customer.name }}{% endif %}",
                "body": "Hello {{ customer.name or 'there' }},\n\nIt has been a while. Come "
                "back with {{ offer.description }}: use the code {{ offer.code }}." + _SIGN_OFF,
            },
            "offer": {
                "code": "COMEBACK15",
                "description": "15% off your next order",
                "discount": "15%",
                "expires_days": 30,
            },
        },
        "priority": 60,
    },
    {
        "id": "care-key-quiet",
        "name": "Care for key customers not contacted for 60 days",
        "trigger": {"type": "schedule", "kind": "cron", "expression": "0 10 * * *"},
        "conditions": {"eq": ["tier", "key"]},
        "action": {
            "kind": "care",
            "channel": "webhook",
            "template": {
                "subject": "Check in with a key customer",
                "body": "{{ customer.name or card.customer_id }} is a key customer "
                "(lifetime spend {{ card.value.lifetime_spend }}) nobody has contacted for "
                "60 days. A personal call is due.",
            },
        },
        "limits": {"cooldown_days": 60, "not_contacted_days": 60},
        "priority": 70,
    },
    {
        "id": "complaint-apology",
        "name": "Apology on a high-severity complaint",
        "trigger": {
            "type": "event",
            "event": "complaint.opened",
            "filters": {"eq": ["severity", "high"]},
        },
        "action": {
            "kind": "apology",
            "channel": "email",
            "template": {
                "subject": "We are sorry",
                "body": "Hello {{ customer.name or 'there' }},\n\nWe are sorry about what "
                "happened. A member of our team is looking into it and will get back to you "
                "personally.\n\nThe Tend shop",
            },
        },
        "priority": 100,
    },
    {
        "id": "complaint-acknowledgement",
        "name": "Acknowledge every other complaint",
        "trigger": {
            "type": "event",
            "event": "complaint.opened",
            "filters": {"in": ["severity", ["low", "medium"]]},
        },
        "action": {
            "kind": "care",
            "channel": "email",
            "template": {
                "subject": "We have received your message",
                "body": "Hello {{ customer.name or 'there' }},\n\nThank you for telling us. "
                "We have received your message and will come back to you shortly.\n\n"
                "The Tend shop",
            },
        },
        "priority": 95,
    },
    {
        "id": "complaint-team-alert",
        "name": "Alert the team to every complaint",
        "trigger": {"type": "event", "event": "complaint.opened"},
        "action": {
            "kind": "care",
            "channel": "webhook",
            "audience": "team",
            "template": {
                "subject": "A complaint to answer",
                "body": "{{ customer.name or card.customer_id }} ({{ card.tier or 'no' }} tier, "
                "lifetime spend {{ card.value.lifetime_spend }}) has "
                "{{ card.complaints.open }} open complaint(s), "
                "{{ card.complaints.open_by_severity.high }} of high severity.",
            },
        },
        "priority": 90,
    },
    {
        "id": "new-arrivals",
        "name": "New arrivals announcement",
        "trigger": {"type": "broadcast"},
        "conditions": {"in": ["rfm.segment", ["champions", "loyal"]]},
        "action": {
            "kind": "announcement",
            "channel": "email",
            "template": {
                "subject": "New arrivals, picked for you",
                "body": "Hello {{ customer.name or 'there' }},\n\nOur new collection has "
                "arrived, and as one of our best customers you see it first." + _SIGN_OFF,
            },
        },
        "limits": {"cooldown_days": 7},
        "priority": 20,
    },
]


def default_pack() -> list[Rule]:
    """The default rules, validated (a broken pack fails loudly at start, not at send time)."""
    return [Rule.model_validate(raw) for raw in DEFAULT_PACK]
