"""The actions ledger through HTTP: listing decided actions and a customer's touchpoints,
launching a broadcast, and running the scheduler now."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.api.deps import Outreach
from services.outreach.core.rules import ActionKind
from services.outreach.schemas import (
    ActionOut,
    ActionPage,
    ActionSummary,
    BroadcastIn,
    BroadcastOut,
    LaunchList,
    LaunchOut,
    SummaryRow,
    TickOut,
)
from services.outreach.shell.broadcast import launch
from services.outreach.shell.scheduler import tick
from services.outreach.store import launches, tables
from services.outreach.store.rules import stored_rule
from shared import audit
from shared.auth import MarketingWriter, Operator, Reader
from shared.cursor import CURSOR_RESPONSES, encode_cursor, newest_first
from shared.errors import ERROR_RESPONSES, beyond_schema, invalid, responses
from shared.logging import get_logger
from shared.params import IsoDateTime
from shared.service_state import Transaction

log = get_logger(__name__)

router = APIRouter(prefix="/v1")

ActionStatus = Literal[
    "scheduled", "held", "pending", "sent", "failed", "suppressed", "unknown", "control"
]


_a = tables.actions
_COLUMNS = (
    _a.c.id,
    _a.c.rule_id,
    _a.c.customer_id,
    _a.c.occurrence,
    _a.c.kind,
    _a.c.channel,
    _a.c.channel_id,
    _a.c.audience,
    _a.c.status,
    _a.c.reason,
    _a.c.detail,
    _a.c.decided_at,
    _a.c.not_before,
    _a.c.sent_at,
    _a.c.attempts,
    _a.c.subject,
    _a.c.arm,
    _a.c.tier,
    _a.c.strategy,
    _a.c.baseline,
    _a.c.goal,
    _a.c.merged_from,
)

Limit = Annotated[int, Query(ge=1, le=500, description="Actions per page.")]
Cursor = Annotated[
    str | None,
    Query(max_length=1000, description="The `next_cursor` of the previous page; omit at first."),
]


# A cursor is base64url JSON of the last row's (decided_at, id): the listing's order key.
class _Cursor(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime
    id: StrictStr = Field(min_length=1, max_length=36)


async def _page(
    conn: AsyncConnection, query: Select[Any], limit: int, cursor: str | None
) -> ActionPage:
    rows, last = await newest_first(
        conn, query, _a.c.decided_at, _a.c.id, limit=limit, cursor=cursor, shape=_Cursor
    )
    return ActionPage(
        items=[ActionOut.model_validate(r) for r in rows],
        next_cursor=encode_cursor(last) if last else None,
    )


@router.get(
    "/actions/summary",
    response_model=ActionSummary,
    responses=ERROR_RESPONSES,
    tags=["actions"],
    summary="Counts of decided actions",
)
async def actions_summary(
    _: Reader,
    conn: Transaction,
    since: Annotated[
        IsoDateTime | None, Query(description="Decided at or after this instant.")
    ] = None,
    by: Annotated[
        Literal["kind", "rule"],
        Query(description="`rule`: one row per rule as well (what each rule decided)."),
    ] = "kind",
    rule_id: Annotated[str | None, Query(max_length=64, description="Only this rule.")] = None,
) -> ActionSummary:
    """How many actions were decided, by kind, status and reason (and by rule with
    `by=rule`): what went out, what is waiting for quiet hours or a resolved complaint, what
    the policy held back and why, and what a control arm held out (`control`: decided, never
    sent; reason `global_control` for the global control group)."""
    keys = [_a.c.kind, _a.c.status, _a.c.reason]
    if by == "rule":
        keys.insert(0, _a.c.rule_id)
    query = select(*keys, func.count().label("n")).group_by(*keys)
    if since is not None:
        query = query.where(_a.c.decided_at >= since)
    if rule_id is not None:
        query = query.where(_a.c.rule_id == rule_id)
    rows = [
        SummaryRow(
            rule_id=r.rule_id if by == "rule" else None,
            kind=r.kind,
            status=r.status,
            reason=r.reason,
            count=r.n,
        )
        for r in await conn.execute(query.order_by(*keys[:-1]))
    ]
    return ActionSummary(total=sum(r.count for r in rows), rows=rows)


@router.get(
    "/actions",
    response_model=ActionPage,
    responses=responses(CURSOR_RESPONSES),
    tags=["actions"],
    summary="List decided actions",
)
async def list_actions(
    _: Reader,
    conn: Transaction,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
    rule_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[
        list[ActionKind] | None, Query(description="Only these kinds; repeat for several.")
    ] = None,
    status: Annotated[
        list[ActionStatus] | None, Query(description="Only these statuses; repeat for several.")
    ] = None,
    since: Annotated[
        IsoDateTime | None, Query(description="Decided at or after this instant.")
    ] = None,
    until: Annotated[IsoDateTime | None, Query(description="Decided before this instant.")] = None,
    reason: Annotated[
        list[str] | None,
        Query(description="Only these reasons (e.g. `frequency_cap`); repeat for several."),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ActionPage:
    """The ledger of decided actions matching every filter given, newest decision first,
    one page at a time: follow `next_cursor` until it is null. Every decision is here,
    including the suppressed ones with their reason (no_consent, reduce_cost, frequency_cap,
    limit, daily_limit, unsubscribed...) and the control arms' (`control`), each with its
    arm, the tier and strategy it was decided for, the model's baseline and its goal."""
    query = select(*_COLUMNS)
    if customer_id is not None:
        query = query.where(_a.c.customer_id == customer_id)
    if rule_id is not None:
        query = query.where(_a.c.rule_id == rule_id)
    if kind:
        query = query.where(_a.c.kind.in_(kind))
    if status:
        query = query.where(_a.c.status.in_(status))
    if since is not None:
        query = query.where(_a.c.decided_at >= since)
    if until is not None:
        query = query.where(_a.c.decided_at < until)
    if reason:
        query = query.where(_a.c.reason.in_(reason))
    return await _page(conn, query, limit, cursor)


@router.get(
    "/customers/{customer_id}/touchpoints",
    response_model=ActionPage,
    responses=responses(CURSOR_RESPONSES),
    tags=["actions"],
    summary="A customer's touchpoints",
)
async def touchpoints(
    customer_id: str, _: Reader, conn: Transaction, limit: Limit = 50, cursor: Cursor = None
) -> ActionPage:
    """Every action decided for the customer, newest first, whatever became of it (sent,
    waiting, suppressed and why). An unknown customer has none: an empty list."""
    query = select(*_COLUMNS).where(_a.c.customer_id == customer_id)
    return await _page(conn, query, limit, cursor)


@router.post(
    "/broadcasts",
    response_model=BroadcastOut,
    responses=responses(
        beyond_schema({"body.rule_id": "names an enabled rule with a `broadcast` trigger"})
    ),
    tags=["actions"],
    summary="Launch a broadcast",
)
async def launch_broadcast(
    outreach: Outreach, body: BroadcastIn, principal: MarketingWriter
) -> BroadcastOut:
    """Fire a broadcast rule for its audience: every customer of the card replica whose card
    meets its conditions now. Each is decided under the contact policy like any other action
    (consent, suppression, limits, open complaints, the frequency cap, quiet hours) and
    recorded with the launch id as its occurrence, a few hundred customers per transaction.
    A launch cut short is finished by launching again with the same `launch_id`: customers
    already decided are skipped. A new launch is written to the audit log
    (`broadcast.launched`, with its id and content) before anyone is decided.

    A rule with a daily limit (`limits.max_per_day`) gives the day's slots to the audience's
    most valuable customers; the others are not recorded but wait in the rule's line
    (`waiting`) and are decided at the start of the shop's next days, the most valuable
    first, a day's slots at a time, each judged again against the rule's conditions then and
    sent the launch's content. Launching the rule again while a customer still waits makes
    them wait for the newer launch instead (they get one message, the newer).

    With `content` (the new items, each with its category), the rule's conditions can target
    customers by preference against the launch (`{"bought": {"launch": "category",
    "within_days": 365}}`) and its template lists `launch.items_for_customer`: the items in
    the categories (or of the brands) each customer buys. Malformed content (an item without
    its category, more than 100 items) answers 422 naming the field."""
    # Its own connections: the launch commits a few hundred customers at a time.
    async with outreach.engine.connect() as conn:
        stored = await stored_rule(conn, body.rule_id)
    if stored is None:
        raise invalid("body.rule_id", f"no rule with id {body.rule_id!r}")
    rule = stored.rule
    if rule.trigger.type != "broadcast":
        raise invalid(
            "body.rule_id",
            f"rule {rule.id!r} has a {rule.trigger.type} trigger; only broadcast rules launch",
        )
    if not rule.enabled:
        raise invalid("body.rule_id", f"rule {rule.id!r} is disabled; enable it first")

    def decided() -> None:
        outreach.delivery.nudge()
        outreach.relay.nudge()

    size, statuses = await launch(
        outreach.engine,
        rule,
        body.launch_id,
        current=outreach.current,
        settings=outreach.settings,
        clock=outreach.clock,
        decided=decided,
        content=body.content,
        actor=audit.Actor.of(principal),
    )
    waiting = statuses.pop("waiting", 0)
    log.info(
        "broadcast_launched",
        rule_id=rule.id,
        launch_id=body.launch_id,
        audience=size,
        decided=statuses.total(),
        waiting=waiting,
        actor=principal.name,
    )
    return BroadcastOut(
        rule_id=rule.id,
        launch_id=body.launch_id,
        audience=size,
        decided=statuses.total(),
        statuses=dict(sorted(statuses.items())),
        waiting=waiting,
    )


@router.get(
    "/broadcasts",
    response_model=LaunchList,
    responses=ERROR_RESPONSES,
    tags=["actions"],
    summary="A broadcast rule's launches",
)
async def list_launches(
    _: Reader,
    conn: Transaction,
    rule_id: Annotated[str, Query(min_length=1, max_length=64, description="The rule.")],
    limit: Annotated[int, Query(ge=1, le=100, description="Launches, newest first.")] = 20,
) -> LaunchList:
    """A broadcast rule's launches, newest first: when and by whom each was launched, how
    many items its content announced, its actions so far by status, and how many of its
    customers still wait in the rule's line for a later day's slot. A rule never launched
    (or unknown) has none."""
    rows = await launches.of_rule(conn, rule_id, limit)
    return LaunchList(
        items=[
            LaunchOut(
                rule_id=rule_id,
                launch_id=r.launch_id,
                launched_at=r.launched_at,
                actor=r.actor,
                items=r.items,
                statuses=dict(sorted(r.statuses.items())),
                waiting=r.waiting,
            )
            for r in rows
        ]
    )


@router.post(
    "/ops/tick",
    response_model=TickOut,
    responses=ERROR_RESPONSES,
    tags=["operations"],
    summary="Run the scheduler now",
)
async def run_tick(outreach: Outreach, _: Operator) -> TickOut:
    """Fire every schedule rule that is due (birthdays, follow-ups, calendars, cron) and
    release deferred actions whose quiet hours are over, as the periodic scheduler does
    (`TEND_OUTREACH_SCHEDULER_INTERVAL_SECONDS`)."""
    at = outreach.clock.now()
    decided = await tick(outreach.engine, outreach.clock, outreach.current, outreach.settings)
    outreach.delivery.nudge()
    outreach.relay.nudge()
    return TickOut(decided=decided, at=at)
