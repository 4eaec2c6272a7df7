"""Outreach's API models: what the routes take and answer (the rules, the policy and the
preview result are core's own models and are answered as they are).

Beside settings, the bottom floor of the service: any module may import it, and it imports
only core's domain types and shared ones.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

from services.outreach.core.budgets import GUARANTEED_DAYS, GUARANTEED_ROWS, CutBy
from services.outreach.core.channels import ChannelKind
from services.outreach.core.rules import Rule, RuleId
from shared.events import Identifier

# -- rules ------------------------------------------------------------------------------------


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


class BacktestOut(BaseModel):
    rule_id: str
    days: int
    since: datetime = Field(description="the start of the window asked for")
    changes: int = Field(description="changes replayed (as `coverage.changes`)")
    customers: int
    decided: int = Field(description="actions the rule would have decided")
    outcomes: dict[str, int] = Field(description="send, defer (quiet hours), hold, suppress")
    reasons: dict[str, int] = Field(description="why the deferred, held and suppressed were")
    coverage: BacktestCoverage


# -- actions ----------------------------------------------------------------------------------


class ActionOut(BaseModel):
    """One decided action of the ledger."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    rule_id: str
    customer_id: str
    occurrence: str = Field(
        description="with rule and customer, the action's identity: the event id, the change "
        "id, the customer's local date (schedules) or the launch id (broadcasts)"
    )
    kind: str
    channel: str
    status: str = Field(
        description="scheduled (quiet hours), held (open complaint), pending, sent, failed, "
        "suppressed, unknown (the receiver's answer was lost)"
    )
    reason: str | None
    detail: str | None
    decided_at: datetime
    not_before: datetime | None
    sent_at: datetime | None
    attempts: int
    subject: str | None


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


class BroadcastOut(BaseModel):
    rule_id: str
    launch_id: str
    audience: int = Field(description="customers whose card meets the rule's conditions now")
    decided: int = Field(description="actions decided by this call (0 on a repeated launch)")
    statuses: dict[str, int] = Field(description="the decided actions by status")


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
        description='webhook: {"url"}; email: {"smtp_host", "smtp_port", "from"}, each '
        "optional (the service's SMTP settings fill the gaps)",
        examples=[{"url": "https://crm.example/hooks/tend"}],
    )
    secret: str | None = Field(
        None,
        description="webhook only: the Standard Webhooks signing secret (`whsec_` + base64); "
        "generated when left out. Write-only.",
    )
    enabled: bool = True


class ChannelUpdate(_Body):
    config: dict[str, Any]
    enabled: bool = True
    secret: str | None = Field(
        None, description="webhook only: a new signing secret; left out, the current one stays"
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


class OutreachExport(BaseModel):
    customer_id: str
    card: dict[str, Any] | None = Field(description="the card replica outreach decides on")
    suppression: ExportedSuppression | None
    schedule: list[ScheduledRule] = Field(description="when each schedule rule next fires")
    actions: list[ExportedAction] = Field(description="every action decided, oldest first")
