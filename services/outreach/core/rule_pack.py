"""The default rule pack: the rules a new deployment starts with, as the JSON the rules API
takes, so each one also documents the syntax. Marketing edits them like any other rule.

Notes on a few of them:

- ``winback-churned`` has no limit of its own: its occurrence is the churn episode (the day
  the customer became churned), so it fires once per churn, and again after a reactivation
  and a new churn — whether the churn was seen live, in an imported history, or the customer
  became key or regular only later. It reaches only customers lost within the last 180 days.
  It is the pack's costliest message (15% off to customers some of whom would have come back
  anyway), so a tenth of the customers it matches are held out (``control_percent``): its
  outcomes are read against them, not against the model's forecast alone.
- ``care-key-quiet`` runs daily but only reaches a key customer nobody has contacted for 60
  days: ``not_contacted_days`` looks at every message they received, ``cooldown_days`` keeps
  this rule itself to once per 60 days even if other messages did go out in between. Each
  alert asks the team for a personal call, so ``max_per_day`` keeps them to a day's work
  (20): the most valuable customers first, the others on the days after (a history loaded
  at once makes every key customer due the same day). A tenth of the customers it picks are
  held out (``control_percent``): the team is never asked to call them, so the outcomes
  report shows whether the calls bring orders back.
- ``new-arrivals`` is a broadcast: it fires only when an operator launches it, to the
  customers its conditions select.
- Every complaint is answered: an apology for high severity, an acknowledgement for the
  others, and ``complaint-team-alert`` tells the team (a team alert: no consent, cap or quiet
  hours, never a contact with the customer) through the current webhook channel — name a
  team's own channel in it (``channel_id``) to keep alerts apart from customer messages.
  Only complaints recorded within two days of being raised are answered
  (``recorded_within_days``): a history loaded later, with last year's complaints long since
  dealt with, is judged (the card, the complaint figures) but nobody is apologised to for it.
  The playbooks' thanks for an order follow the same rule.

The strategy playbooks (:data:`PLAYBOOKS`) treat each value x potential quadrant of the card's
``strategy`` its own way, every rule holding out a control group (``control_percent``) and
measured by a goal, so the outcomes report shows what each strategy achieves:

- **develop** (high value, high potential): reward loyalty and give early access —
  ``develop-early-access`` when a develop customer becomes a regular (enters ``mature``, within
  60 days), ``develop-loyalty-thanks`` on a paid order of a develop customer with three orders
  or more (a thank-you with a loyalty reward, not a discount), ``develop-check-in`` when a
  develop customer starts declining (within 30 days: a loyalty reward before they are lost;
  on a real history a declining customer's potential is still high, so the valued customers
  who slip are develop customers, not maintain ones);
- **maintain** (high value, low potential): service and thanks at low cost, never a discount
  (no ``offer``) — ``maintain-thanks`` on a paid order of a customer who was maintain when
  they placed it (``before.strategy``: the order makes them develop), ``maintain-check-in``
  when a maintain customer starts declining (within 30 days), and
  ``maintain-thank-you-note``, a broadcast
  marketing launches (say at the year's end) to maintain customers who are not among the fifth
  silent the longest (``rfm.recency`` 2 or more);
- **nurture** (low value, high potential): education plus an incentive to change behaviour —
  ``nurture-guide`` when a nurture customer orders again or comes back (enters ``growing`` or
  ``reactivated``, within 60 days), ``nurture-second-order`` three weeks after the first order
  of a one-order nurture customer;
- **reduce cost** (low, low) gets no message: it is a policy (``reduce_cost_no_promotions``),
  not a rule.

The tag rules (:data:`TAG_RULES`) send nothing: they set ``first-purchase`` (a customer in
their first stage ``new``), ``big-spender`` (spend over a year of :data:`BIG_SPEND` or more, on
a paid order), ``complained-recently`` (a complaint raised, until none is open) and
``lapsed-vip`` (a key customer declining or churned, until they are back), each taken off by an
``untag-`` rule when it stops being true. ``untag-big-spender`` is a stage rule on any stage:
it looks at every change, time's included, so a year's spend that runs out takes the tag off.

Stage rules bounded by ``entered_within_days`` and schedules that do not catch up past their
window keep an imported history from reaching customers lost long ago.
"""

from __future__ import annotations

from typing import Any

from services.outreach.core.rules import Rule

_WINBACK_CONTROL = 10  # the share of the win-back's matches held out as its control group (%)
_SIGN_OFF = "\n\nThe Tend shop\nUnsubscribe: {{ unsubscribe_url }}"

# The rules that serve every customer whatever their strategy.
_SERVICE_RULES: list[dict[str, Any]] = [
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
            # Each customer's own holidays (the Spring Festival and the Mid-Autumn Festival
            # for a customer in China); the fixed dates for those who keep no calendar.
            "calendar": "customer",
            "dates": ["12-25", "01-01"],
            "at": "09:00",
        },
        "action": {
            "kind": "greeting",
            "channel": "webhook",
            # On one of the customer's holidays the greeting names it (`holiday`); the fixed
            # dates name none.
            "template": {
                "subject": "{% if holiday %}Happy {{ holiday.name }}"
                "{% else %}Season's greetings{% endif %}",
                "body": "{% if holiday %}Happy {{ holiday.name }}{% else %}Season's greetings"
                "{% endif %}, {{ customer.name or 'friend' }}, from all of us.",
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
        # The pack's one discount to customers who may come back by themselves: a tenth of
        # them are held out, so the outcomes report can show what the discount bought.
        "control_percent": _WINBACK_CONTROL,
    },
    {
        "id": "care-key-quiet",
        "name": "Care for key customers not contacted for 60 days",
        "trigger": {"type": "schedule", "kind": "cron", "expression": "0 10 * * *"},
        "conditions": {"eq": ["tier", "key"]},
        "action": {
            "kind": "care",
            "channel": "webhook",
            # Written to the shop's people, who make the call: never sent to the customer.
            "audience": "team",
            "template": {
                "subject": "Check in with a key customer",
                "body": "{{ customer.name or card.customer_id }} is a key customer "
                "(lifetime spend {{ card.value.lifetime_spend }}) nobody has contacted for "
                "60 days. A personal call is due.",
            },
        },
        "limits": {"cooldown_days": 60, "not_contacted_days": 60, "max_per_day": 20},
        "priority": 70,
        "control_percent": 10,
    },
    {
        "id": "complaint-apology",
        "name": "Apology on a high-severity complaint",
        "trigger": {
            "type": "event",
            "event": "complaint.opened",
            "recorded_within_days": 2,
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
            "recorded_within_days": 2,
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
        "trigger": {"type": "event", "event": "complaint.opened", "recorded_within_days": 2},
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


_KEEP = 20  # the share of each playbook rule's matches held out as its control group (%)

PLAYBOOKS: list[dict[str, Any]] = [
    {
        "id": "develop-early-access",
        "name": "Develop: early access for customers who became regulars",
        "description": "Reward loyalty: a develop customer who just became a regular buyer "
        "sees the new collection before everyone else.",
        "trigger": {"type": "stage", "from": [], "to": ["mature"], "entered_within_days": 60},
        "conditions": {"eq": ["strategy", "develop"]},
        "action": {
            "kind": "announcement",
            "channel": "email",
            "template": {
                "subject": "Early access, just for you",
                "body": "Hello {{ customer.name or 'there' }},\n\nYou have become one of our "
                "regulars, so you see our new collection first: {{ offer.description }}. "
                "Use the code {{ offer.code }}." + _SIGN_OFF,
            },
            "offer": {
                "code": "EARLYACCESS",
                "description": "48 hours of early access to the new collection",
                "expires_days": 14,
            },
        },
        "limits": {"cooldown_days": 90},
        "priority": 35,
        "goal": {"within_days": 30},
        "control_percent": _KEEP,
    },
    {
        "id": "develop-loyalty-thanks",
        "name": "Develop: a loyalty reward after an order",
        "description": "Reward loyalty: a develop customer with three orders or more is "
        "thanked for a paid order with a loyalty reward (a service, not a discount).",
        "trigger": {"type": "event", "event": "order.paid", "recorded_within_days": 2},
        # A maintain customer's order makes them develop on the card after it (an order lifts
        # the model's potential): they are thanked as maintain, by maintain-thanks.
        "conditions": {
            "all": [
                {"eq": ["strategy", "develop"]},
                {"gte": ["value.orders", 3]},
                {"ne": ["before.strategy", "maintain"]},
            ]
        },
        "action": {
            "kind": "greeting",
            "channel": "email",
            "template": {
                "subject": "Thank you{% if customer.name %}, {{ customer.name }}{% endif %}",
                "body": "Hello {{ customer.name or 'there' }},\n\nThank you for ordering "
                "again. As a thank-you for your loyalty: {{ offer.description }} (code "
                "{{ offer.code }})." + _SIGN_OFF,
            },
            "offer": {
                "code": "LOYALSHIP",
                "description": "free express shipping on your next order",
                "expires_days": 60,
            },
        },
        "limits": {"cooldown_days": 60},
        "priority": 25,
        "goal": {"within_days": 60},
        "control_percent": _KEEP,
    },
    {
        "id": "develop-check-in",
        "name": "Develop: a loyalty reward when a valued customer starts declining",
        "description": "Keep the best from slipping: a develop customer silent for twice "
        "their rhythm is asked back with a loyalty reward (a service, not a discount) before "
        "they are lost. A declining customer still has high potential by the model, so they "
        "are develop customers: the win-back comes only once they churn.",
        "trigger": {"type": "stage", "from": [], "to": ["declining"], "entered_within_days": 30},
        "conditions": {"eq": ["strategy", "develop"]},
        "action": {
            "kind": "recall",
            "channel": "email",
            "template": {
                "subject": "We have missed you",
                "body": "Hello {{ customer.name or 'there' }},\n\nWe have not seen you for a "
                "while. Anything we could do better? Just reply: a person reads every "
                "message. And for your next order: {{ offer.description }} (code "
                "{{ offer.code }})." + _SIGN_OFF,
            },
            "offer": {
                "code": "LOYALSHIP",
                "description": "free express shipping",
                "expires_days": 30,
            },
        },
        "limits": {"cooldown_days": 90},
        "priority": 30,
        "goal": {"within_days": 30},
        "control_percent": _KEEP,
    },
    {
        "id": "maintain-thanks",
        "name": "Maintain: thanks after an order, no discount",
        "description": "Service and thanks at low cost: a maintain customer is thanked for a "
        "paid order; no offer.",
        "trigger": {"type": "event", "event": "order.paid", "recorded_within_days": 2},
        # What they were when they ordered: on a real history a maintain customer is a valued
        # customer gone quiet, and the order that brings them back makes them develop on the
        # card after it.
        "conditions": {"eq": ["before.strategy", "maintain"]},
        "action": {
            "kind": "greeting",
            "channel": "email",
            "template": {
                "subject": "Thank you for your order",
                "body": "Hello {{ customer.name or 'there' }},\n\nThank you for your order. "
                "If anything is not as it should be, just reply: a person reads every "
                "message." + _SIGN_OFF,
            },
        },
        "limits": {"cooldown_days": 60},
        "priority": 25,
        "goal": {"within_days": 60},
        "control_percent": _KEEP,
    },
    {
        "id": "maintain-check-in",
        "name": "Maintain: a check-in when a valued customer starts declining",
        "description": "Service at low cost: ask a maintain customer who has gone quiet "
        "whether we can help; no offer.",
        "trigger": {"type": "stage", "from": [], "to": ["declining"], "entered_within_days": 30},
        "conditions": {"eq": ["strategy", "maintain"]},
        "action": {
            "kind": "follow_up",
            "channel": "email",
            "template": {
                "subject": "Can we help?",
                "body": "Hello {{ customer.name or 'there' }},\n\nWe have not heard from you "
                "for a while. Is there anything we could do better? Just reply to this "
                "message." + _SIGN_OFF,
            },
        },
        "limits": {"cooldown_days": 90},
        "priority": 30,
        "goal": {"within_days": 60},
        "control_percent": _KEEP,
    },
    {
        "id": "maintain-thank-you-note",
        "name": "Maintain: a thank-you note (broadcast)",
        "description": "Thanks at low cost, launched by marketing (say at the year's end): "
        "maintain customers who are not among the fifth silent the longest; no offer.",
        "trigger": {"type": "broadcast"},
        "conditions": {"all": [{"eq": ["strategy", "maintain"]}, {"gte": ["rfm.recency", 2]}]},
        "action": {
            "kind": "greeting",
            "channel": "email",
            "template": {
                "subject": "Thank you for being our customer",
                "body": "Hello {{ customer.name or 'there' }},\n\nA short note to say thank "
                "you for being our customer. We are here whenever you need us." + _SIGN_OFF,
            },
        },
        "limits": {"cooldown_days": 180},
        "priority": 15,
        "goal": {"within_days": 60},
        "control_percent": _KEEP,
    },
    {
        "id": "nurture-guide",
        "name": "Nurture: a guide and an incentive when a customer orders again",
        "description": "Education plus an incentive to change behaviour: a nurture customer "
        "who orders again or comes back gets a guide to the shop and a reason to make it a "
        "habit.",
        "trigger": {
            "type": "stage",
            "from": [],
            "to": ["growing", "reactivated"],
            "entered_within_days": 60,
        },
        "conditions": {"eq": ["strategy", "nurture"]},
        "action": {
            "kind": "announcement",
            "channel": "email",
            "template": {
                "subject": "Getting the most from your orders",
                "body": "Hello {{ customer.name or 'there' }},\n\nGood to see you again. "
                "A few things our regulars like: free returns, restock alerts and our "
                "monthly picks. To make it a habit: {{ offer.description }} with the code "
                "{{ offer.code }}." + _SIGN_OFF,
            },
            "offer": {
                "code": "HABIT10",
                "description": "10% off your next order",
                "discount": "10%",
                "expires_days": 30,
            },
        },
        "limits": {"cooldown_days": 90},
        "priority": 35,
        "goal": {"within_days": 30},
        "control_percent": _KEEP,
    },
    {
        "id": "nurture-second-order",
        "name": "Nurture: an incentive for the second order",
        "description": "An incentive to change behaviour: three weeks after the first order "
        "of a nurture customer who has not ordered again.",
        "trigger": {
            "type": "schedule",
            "kind": "days_after",
            "since": "value.first_order_at",
            "days": 21,
            "catch_up_days": 7,
        },
        "conditions": {"all": [{"eq": ["strategy", "nurture"]}, {"eq": ["value.orders", 1]}]},
        "action": {
            "kind": "recall",
            "channel": "email",
            "template": {
                "subject": "Ready for your second order?",
                "body": "Hello {{ customer.name or 'there' }},\n\nHow are you getting on "
                "with your first order? For the next one: {{ offer.description }}, code "
                "{{ offer.code }}." + _SIGN_OFF,
            },
            "offer": {
                "code": "SECOND10",
                "description": "10% off your second order",
                "discount": "10%",
                "expires_days": 21,
            },
        },
        "limits": {"once": True},
        "priority": 45,
        "goal": {"within_days": 30},
        "control_percent": _KEEP,
    },
]


def _tag_rule(
    rule_id: str,
    name: str,
    trigger: dict[str, Any],
    conditions: dict[str, Any] | None,
    *,
    add: list[str] | None = None,
    remove: list[str] | None = None,
) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": rule_id,
        "name": name,
        "trigger": trigger,
        "action": {"kind": "tag", "tags": {"add": add or [], "remove": remove or []}},
    }
    if conditions is not None:
        raw["conditions"] = conditions
    return raw


BIG_SPEND = "1000"
_LAPSED = ["declining", "churned"]
_NOT_NEW = ["growing", "mature", "declining", "churned", "reactivated"]

# Tags from behaviour: each tag is set by one rule and, where it stops being true, taken off
# by another. A tag action sends nothing (see services.outreach.core.tagging).
TAG_RULES: list[dict[str, Any]] = [
    _tag_rule(
        "tag-first-purchase",
        "Tag first-time buyers",
        {"type": "stage", "to": ["new"], "entered_within_days": 60},
        None,
        add=["first-purchase"],
    ),
    _tag_rule(
        "untag-first-purchase",
        "A second purchase day (or time) ends first-purchase",
        {"type": "stage", "to": _NOT_NEW},
        None,
        remove=["first-purchase"],
    ),
    _tag_rule(
        "tag-big-spender",
        f"Tag customers who spent {BIG_SPEND} or more within a year",
        {"type": "event", "event": "order.paid"},
        {"gte": ["value.spend_365d", BIG_SPEND]},
        add=["big-spender"],
    ),
    _tag_rule(
        "untag-big-spender",
        f"Spend within a year back under {BIG_SPEND} (a refund, or going quiet)",
        {"type": "stage", "to": []},
        {"lt": ["value.spend_365d", BIG_SPEND]},
        remove=["big-spender"],
    ),
    _tag_rule(
        "tag-complained-recently",
        "Tag customers who raised a complaint",
        {"type": "event", "event": "complaint.opened", "recorded_within_days": 2},
        None,
        add=["complained-recently"],
    ),
    _tag_rule(
        "untag-complained-recently",
        "Their last open complaint resolved",
        {"type": "event", "event": "complaint.resolved"},
        {"eq": ["complaints.open", 0]},
        remove=["complained-recently"],
    ),
    _tag_rule(
        "tag-lapsed-vip",
        "Tag key customers who are slipping away",
        {"type": "stage", "to": _LAPSED},
        {"eq": ["tier", "key"]},
        add=["lapsed-vip"],
    ),
    _tag_rule(
        "untag-lapsed-vip",
        "A lapsed key customer is back",
        {"type": "stage", "to": ["reactivated", "growing", "mature"]},
        None,
        remove=["lapsed-vip"],
    ),
]

DEFAULT_PACK: list[dict[str, Any]] = [*_SERVICE_RULES, *PLAYBOOKS, *TAG_RULES]

# Which strategy each playbook rule serves.
PLAYBOOK_STRATEGY: dict[str, str] = {raw["id"]: raw["id"].split("-", 1)[0] for raw in PLAYBOOKS}


def default_pack() -> list[Rule]:
    """The default rules, validated (a broken pack fails loudly at start, not at send time)."""
    return [Rule.model_validate(raw) for raw in DEFAULT_PACK]
