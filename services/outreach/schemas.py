"""Outreach's API models: what the routes take and answer (the rules, the policy and the
preview result are core's own models and are answered as they are).

Beside settings, the bottom floor of the service: any module may import it, and it imports
only core's domain types and shared ones.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, get_args
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints
from pydantic.config import JsonDict

from services.outreach.core import conditions
from services.outreach.core.budgets import GUARANTEED_DAYS, GUARANTEED_ROWS, CutBy
from services.outreach.core.channels import ChannelKind, EmailConfig, SmsConfig, WebhookConfig
from services.outreach.core.launch import LaunchContent
from services.outreach.core.rules import TAG, ActionKind, Rule, RuleId
from shared.errors import beyond_schema
from shared.events import PAYLOAD_OF, EventType, Identifier

# -- rules ------------------------------------------------------------------------------------

# What a rule's checks judge beyond its schema (the rest is in the document: see describe).
RULE_CHECKS = beyond_schema(
    {
        "body.action.template": "renders (sandboxed Jinja2, within the template limits) on a "
        "sample card with the offer",
        "body.trigger.schedule": "a schedule's own checks: a valid five-field cron firing at "
        "most once a day, real calendar dates, `days_after` with exactly one of `days` or "
        "`rhythm_multiple` and `since` naming a date field of the card, a `calendar` trigger "
        "with a calendar or dates (dates with no calendar or with `customer` only)",
        "body.trigger.since": "a profile attribute (`profile.attributes.<name>`) is declared "
        "`date` in the policy's `attribute_types`",
        "body.action.channel_id": "names an existing channel of the action's kind",
        "body.action.audience": "`team` only with `channel: webhook` (a team's webhook)",
        "body.control_percent": "0 for a tag action (it sends nothing)",
        "body.action.tags": "a tag action adds or removes at least one tag, and never adds "
        "and removes the same one",
        "body.limits": "none for a tag action (it is not a contact)",
        "body.goal.filters": "a valid expression over the fields the goal's event keeps (no "
        "free text, item lists or contact details)",
        "body.conditions": "inside `some`, a valid expression over the fields of the list's "
        "elements (an order item's `sku`, `category`, `brand`, `quantity`, `unit_price`)",
        "body.trigger.filters": "inside `some`, a valid expression over the fields of the "
        "list's elements",
    }
)


def _plain_trigger_union(schema: JsonDict) -> None:
    # pydantic nests the schedule kinds' discriminator inside the trigger's discriminator
    # mapping, where OpenAPI allows only references: /openapi.json then fails to build. The
    # oneOf alone describes the same shapes.
    trigger = schema.get("properties", {})
    trigger = trigger.get("trigger") if isinstance(trigger, dict) else None
    if isinstance(trigger, dict):
        trigger.pop("discriminator", None)


class RuleDefinition(Rule):
    """A rule: a trigger (an event, a stage transition, a schedule or a broadcast), optional
    conditions over the customer's card, an action (kind, channel, template, offer), limits
    and a priority (higher wins). Unknown fields are refused."""

    model_config = ConfigDict(json_schema_extra=_plain_trigger_union)


class RuleHealth(BaseModel):
    """How the rule has run: a rule that raises while matching or scheduling a change is
    skipped for that change, and disabled by outreach after repeated failures."""

    failures: int = Field(0, description="times the rule raised since it was last saved")
    last_error: str | None = Field(None, description="the last error it raised")
    last_error_at: datetime | None = None
    disabled_reason: str | None = Field(
        None, description="why outreach disabled the rule (null unless it did)"
    )


class RuleOut(BaseModel):
    """A rule as stored: its definition (what `PUT` takes back), its current version and its
    health."""

    version: int = Field(description="increases by one with every change")
    created_at: datetime
    updated_at: datetime
    rule: RuleDefinition
    health: RuleHealth = RuleHealth()
    waiting_for_a_slot: int = Field(
        0,
        description="customers a scheduled rule's daily limit passed over, who wait in its "
        "line for a day with a slot (the most valuable first at each run)",
    )


class RuleList(BaseModel):
    items: list[RuleOut] = Field(description="in id order")


class RuleVersion(BaseModel):
    version: int
    definition: dict[str, Any] = Field(description="the rule as it was saved in this version")
    enabled: bool
    actor: str = Field(description="the name of the API key that made the change")
    created_at: datetime


class RuleVersions(BaseModel):
    rule_id: str
    items: list[RuleVersion] = Field(description="oldest first")


class PackOut(BaseModel):
    installed: list[str] = Field(description="the ids of the rules installed or replaced")


class BacktestCoverage(BaseModel):
    """What a backtest replayed. The newest changes are kept when a budget cuts the window."""

    model_config = ConfigDict(populate_by_name=True)

    from_: datetime | None = Field(
        alias="from", description="the earliest change time replayed (null: no change)"
    )
    to: datetime | None = Field(description="the latest change time replayed")
    changes: int = Field(description="changes replayed")
    customers: int = Field(description="customers whose changes were replayed")
    complete: bool = Field(description="every change recorded since `since` was replayed")
    cut_by: CutBy | None = Field(
        description="the budget that left the window's oldest changes out: `row_budget` "
        "(`TEND_OUTREACH_READ_ROW_BUDGET`) or `time_budget` "
        "(`TEND_OUTREACH_READ_TIME_BUDGET_SECONDS`); null when complete. No budget cuts "
        f"below the last {GUARANTEED_DAYS} days or the newest {GUARANTEED_ROWS:,} changes, "
        "whichever holds fewer"
    )


TIME_BASIS = (
    "live changes when they were recorded; a history loaded later (recorded more than a day "
    "after it happened) at the event's own time or the stage move; schedules at their "
    "instants within the span the change stream covers"
)


class BacktestOut(BaseModel):
    rule_id: str
    days: int
    since: datetime = Field(description="the start of the window asked for")
    changes: int = Field(description="changes replayed (as `coverage.changes`)")
    customers: int
    decided: int = Field(description="actions the rule would have decided")
    outcomes: dict[str, int] = Field(description="send, defer (quiet hours), hold, suppress")
    reasons: dict[str, int] = Field(description="why the deferred, held and suppressed were")
    held_out: int = Field(
        0,
        description="of the decisions let through (`send` and `defer`), those in a control "
        "arm (the rule's hold-out, or the global control group for its kinds): recorded "
        "`control`, never sent",
    )
    decisions_from: datetime | None = Field(
        None, description="when the earliest of the decisions would have happened"
    )
    decisions_to: datetime | None = Field(None, description="when the latest would have")
    time_basis: str = Field(
        TIME_BASIS, description="the instant each decision is placed at (see the text)"
    )
    coverage: BacktestCoverage


# -- actions ----------------------------------------------------------------------------------


class ActionOut(BaseModel):
    """One decided action of the ledger."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    rule_id: str
    customer_id: str
    occurrence: str = Field(
        description="with rule and customer, the action's identity: the event id, the stage "
        "episode (`churned@2026-10-01`), the customer's local date (schedules) or the launch "
        "id (broadcasts)"
    )
    kind: str
    channel: str
    channel_id: str | None = Field(
        None, description="the channel the rule named; null: the kind's current channel"
    )
    audience: str = Field(
        "customer", description="`customer`, or `team`: an alert to the shop's people"
    )
    status: str = Field(
        description="scheduled (quiet hours, the frequency cap, the balance), held (open "
        "complaint), pending, sent, failed, suppressed, unknown (the receiver's answer was "
        "lost), control (held out as a control arm: decided, never sent; `not_before` is when "
        "it would have gone out)"
    )
    reason: str | None = Field(
        description="why it waits, was suppressed or failed (`merged`: a duplicate of an "
        "action the customer it was merged into already had; `max_attempts`: delivery tried "
        "as often as it may; `throttled`: its receiver answered busy, a 429 or 503 with "
        "Retry-After, every time it was asked for the give-up age, "
        "`TEND_OUTREACH_DELIVERY_THROTTLED_GIVE_UP_HOURS`)"
    )
    detail: str | None
    decided_at: datetime
    not_before: datetime | None
    sent_at: datetime | None
    attempts: int
    subject: str | None
    arm: str | None = Field(
        None,
        description="`treatment`, `control` (the rule's hold-out) or `global_control`; null "
        "for an action decided before arms were kept",
    )
    merged_from: str | None = Field(
        None,
        description="the customer id it was decided for, when that customer was merged into "
        "this one (`customer_id`, the survivor)",
    )
    tier: str | None = Field(None, description="the customer's tier when it was decided")
    strategy: str | None = Field(None, description="the customer's strategy when it was decided")
    baseline: float | None = Field(
        None,
        description="the model's probability, when it was decided, that the customer reaches "
        "the goal (an order within its window) anyway",
    )
    goal: dict[str, Any] | None = Field(None, description="the goal the action is measured by")


class ActionPage(BaseModel):
    items: list[ActionOut] = Field(description="newest decision first")
    next_cursor: str | None = Field(
        description="pass as `cursor` (with the same filters) for the next page; null on the "
        "last page"
    )


class SummaryRow(BaseModel):
    rule_id: str | None = Field(
        None, description="the rule, when the summary is per rule (`by=rule`)"
    )
    kind: str
    status: str
    reason: str | None
    count: int


class ActionSummary(BaseModel):
    total: int
    rows: list[SummaryRow] = Field(
        description="counts by kind, status and reason (and rule, with `by=rule`)"
    )


class BroadcastIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_id: RuleId = Field(description="a rule with a `broadcast` trigger, enabled")
    launch_id: str = Field(
        default_factory=lambda: str(uuid.uuid4()),
        min_length=1,
        max_length=128,
        description="the launch's identity, the actions' occurrence: launching again with the "
        "same id decides nobody twice (omit it for a new launch)",
    )
    content: LaunchContent | None = Field(
        None,
        description="what the launch announces: the new items with their categories (and "
        "brands), for conditions (`bought` with `launch`) and templates (`launch`)",
    )


class BroadcastOut(BaseModel):
    rule_id: str
    launch_id: str
    audience: int = Field(description="customers whose card meets the rule's conditions now")
    decided: int = Field(description="actions decided by this call (0 on a repeated launch)")
    statuses: dict[str, int] = Field(description="the decided actions by status")
    waiting: int = Field(
        0,
        description="customers the rule's spent daily limit left in its line: decided on "
        "the next days, a day's slots at a time, most valuable first",
    )


class LaunchOut(BaseModel):
    rule_id: str
    launch_id: str
    launched_at: datetime = Field(description="when it was first launched")
    actor: str | None = Field(description="who launched it (the key's name)")
    items: int = Field(description="the items its content announced (0: it carried none)")
    statuses: dict[str, int] = Field(
        description="its actions so far by status (a later day's slots add to them; a sent "
        "message moves from `pending` to `sent`)"
    )
    waiting: int = Field(description="customers still waiting in the rule's line for it")


class LaunchList(BaseModel):
    items: list[LaunchOut]


class TickOut(BaseModel):
    decided: int = Field(description="actions decided by schedules that came due")
    at: datetime = Field(description="the instant the scheduler ran at")


# -- suppressions and unsubscribe -------------------------------------------------------------


CustomerId = Identifier


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: CustomerId
    # Printable text: PostgreSQL cannot store NUL, and a reason is read by people.
    reason: Annotated[
        str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    ]


class Suppression(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    customer_id: str
    reason: str
    source: str = Field(description="`api` (added here) or `unsubscribe` (the customer's link)")
    created_at: datetime


class SuppressionPage(BaseModel):
    items: list[Suppression] = Field(description="in customer id order")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page"
    )


class SuppressionLift(BaseModel):
    """Why a suppression is lifted; required to lift a customer's own unsubscribe (with an
    `ops:write` key), and kept in the audit log."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str, StringConstraints(min_length=1, max_length=500, pattern=r"^[^\x00-\x1f\x7f]+$")
    ] = Field(examples=["the customer asked us by phone to hear from us again (ticket 4211)"])


class Unsubscribed(BaseModel):
    unsubscribed: bool = True
    suppressed_actions: int = Field(description="waiting actions that will not go out now")


class Resubscribed(BaseModel):
    resubscribed: bool = Field(
        description="true when this lifted the customer's unsubscribe; false when they were "
        "not unsubscribed (or a later unsubscribe of theirs stands)"
    )


# -- channels ---------------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelIn(_Body):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", examples=["crm-webhook"])
    kind: ChannelKind
    config: dict[str, Any] = Field(
        description='webhook: {"url"}; sms: {"url", "from", "to_field", "text_field", '
        '"from_field"} (the provider\'s send endpoint; the rest optional); email: '
        '{"smtp_host", "smtp_port", "from"}, each optional (the service\'s SMTP settings '
        "fill the gaps)",
        examples=[{"url": "https://crm.example/hooks/tend"}],
    )
    secret: str | None = Field(
        None,
        description="webhook and sms only: the Standard Webhooks signing secret (`whsec_` + "
        "base64); generated when left out. Write-only.",
    )
    enabled: StrictBool = True


class ChannelUpdate(_Body):
    config: dict[str, Any]
    enabled: StrictBool = True
    secret: str | None = Field(
        None,
        description="webhook and sms only: a new signing secret; left out, the current one stays",
    )


class ChannelOut(BaseModel):
    id: str
    kind: ChannelKind
    config: dict[str, Any]
    enabled: bool
    disabled_reason: str | None
    has_secret: bool
    created_at: datetime
    updated_at: datetime


class ChannelCreated(ChannelOut):
    secret: str | None = Field(
        description="the generated signing secret: shown only in this answer, store it now "
        "(null when you supplied one)"
    )


# -- export (right of access) -----------------------------------------------------------------


class ScheduledRule(BaseModel):
    rule_id: str
    due_at: datetime


class ExportedSuppression(BaseModel):
    # Titled as before the models moved here beside the list's own Suppression.
    model_config = ConfigDict(title="Suppression")

    reason: str
    source: str
    created_at: datetime


class ExportedAction(ActionOut):
    body: str | None = Field(description="the message as rendered")
    offer: dict[str, Any] | None


class ExportedGoalEvent(BaseModel):
    """An event of the customer's kept to measure what outreach achieved (an order, a visit,
    a complaint update...), without free text or contact details."""

    event_id: str
    event_type: str
    occurred_at: datetime
    revenue: Decimal | None
    data: dict[str, Any]


class OutreachExport(BaseModel):
    customer_id: str
    merged_ids: list[str] = Field(
        default_factory=list,
        description="the customer ids merged into this customer (their actions and events "
        "are this customer's)",
    )
    card: dict[str, Any] | None = Field(description="the card replica outreach decides on")
    suppression: ExportedSuppression | None
    schedule: list[ScheduledRule] = Field(description="when each schedule rule next fires")
    actions: list[ExportedAction] = Field(description="every action decided, oldest first")
    goal_events: list[ExportedGoalEvent] = Field(
        default_factory=list,
        description="the events kept to measure outcomes (GET /v1/outcomes), oldest first",
    )


# -- the OpenAPI document: what the models alone cannot say --------------------------------
#
# Conditions and event filters are plain JSON checked by hand (core/conditions.py), and an
# email's subject and a channel's config depend on a sibling field. What the checks enforce
# is stated here, read off the same field tables the checks use, and written into the
# document by :func:`describe` — the validators themselves are untouched.

_REF = "#/components/schemas/"
_NUMBER = {"type": "number"}
# A number sent as a string ("123.40"): decimal notation, as the checks read it.
_NUMERIC_TEXT = {
    "type": "string",
    # An exponent of at most four digits: a decimal beyond that cannot be compared.
    "pattern": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?$",
}
# An ISO date, or a date and time (naive means UTC); days up to 28 are valid in every month.
_DAY = r"[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
_CLOCK = r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
_ZONE = r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
_ISO_DATETIME = {
    "type": "string",
    "pattern": f"^{_DAY}(T{_CLOCK}{_ZONE}?)?$",
    "examples": ["2030-05-17T09:00:00Z"],
}
_ISO_DATE = {"type": "string", "pattern": f"^{_DAY}", "examples": ["2030-05-17"]}


def _literal_schema(spec: conditions.FieldSpec) -> dict[str, Any]:
    """The values a field of this kind is compared with (null aside)."""
    kind = spec.kind
    if kind in ("int", "float", "decimal"):
        return {"anyOf": [_NUMBER, _NUMERIC_TEXT]}
    if kind == "datetime":
        return _ISO_DATETIME
    if kind == "date":
        return _ISO_DATE
    if kind == "bool":
        return {"type": "boolean"}
    if spec.choices is not None:
        return {"type": "string", "enum": sorted(spec.choices)}
    return {"type": "string"}


def _arguments(path: dict[str, Any], *items: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "array",
        "prefixItems": [path, *items],
        "items": False,
        "minItems": len(items) + 1,
        "maxItems": len(items) + 1,
    }


_OPERATORS = {
    "all": "every expression holds (an empty list holds)",
    "any": "at least one expression holds",
    "not": "the expression does not hold",
    "eq": "[path, value]: the field equals the value (null: the field is missing)",
    "ne": "[path, value]: exactly not eq",
    "gt": "[path, value]: the field is greater (a missing field fails)",
    "gte": "[path, value]",
    "lt": "[path, value]",
    "lte": "[path, value]",
    "between": "[path, low, high]: low <= field <= high",
    "in": "[path, [value, ...]]: the field is one of the values (a tag list: any of its tags)",
    "has_tag": "the customer has this tag",
    "exists": "path: the field is present and not null",
    "some": "[path, expression]: some element of a list of objects (an order's items) passes "
    "the expression, whose paths name the element's fields",
    "bought": '{"category" | "brand": name} or {"launch": "category" | "brand"}, and '
    '"within_days" (optional): the customer bought in that category (of that brand, or in '
    "one of the launch's), the last time at most within_days days before the launch (else "
    "the card's as_of)",
    "never_bought": "exactly not bought, with the same arguments",
}


def _expression_schema(name: str, fields: conditions.Schema) -> dict[str, Any]:
    """The JSON Schema of a condition over ``fields``, as component ``name``: an object with
    exactly one operator, a path naming a known field, and literals of that field's type."""
    self_ref = {"$ref": f"{_REF}{name}"}
    null = {"type": "null"}
    groups: dict[str, tuple[conditions.FieldSpec, list[str]]] = {}
    maps = []
    for name, spec in fields.fields.items():
        if spec.kind == "map":
            maps.append(name)
        key = f"{spec.kind}:{','.join(sorted(spec.choices or ()))}"
        groups.setdefault(key, (spec, []))[1].append(name)
    args: dict[str, list[dict[str, Any]]] = {op: [] for op in ("eq", "gt", "between", "in")}
    for spec, paths in groups.values():
        path: dict[str, Any] = {"type": "string", "enum": sorted(paths)}
        if spec.kind == "tags":
            tags = {"type": "array", "items": {"type": ["string", "null"]}}
            args["in"].append(_arguments(path, tags))
        if spec.kind not in ("int", "float", "decimal", "datetime", "date", "bool", "str"):
            continue  # objects, lists, maps: only exists
        value = _literal_schema(spec)
        args["eq"].append(_arguments(path, {"anyOf": [value, null]}))
        args["in"].append(_arguments(path, {"type": "array", "items": {"anyOf": [value, null]}}))
        if spec.kind not in ("bool", "str"):
            args["gt"].append(_arguments(path, value))
            args["between"].append(_arguments(path, value, value))
    any_path: dict[str, Any] = {"type": "string", "enum": sorted(fields.fields)}
    if maps:
        # One key of a map (profile.attributes.<key>): text, or a number compared as one.
        entry = {"type": "string", "pattern": "^(" + "|".join(map(re.escape, maps)) + r")\.[^.]+$"}
        for value in ({"type": "string"}, _NUMBER):
            args["eq"].append(_arguments(entry, {"anyOf": [value, null]}))
            among = {"type": "array", "items": {"anyOf": [value, null]}}
            args["in"].append(_arguments(entry, among))
            args["gt"].append(_arguments(entry, value))
            args["between"].append(_arguments(entry, value, value))
        any_path = {"anyOf": [any_path, entry]}
    value_of: dict[str, dict[str, Any]] = {
        "all": {"type": "array", "items": self_ref},
        "any": {"type": "array", "items": self_ref},
        "not": self_ref,
        "eq": {"anyOf": args["eq"]},
        "ne": {"anyOf": args["eq"]},
        **{op: {"anyOf": args["gt"]} for op in ("gt", "gte", "lt", "lte")},
        "between": {"anyOf": args["between"]},
        "in": {"anyOf": args["in"]},
        "exists": any_path,
    }
    if conditions.TAGS_PATH in fields.fields or conditions.CARD_TAGS_PATH in fields.fields:
        value_of["has_tag"] = {"type": "string", "minLength": 1}
    lists = sorted(p for p, spec in fields.fields.items() if spec.item is not None)
    if lists:
        element = {"type": "object", "description": "a condition over the element's fields"}
        value_of["some"] = _arguments({"type": "string", "enum": lists}, element)
    if fields.lookup(conditions.PREFERENCES_PATH) is not None:
        name_text = {"type": "string", "minLength": 1}
        within = {"type": "integer", "minimum": 1, "maximum": conditions.MAX_WITHIN_DAYS}
        bought = {
            "type": "object",
            "oneOf": [
                {
                    "properties": {key: name_text, "within_days": within},
                    "required": [key],
                    "additionalProperties": False,
                }
                for key in ("category", "brand")
            ]
            + [
                {
                    "properties": {
                        "launch": {"enum": ["category", "brand"]},
                        "within_days": within,
                    },
                    "required": ["launch"],
                    "additionalProperties": False,
                }
            ],
        }
        value_of["bought"] = bought
        value_of["never_bought"] = bought
    return {
        "title": name,
        "description": f"A condition over the {fields.name}: an object with exactly one "
        "operator; a path names a known field, and values are of that field's type "
        "(numbers as numbers or decimal strings, instants and dates as ISO strings).",
        "oneOf": [
            {
                "type": "object",
                "properties": {op: {**value, "description": _OPERATORS[op]}},
                "required": [op],
                "additionalProperties": False,
            }
            for op, value in value_of.items()
        ],
    }


# Python's str.strip() whitespace, spelled out: a schema's \s is ECMA's, which differs.
_SPACE = (
    "\\t\\n\\u000b\\f\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
    "\\u205f\\u3000"
)
# A Standard Webhooks secret: whsec_ and standard base64 of 24 to 64 bytes.
_B64 = "[A-Za-z0-9+/]"
_WEBHOOK_SECRET = {
    "type": "string",
    "pattern": f"^whsec_((?:{_B64}{{4}}){{8,20}}(?:{_B64}{{2}}==|{_B64}{{3}}=)?"
    f"|(?:{_B64}{{4}}){{21}}(?:{_B64}{{2}}==)?)$",
    "examples": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
}

EXAMPLE_RULE: dict[str, Any] = {
    "id": "winback-churned",
    "name": "Win back churned customers",
    "trigger": {"type": "stage", "from": [], "to": ["churned"]},
    "conditions": {"all": [{"in": ["tier", ["key", "regular"]]}, {"gt": ["value.orders", 1]}]},
    "action": {
        "kind": "winback",
        "channel": "email",
        "template": {"subject": "We miss you", "body": "Hello {{ customer.name }}"},
        "offer": {"code": "BACK15", "description": "15% off"},
    },
    "limits": {"cooldown_days": 90},
    "priority": 50,
}
_EXAMPLES: dict[str, Any] = {
    "RuleDefinition-Input": EXAMPLE_RULE,
    "Policy-Input": {
        "frequency_cap": {"count": 2, "days": 7},
        "quiet_hours": {"start": "21:00", "end": "08:00"},
        "default_timezone": "Europe/Paris",
    },
    "BroadcastIn": {
        "rule_id": "new-arrivals",
        "launch_id": "2030-spring",
        "content": {
            "items": [
                {"sku": "tea-jasmine-50", "category": "tea", "brand": "zen", "name": "Jasmine"}
            ]
        },
    },
    "SuppressionIn": {"customer_id": "c-42", "reason": "asked by phone not to be contacted"},
    "ChannelIn": {
        "id": "crm-webhook",
        "kind": "webhook",
        "config": {"url": "https://crm.example/hooks/tend"},
    },
    "ChannelUpdate": {"config": {"url": "https://crm.example/hooks/tend-v2"}, "enabled": True},
}


def describe(document: dict[str, Any]) -> None:
    """Write into outreach's OpenAPI document what its hand-made checks enforce: the
    condition language (over the card, and over each event type's data for filters), an
    email's subject, a channel's config by kind, the policy's time zone; and an example for
    every request body."""
    schemas = document["components"]["schemas"]
    # Every card field, and its twin before the event (``before.<field>``: event rules only).
    schemas["CardCondition"] = _expression_schema("CardCondition", conditions.EVENT_CARD)
    for name in ("RuleDefinition-Input", "RuleDefinition-Output"):
        if name in schemas:
            schemas[name]["properties"]["conditions"] = {
                "anyOf": [{"$ref": f"{_REF}CardCondition"}, {"type": "null"}],
                "description": "which customers the rule reaches (null: everyone); an event "
                "rule may name the card as it stood before the event (`before.strategy`)",
            }
    _event_triggers(schemas)
    _email_subject(schemas)
    _channels(schemas)
    if "Policy-Input" in schemas:
        _policy(schemas["Policy-Input"])
    for item in document["paths"].values():
        for op in item.values():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None or "example" in content or "examples" in content:
                continue
            ref = content.get("schema", {}).get("$ref", "").removeprefix(_REF)
            if ref in _EXAMPLES:
                content["example"] = _EXAMPLES[ref]


def _policy(policy: dict[str, Any]) -> None:
    policy["properties"]["default_timezone"] = {
        "type": "string",
        "enum": sorted(available_timezones()),
        "default": "UTC",
        "description": "an IANA time zone name",
    }
    policy["description"] = (
        f"{policy.get('description', '')} A kind is never both transactional and promotional, "
        "and a balance service kind is never promotional (a list left out counts as its "
        "default); a transactional kind listed in `global_control_kinds` still goes."
    )


def _event_triggers(schemas: dict[str, Any]) -> None:
    trigger = schemas.get("EventTrigger")
    if trigger is None:
        return
    by_payload: dict[str, list[str]] = {}
    for event_type, payload in PAYLOAD_OF.items():
        if event_type not in (EventType.CUSTOMER_ERASED, EventType.CUSTOMER_UNSUBSCRIBED):
            # refused: nobody erased or unsubscribed is contacted
            by_payload.setdefault(payload.__name__.removesuffix("Data"), []).append(event_type)
    variants = []
    for kind, types in by_payload.items():
        name = f"{kind}Filter"
        schemas[name] = _expression_schema(name, conditions.event_schema(EventType(types[0])))
        variants.append(
            {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "const": "event"},
                    "event": {"type": "string", "enum": types},
                    "filters": {
                        "anyOf": [{"$ref": f"{_REF}{name}"}, {"type": "null"}],
                        "description": "a condition over the event's data",
                    },
                    "recorded_within_days": {
                        "anyOf": [
                            {"type": "integer", "minimum": 1, "maximum": 3650},
                            {"type": "null"},
                        ],
                        "description": "only for an event recorded at most this many days "
                        "after it happened (a history loaded later is not answered)",
                    },
                },
                "required": ["type", "event"],
                "additionalProperties": False,
            }
        )
    schemas["EventTrigger"] = {
        "title": "EventTrigger",
        "description": trigger.get("description", ""),
        "oneOf": variants,
    }


def _email_subject(schemas: dict[str, Any]) -> None:
    # The action is written out by its own serializer (a tag action shows no message), so
    # pydantic names the read and written schemas apart and knows nothing of the written
    # one: it has the same shapes as the read one.
    for name in ("Action", "Action-Input"):
        if name in schemas:
            _action_by_channel(schemas, name)
            if "Action-Output" in schemas:
                schemas["Action-Output"] = schemas[name]


def _action_by_channel(schemas: dict[str, Any], name: str) -> None:
    action, template = schemas.get(name), schemas.get("Template")
    if action is None or template is None:
        return
    email_template = {
        **template,
        "title": "EmailTemplate",
        "properties": {
            **template["properties"],
            "subject": {
                **template["properties"]["subject"],
                "pattern": f"[^{_SPACE}]",
                "description": "an email needs a subject (not only spaces)",
            },
        },
        "required": ["subject", "body"],
    }
    email_template.pop("default", None)
    email_template["properties"]["subject"].pop("default", None)
    schemas["EmailTemplate"] = email_template
    by_channel = []
    # A message's kinds: every kind but ``tag``, which sends nothing and has its own shape.
    messages = {"type": "string", "enum": [k for k in get_args(ActionKind) if k != TAG]}
    message_properties = {k: v for k, v in action["properties"].items() if k != "tags"}
    for channel, ref in (
        ("webhook", "Template"),
        ("sms", "Template"),
        ("email", "EmailTemplate"),
        ("preferred", "EmailTemplate"),
    ):
        by_channel.append(
            {
                **action,
                "properties": {
                    **message_properties,
                    "kind": messages,
                    "channel": {"type": "string", "const": channel},
                    "template": {"$ref": f"{_REF}{ref}"},
                },
            }
        )
    by_channel.append(
        {
            "type": "object",
            "title": "TagAction",
            "description": "adds and removes the customer's tags; sends nothing",
            "properties": {
                "kind": {"type": "string", "const": TAG},
                "tags": {"$ref": f"{_REF}TagChange"},
            },
            "required": ["kind", "tags"],
            "additionalProperties": False,
        }
    )
    schemas[name] = {
        "title": "Action",
        "description": action.get("description", ""),
        "oneOf": by_channel,
    }


def _channels(schemas: dict[str, Any]) -> None:
    webhook = WebhookConfig.model_json_schema(by_alias=True)
    sms = SmsConfig.model_json_schema(by_alias=True)
    email = EmailConfig.model_json_schema(by_alias=True)
    created = schemas.get("ChannelIn")
    if created is not None:
        props = created["properties"]
        kinds = []
        for kind, config, secret in (
            ("webhook", webhook, {"anyOf": [_WEBHOOK_SECRET, {"type": "null"}]}),
            ("sms", sms, {"anyOf": [_WEBHOOK_SECRET, {"type": "null"}]}),
            ("email", email, {"type": "null"}),
        ):
            kinds.append(
                {
                    **created,
                    "properties": {
                        **props,
                        "kind": {"type": "string", "const": kind},
                        "config": config,
                        "secret": {**props["secret"], **secret},
                    },
                }
            )
        schemas["ChannelIn"] = {"title": "ChannelIn", "oneOf": kinds}
    update = schemas.get("ChannelUpdate")
    if update is not None:
        props = update["properties"]
        props["config"] = {
            "description": "the config of the channel's kind (see `ChannelIn`)",
            "anyOf": [webhook, sms, email],
        }
        props["secret"] = {**props["secret"], "anyOf": [_WEBHOOK_SECRET, {"type": "null"}]}
