"""The rules API: create, replace, enable, disable and delete rules (every change is a new
version), install the default pack, and preview a rule over the card replica.

Writes to one rule are serialised by a transaction-level advisory lock on its id, so two
creates of one id cannot both succeed and versions never interleave. After every change the
process reloads its rules, so the change acts here at once (other instances reload within a
few seconds). Every change is written to the audit log in its own transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.backtest import recorded_changes, simulate
from services.outreach.core.preview import (
    PreviewResult,
    Tally,
    audience,
    audience_stages,
    history_since,
)
from services.outreach.core.rule_pack import default_pack
from services.outreach.core.rules import Rule
from services.outreach.shell.current import Current, save_rule
from services.outreach.shell.decide import contact_history, suppressed_among
from services.outreach.shell.scheduler import reindex_schedule
from shared import audit
from shared.auth import Principal, RequireScope, Scope
from shared.http import ERROR_RESPONSES, ErrorBody, FieldError, error_response
from shared.logging import get_logger
from shared.topics import Topics

log = get_logger(__name__)

router = APIRouter(prefix="/v1")

Reader = Annotated[Principal, RequireScope(Scope.OPS_READ)]
Writer = Annotated[Principal, RequireScope(Scope.MARKETING_WRITE)]
Operator = Annotated[Principal, RequireScope(Scope.OPS_WRITE)]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    404: {"model": ErrorBody, "description": "no such rule (or it was deleted)"},
}
# Replica rows per fetch of the server-side cursor.
CHUNK = 500


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


def invalid(field: str, reason: str) -> RequestValidationError:
    """A 422 naming ``field`` (``body.id``, ``query.cursor``), in the shape of every other
    validation error."""
    loc = tuple(field.split("."))
    return RequestValidationError([{"loc": loc, "msg": reason, "type": "value_error"}])


class RuleOut(BaseModel):
    """A rule as stored: its definition (what `PUT` takes back) and its current version."""

    version: int = Field(description="increases by one with every change")
    created_at: datetime
    updated_at: datetime
    rule: RuleDefinition


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


_SELECT = (
    "SELECT id, version, definition, enabled, created_at, updated_at FROM outreach.rules "
    "WHERE deleted_at IS NULL"
)
_ONE = text(f"{_SELECT} AND id = :id")
_ALL = text(f"{_SELECT} ORDER BY id")
_VERSIONS = text(
    "SELECT version, definition, enabled, actor, created_at FROM outreach.rule_versions "
    "WHERE rule_id = :id ORDER BY version"
)
_DELETE = text(
    "UPDATE outreach.rules SET deleted_at = :now, updated_at = :now "
    "WHERE id = :id AND deleted_at IS NULL"
)


def _out(row: Row[Any]) -> RuleOut:
    rule = RuleDefinition.model_validate({**row.definition, "enabled": row.enabled})
    return RuleOut(
        version=row.version, created_at=row.created_at, updated_at=row.updated_at, rule=rule
    )


async def _lock(conn: AsyncConnection, rule_id: str) -> None:
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"outreach.rule:{rule_id}"},
    )


async def stored_rule(conn: AsyncConnection, rule_id: str) -> RuleOut | None:
    """The rule ``rule_id`` as stored, or None when there is none (or it was deleted)."""
    row = (await conn.execute(_ONE, {"id": rule_id})).first()
    return _out(row) if row is not None else None


async def _audit(
    conn: AsyncConnection,
    principal: Principal,
    action: str,
    rule_id: str,
    before: RuleOut | None,
    after: RuleOut | None,
) -> None:
    await audit.record(
        conn,
        actor=audit.Actor.of(principal),
        service="outreach",
        action=action,
        subject=rule_id,
        before=before,
        after=after,
    )


def _missing(rule_id: str) -> HTTPException:
    return HTTPException(404, f"no rule with id {rule_id!r}")


async def _reload(request: Request, *saved: str) -> None:
    """Compile the rules again and index when the ``saved`` schedule rules next fire for
    every customer already known (they would otherwise wait for each customer's next change)."""
    s = request.app.state
    current: Current = s.current
    await current.reload(s.engine)
    schedules = [
        current.rules[r]
        for r in saved
        if r in current.rules
        and current.rules[r].enabled
        and current.rules[r].trigger.type == "schedule"
    ]
    if schedules:
        await reindex_schedule(s.engine, schedules, current.policy.default_timezone, s.clock.now())


@router.post(
    "/rules",
    status_code=201,
    response_model=RuleOut,
    responses={**ERROR_RESPONSES, 409: {"model": ErrorBody, "description": "the id is taken"}},
    tags=["rules"],
    summary="Create a rule",
)
async def create_rule(
    request: Request, rule: RuleDefinition, principal: Writer
) -> RuleOut | JSONResponse:
    """Create a rule (version 1, or the next version of a deleted rule of that id). Every
    part is validated: an unknown card field in the conditions, a template that does not
    render on a sample card, a malformed schedule... each answers 422 naming the field.
    An id already in use is 409: replace that rule with `PUT /v1/rules/{id}`."""
    s = request.app.state
    async with s.engine.begin() as conn:
        await _lock(conn, rule.id)
        if await stored_rule(conn, rule.id) is not None:
            reason = f"a rule with id {rule.id!r} exists; PUT /v1/rules/{rule.id} replaces it"
            return error_response(409, reason, errors=[FieldError(field="body.id", reason=reason)])
        await save_rule(conn, rule, principal.name, s.clock.now())
        out = await stored_rule(conn, rule.id)
        await _audit(conn, principal, "rule.created", rule.id, None, out)
    await _reload(request, rule.id)
    log.info("rule_created", rule_id=rule.id, actor=principal.name)
    assert out is not None
    return out


@router.get(
    "/rules",
    response_model=RuleList,
    responses=ERROR_RESPONSES,
    tags=["rules"],
    summary="List the rules",
)
async def list_rules(request: Request, _: Reader) -> RuleList:
    """Every rule that is not deleted, enabled or not, with its current version."""
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(_ALL)).all()
    return RuleList(items=[_out(r) for r in rows])


@router.get(
    "/rules/{rule_id}",
    response_model=RuleOut,
    responses=NOT_FOUND,
    tags=["rules"],
    summary="A rule",
)
async def get_rule(request: Request, rule_id: str, _: Reader) -> RuleOut:
    """The rule's current definition and version."""
    async with request.app.state.engine.connect() as conn:
        out = await stored_rule(conn, rule_id)
    if out is None:
        raise _missing(rule_id)
    return out


@router.put(
    "/rules/{rule_id}",
    response_model=RuleOut,
    responses=NOT_FOUND,
    tags=["rules"],
    summary="Replace a rule",
)
async def replace_rule(
    request: Request, rule_id: str, rule: RuleDefinition, principal: Writer
) -> RuleOut:
    """Replace the rule's whole definition (`enabled` too: true when omitted), as a new
    version. The body's `id` must be the id in the path. Actions already decided are not
    changed."""
    if rule.id != rule_id:
        raise invalid("body.id", f"must equal the id in the path, {rule_id!r}")
    s = request.app.state
    async with s.engine.begin() as conn:
        await _lock(conn, rule_id)
        before = await stored_rule(conn, rule_id)
        if before is None:
            raise _missing(rule_id)
        await save_rule(conn, rule, principal.name, s.clock.now())
        out = await stored_rule(conn, rule_id)
        await _audit(conn, principal, "rule.updated", rule_id, before, out)
    await _reload(request, rule_id)
    log.info("rule_replaced", rule_id=rule_id, actor=principal.name)
    assert out is not None
    return out


@router.get(
    "/rules/{rule_id}/versions",
    response_model=RuleVersions,
    responses=NOT_FOUND,
    tags=["rules"],
    summary="A rule's versions",
)
async def rule_versions(request: Request, rule_id: str, _: Reader) -> RuleVersions:
    """Every version the rule has had, oldest first: what it said, whether it was enabled,
    who saved it and when. The history of a deleted rule stays readable here."""
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(_VERSIONS, {"id": rule_id})).all()
    if not rows:
        raise _missing(rule_id)
    return RuleVersions(
        rule_id=rule_id,
        items=[
            RuleVersion(
                version=r.version,
                definition=r.definition,
                enabled=r.enabled,
                actor=r.actor,
                created_at=r.created_at,
            )
            for r in rows
        ],
    )


async def _set_enabled(
    request: Request, rule_id: str, enabled: bool, principal: Principal
) -> RuleOut:
    s = request.app.state
    async with s.engine.begin() as conn:
        await _lock(conn, rule_id)
        before = await stored_rule(conn, rule_id)
        if before is None:
            raise _missing(rule_id)
        if before.rule.enabled == enabled:
            return before  # already so: no version for a change that changes nothing
        await save_rule(
            conn,
            before.rule.model_copy(update={"enabled": enabled}),
            principal.name,
            s.clock.now(),
        )
        out = await stored_rule(conn, rule_id)
        action = "rule.enabled" if enabled else "rule.disabled"
        await _audit(conn, principal, action, rule_id, before, out)
    await _reload(request, rule_id)
    log.info("rule_enabled" if enabled else "rule_disabled", rule_id=rule_id, actor=principal.name)
    assert out is not None
    return out


@router.post(
    "/rules/{rule_id}/enable",
    response_model=RuleOut,
    responses=NOT_FOUND,
    tags=["rules"],
    summary="Enable a rule",
)
async def enable_rule(request: Request, rule_id: str, principal: Writer) -> RuleOut:
    """Enable the rule (a new version; nothing changes if it already is)."""
    return await _set_enabled(request, rule_id, True, principal)


@router.post(
    "/rules/{rule_id}/disable",
    response_model=RuleOut,
    responses=NOT_FOUND,
    tags=["rules"],
    summary="Disable a rule",
)
async def disable_rule(request: Request, rule_id: str, principal: Writer) -> RuleOut:
    """Disable the rule (a new version; nothing changes if it already is). A disabled rule
    decides nothing new; actions it already decided still go out."""
    return await _set_enabled(request, rule_id, False, principal)


@router.delete(
    "/rules/{rule_id}",
    status_code=204,
    response_class=Response,
    responses=NOT_FOUND,
    tags=["rules"],
    summary="Delete a rule",
)
async def delete_rule(request: Request, rule_id: str, principal: Writer) -> Response:
    """Delete the rule: it stops acting and answers 404 from then on; its versions stay
    readable, and creating a rule with the same id later continues its version numbers."""
    s = request.app.state
    async with s.engine.begin() as conn:
        await _lock(conn, rule_id)
        before = await stored_rule(conn, rule_id)
        if before is None:
            raise _missing(rule_id)
        await conn.execute(_DELETE, {"id": rule_id, "now": s.clock.now()})
        await _audit(conn, principal, "rule.deleted", rule_id, before, None)
    await _reload(request)
    log.info("rule_deleted", rule_id=rule_id, actor=principal.name)
    return Response(status_code=204)


@router.post(
    "/rule-packs/default",
    response_model=PackOut,
    responses=ERROR_RESPONSES,
    tags=["rules"],
    summary="Install the default rule pack",
)
async def install_default_pack(request: Request, principal: Writer) -> PackOut:
    """Install the default rules (birthday and holiday greetings, a purchase follow-up, a
    rhythm recall, a win-back, care for quiet key customers, an apology, a new-arrivals
    broadcast). A rule whose id exists is replaced by a new version, enabled."""
    s = request.app.state
    pack = default_pack()
    now = s.clock.now()
    async with s.engine.begin() as conn:
        for rule in pack:
            await _lock(conn, rule.id)
            before = await stored_rule(conn, rule.id)
            await save_rule(conn, rule, principal.name, now)
            action = "rule.created" if before is None else "rule.updated"
            await _audit(conn, principal, action, rule.id, before, await stored_rule(conn, rule.id))
    await _reload(request, *(r.id for r in pack))
    log.info("rule_pack_installed", pack="default", actor=principal.name)
    return PackOut(installed=[r.id for r in pack])


# -- previews -----------------------------------------------------------------------------------


async def replica_chunks(
    conn: AsyncConnection, *, stages: Sequence[str] | None = None, size: int = CHUNK
) -> AsyncIterator[Sequence[Row[Any]]]:
    """The card replica in customer id order, ``size`` rows at a time through a server-side
    cursor (rows have ``customer_id`` and ``card``); only ``stages`` when given."""
    where = "WHERE card->>'stage' = ANY(CAST(:stages AS text[]))" if stages else ""
    query = text(f"SELECT customer_id, card FROM outreach.cards {where} ORDER BY customer_id")
    result = await conn.stream(
        query.execution_options(yield_per=size), {"stages": list(stages or ())}
    )
    async for rows in result.partitions(size):
        yield rows


async def preview_rule(request: Request, rule: Rule) -> PreviewResult:
    """Run ``rule`` over the whole replica at the app's now, under the policy in force."""
    s = request.app.state
    policy = s.current.policy
    now = s.clock.now()
    holds = audience(rule)
    tally = Tally(rule, policy, now)
    since = history_since(rule, policy, now)
    async with s.engine.connect() as conn:
        async for rows in replica_chunks(conn, stages=audience_stages(rule)):
            matched = [(r.customer_id, r.card) for r in rows if holds(r.card)]
            if not matched:
                continue
            ids = [customer_id for customer_id, _ in matched]
            history = await contact_history(conn, ids, since)
            suppressed = await suppressed_among(conn, ids)
            for customer_id, card in matched:
                tally.add(
                    customer_id, card, history[customer_id], suppressed=customer_id in suppressed
                )
    return tally.result()


_PREVIEW_DOC = """The audience is every customer of the card replica (the latest card scoring
published) for whom the rule's conditions hold now and, for a stage trigger with `to` stages,
who is in one of those stages now; event and schedule triggers are judged by their conditions
only. For each, the contact policy in force decides as it would now (consent, suppression, the
rule's limits against the customer's contact history, open complaints, the frequency cap,
quiet hours): `outcomes` counts the decisions and `reasons` says why the others are held back.
Nothing is sent or recorded."""


@router.post(
    "/rules/preview",
    response_model=PreviewResult,
    responses=ERROR_RESPONSES,
    tags=["rules"],
    summary="Preview an unsaved rule",
    description="How many customers this rule would reach now, and who.\n\n" + _PREVIEW_DOC,
)
async def preview_unsaved(request: Request, rule: RuleDefinition, _: Reader) -> PreviewResult:
    return await preview_rule(request, rule)


@router.post(
    "/rules/{rule_id}/preview",
    response_model=PreviewResult,
    responses=NOT_FOUND,
    tags=["rules"],
    summary="Preview a saved rule",
    description="How many customers the saved rule would reach now, and who.\n\n" + _PREVIEW_DOC,
)
async def preview_saved(request: Request, rule_id: str, _: Reader) -> PreviewResult:
    async with request.app.state.engine.connect() as conn:
        out = await stored_rule(conn, rule_id)
    if out is None:
        raise _missing(rule_id)
    return await preview_rule(request, out.rule)


class BacktestOut(BaseModel):
    rule_id: str
    days: int
    since: datetime
    changes: int = Field(description="changes in the window")
    customers: int
    decided: int = Field(description="actions the rule would have decided")
    outcomes: dict[str, int] = Field(description="send, defer (quiet hours), hold, suppress")
    reasons: dict[str, int] = Field(description="why the deferred, held and suppressed were")


@router.post(
    "/rules/{rule_id}/backtest",
    response_model=BacktestOut,
    responses=NOT_FOUND,
    tags=["rules"],
    summary="Backtest a saved rule",
)
async def backtest_saved(
    request: Request,
    rule_id: str,
    _: Reader,
    days: Annotated[int, Query(ge=1, le=35, description="how far back to replay")] = 30,
) -> BacktestOut:
    """What this rule would have sent over the last `days` days of recorded changes, after
    the contact policy in force: the change stream is replayed in time order with this rule
    as the only live rule (schedules firing between changes, each customer's simulated contact
    history, today's suppression list). Nothing is sent or recorded."""
    s = request.app.state
    async with s.engine.connect() as conn:
        out = await stored_rule(conn, rule_id)
        suppressed = set(
            (await conn.execute(text("SELECT customer_id FROM outreach.suppressions"))).scalars()
        )
    if out is None:
        raise _missing(rule_id)
    now = s.clock.now()
    since = now - timedelta(days=days)
    changes = await recorded_changes(
        s.common.kafka_bootstrap_servers, Topics.from_settings(s.common).changes, since
    )
    result = simulate(out.rule, changes, policy=s.current.policy, suppressed=suppressed, until=now)
    return BacktestOut(
        rule_id=rule_id,
        days=days,
        since=since,
        changes=result.changes,
        customers=result.customers,
        decided=result.decided,
        outcomes=dict(result.outcomes),
        reasons=dict(result.reasons),
    )
