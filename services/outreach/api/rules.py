"""The rules API: create, replace, enable, disable and delete rules (every change is a new
version), and install the default pack.

Writes to one rule are serialised by a transaction-level advisory lock on its id, so two
creates of one id cannot both succeed and versions never interleave. After every change the
process reloads its rules, so the change acts here at once (other instances reload within a
few seconds). Every change is written to the audit log in its own transaction.

The writes open their transaction themselves rather than taking the request's: the reload
reads the rules on another connection, so it must run after the commit, inside the route.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.api.deps import RULE_NOT_FOUND, Outreach, no_such_rule
from services.outreach.core.policy import Policy
from services.outreach.core.rule_pack import default_pack
from services.outreach.core.rules import Rule
from services.outreach.core.schedules import ATTRIBUTES
from services.outreach.schemas import (
    RULE_CHECKS,
    PackOut,
    RuleDefinition,
    RuleList,
    RuleOut,
    RuleVersions,
)
from services.outreach.shell.scheduler import rules_saved
from services.outreach.shell.service import OutreachState
from services.outreach.shell.template_check import check_template
from services.outreach.store import schedule as schedule_store
from services.outreach.store.channels import channel_kind
from services.outreach.store.rules import delete_rule as delete_stored_rule
from services.outreach.store.rules import (
    lock_rule,
    save_rule,
    stored_rule,
    stored_rules,
)
from services.outreach.store.rules import rule_versions as stored_versions
from shared import audit
from shared.auth import MarketingWriter, Principal, Reader
from shared.errors import (
    ERROR_RESPONSES,
    ErrorBody,
    FieldError,
    beyond_schema,
    error_response,
    invalid,
    responses,
)
from shared.logging import get_logger
from shared.service_state import Transaction

log = get_logger(__name__)

router = APIRouter(prefix="/v1")


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


async def _named_channel_exists(conn: AsyncConnection, rule: Rule) -> None:
    """A rule that names a channel names one of its action's kind."""
    named = rule.action.channel_id
    if named is None:
        return
    kind = await channel_kind(conn, named)
    if kind is None:
        raise invalid("body.action.channel_id", f"no channel named {named!r}; create it first")
    if kind != rule.action.channel:
        raise invalid(
            "body.action.channel_id",
            f"channel {named!r} is a {kind} channel, the action sends by {rule.action.channel}",
        )


def _since_declared(rule: Rule, policy: Policy) -> None:
    """A schedule on a profile attribute names one the policy declares a date."""
    since = getattr(rule.trigger, "since", None)
    if not isinstance(since, str) or not since.startswith(ATTRIBUTES):
        return
    name = since.removeprefix(ATTRIBUTES)
    if name not in policy.schedule_context.date_attributes:
        raise invalid(
            "body.trigger.since",
            f"attribute {name!r} is not declared a date: add it to the policy's "
            'attribute_types as "date" first',
        )


async def _reload(outreach: OutreachState, *saved: str) -> None:
    """Compile the rules again and index when the ``saved`` schedule rules next fire for
    every customer already known (they would otherwise wait for each customer's next change);
    a stage rule enabled again takes up its line. Called after the change committed: the
    reload reads on a connection of its own."""
    current = outreach.current
    await current.reload(outreach.engine)
    await rules_saved(
        outreach.engine,
        [current.rules[r] for r in saved if r in current.rules],
        current.policy,
        outreach.clock.now(),
    )


@router.post(
    "/rules",
    status_code=201,
    response_model=RuleOut,
    responses=responses({409: {"model": ErrorBody, "description": "the id is taken"}}, RULE_CHECKS),
    tags=["rules"],
    summary="Create a rule",
)
async def create_rule(
    outreach: Outreach, rule: RuleDefinition, principal: MarketingWriter
) -> RuleOut | JSONResponse:
    """Create a rule (version 1, or the next version of a deleted rule of that id). Every
    part is validated: an unknown card field in the conditions, a template that does not
    render on a sample card within the template limits (`template_limit: loop iterations
    over 10000`), a malformed schedule... each answers 422 naming the field.
    An id already in use is 409: replace that rule with `PUT /v1/rules/{id}`."""
    await check_template(rule, outreach.settings)
    _since_declared(rule, outreach.current.policy)
    async with outreach.engine.begin() as conn:
        await lock_rule(conn, rule.id)
        if await stored_rule(conn, rule.id) is not None:
            reason = f"a rule with id {rule.id!r} exists; PUT /v1/rules/{rule.id} replaces it"
            return error_response(409, reason, errors=[FieldError(field="body.id", reason=reason)])
        await _named_channel_exists(conn, rule)
        await save_rule(conn, rule, principal.name, outreach.clock.now())
        out = await stored_rule(conn, rule.id)
        await _audit(conn, principal, "rule.created", rule.id, None, out)
    await _reload(outreach, rule.id)
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
async def list_rules(_: Reader, conn: Transaction) -> RuleList:
    """Every rule that is not deleted, enabled or not, with its current version."""
    return RuleList(items=await stored_rules(conn))


@router.get(
    "/rules/{rule_id}",
    response_model=RuleOut,
    responses=RULE_NOT_FOUND,
    tags=["rules"],
    summary="A rule",
)
async def get_rule(rule_id: str, _: Reader, conn: Transaction) -> RuleOut:
    """The rule's current definition and version."""
    out = await stored_rule(conn, rule_id)
    if out is None:
        raise no_such_rule(rule_id)
    return out


@router.put(
    "/rules/{rule_id}",
    response_model=RuleOut,
    responses=responses(
        RULE_NOT_FOUND,
        RULE_CHECKS,
        beyond_schema({"body.id": "equals the id in the path"}),
    ),
    tags=["rules"],
    summary="Replace a rule",
)
async def replace_rule(
    outreach: Outreach, rule_id: str, rule: RuleDefinition, principal: MarketingWriter
) -> RuleOut:
    """Replace the rule's whole definition (`enabled` too: true when omitted), as a new
    version. The body's `id` must be the id in the path. Actions already decided are not
    changed."""
    if rule.id != rule_id:
        raise invalid("body.id", f"must equal the id in the path, {rule_id!r}")
    await check_template(rule, outreach.settings)
    _since_declared(rule, outreach.current.policy)
    async with outreach.engine.begin() as conn:
        await lock_rule(conn, rule_id)
        before = await stored_rule(conn, rule_id)
        if before is None:
            raise no_such_rule(rule_id)
        await _named_channel_exists(conn, rule)
        await save_rule(conn, rule, principal.name, outreach.clock.now())
        out = await stored_rule(conn, rule_id)
        await _audit(conn, principal, "rule.updated", rule_id, before, out)
    await _reload(outreach, rule_id)
    log.info("rule_replaced", rule_id=rule_id, actor=principal.name)
    assert out is not None
    return out


@router.get(
    "/rules/{rule_id}/versions",
    response_model=RuleVersions,
    responses=RULE_NOT_FOUND,
    tags=["rules"],
    summary="A rule's versions",
)
async def rule_versions(rule_id: str, _: Reader, conn: Transaction) -> RuleVersions:
    """Every version the rule has had, oldest first: what it said, whether it was enabled,
    who saved it and when. The history of a deleted rule stays readable here."""
    versions = await stored_versions(conn, rule_id)
    if not versions:
        raise no_such_rule(rule_id)
    return RuleVersions(rule_id=rule_id, items=versions)


async def _set_enabled(
    outreach: OutreachState, rule_id: str, enabled: bool, principal: Principal
) -> RuleOut:
    async with outreach.engine.begin() as conn:
        await lock_rule(conn, rule_id)
        before = await stored_rule(conn, rule_id)
        if before is None:
            raise no_such_rule(rule_id)
        if before.rule.enabled == enabled:
            return before  # already so: no version for a change that changes nothing
        await save_rule(
            conn,
            before.rule.model_copy(update={"enabled": enabled}),
            principal.name,
            outreach.clock.now(),
        )
        out = await stored_rule(conn, rule_id)
        action = "rule.enabled" if enabled else "rule.disabled"
        await _audit(conn, principal, action, rule_id, before, out)
    await _reload(outreach, rule_id)
    log.info("rule_enabled" if enabled else "rule_disabled", rule_id=rule_id, actor=principal.name)
    assert out is not None
    return out


@router.post(
    "/rules/{rule_id}/enable",
    response_model=RuleOut,
    responses=RULE_NOT_FOUND,
    tags=["rules"],
    summary="Enable a rule",
)
async def enable_rule(outreach: Outreach, rule_id: str, principal: MarketingWriter) -> RuleOut:
    """Enable the rule (a new version; nothing changes if it already is)."""
    return await _set_enabled(outreach, rule_id, True, principal)


@router.post(
    "/rules/{rule_id}/disable",
    response_model=RuleOut,
    responses=RULE_NOT_FOUND,
    tags=["rules"],
    summary="Disable a rule",
)
async def disable_rule(outreach: Outreach, rule_id: str, principal: MarketingWriter) -> RuleOut:
    """Disable the rule (a new version; nothing changes if it already is). A disabled rule
    decides nothing new; actions it already decided still go out."""
    return await _set_enabled(outreach, rule_id, False, principal)


@router.delete(
    "/rules/{rule_id}",
    status_code=204,
    response_class=Response,
    responses=RULE_NOT_FOUND,
    tags=["rules"],
    summary="Delete a rule",
)
async def delete_rule(outreach: Outreach, rule_id: str, principal: MarketingWriter) -> Response:
    """Delete the rule: it stops acting and answers 404 from then on; its versions stay
    readable, and creating a rule with the same id later continues its version numbers."""
    async with outreach.engine.begin() as conn:
        await lock_rule(conn, rule_id)
        before = await stored_rule(conn, rule_id)
        if before is None:
            raise no_such_rule(rule_id)
        await delete_stored_rule(conn, rule_id, outreach.clock.now())
        # Its schedule and its line go with it (a disabled rule's wait, due never).
        await schedule_store.drop_rules(conn, [rule_id])
        await _audit(conn, principal, "rule.deleted", rule_id, before, None)
    await _reload(outreach)
    log.info("rule_deleted", rule_id=rule_id, actor=principal.name)
    return Response(status_code=204)


@router.post(
    "/rule-packs/default",
    response_model=PackOut,
    responses=ERROR_RESPONSES,
    tags=["rules"],
    summary="Install the default rule pack",
)
async def install_default_pack(outreach: Outreach, principal: MarketingWriter) -> PackOut:
    """Install the default rules (birthday and holiday greetings, a purchase follow-up, a
    rhythm recall, a win-back, care for quiet key customers, an apology, a new-arrivals
    broadcast). A rule whose id exists is replaced by a new version, enabled."""
    pack = default_pack()
    now = outreach.clock.now()
    async with outreach.engine.begin() as conn:
        for rule in pack:
            await lock_rule(conn, rule.id)
            before = await stored_rule(conn, rule.id)
            await save_rule(conn, rule, principal.name, now)
            action = "rule.created" if before is None else "rule.updated"
            await _audit(conn, principal, action, rule.id, before, await stored_rule(conn, rule.id))
    await _reload(outreach, *(r.id for r in pack))
    log.info("rule_pack_installed", pack="default", actor=principal.name)
    return PackOut(installed=[r.id for r in pack])
