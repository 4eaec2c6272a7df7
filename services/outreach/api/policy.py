"""The contact policy: read it, or replace it whole. A replacement is written to the audit log
in the transaction that makes it, and applies to every decision from then on.

A replacement opens its transaction itself rather than taking the request's: the process
reloads the policy on another connection, so after the commit, inside the route."""

from __future__ import annotations

from fastapi import APIRouter

from services.outreach.api.deps import Outreach
from services.outreach.core.policy import Policy
from services.outreach.shell.scheduler import reindex_schedule
from services.outreach.store.policy import load_policy, lock_policy, save_policy
from shared import audit
from shared.auth import MarketingWriter, Reader
from shared.errors import ERROR_RESPONSES, beyond_schema, responses
from shared.logging import get_logger
from shared.service_state import Transaction

log = get_logger(__name__)

router = APIRouter(prefix="/v1")


@router.get(
    "/policy",
    response_model=Policy,
    responses=ERROR_RESPONSES,
    tags=["policy"],
    summary="The contact policy",
)
async def get_policy(_: Reader, conn: Transaction) -> Policy:
    """The global contact policy: the frequency cap, quiet hours, which kinds are
    transactional (exempt from marketing consent, the cap and quiet hours) and which are
    promotional (held while a complaint is open; none for `reduce_cost` customers when
    `reduce_cost_no_promotions`), the kinds the global control group never receives, the
    balance of promotions against service contacts (null: off), what a contact costs by
    channel, the default time zone, the shop's holiday calendars (the countries whose
    holidays customers keep, and the calendar of customers who name none) and the types of
    the profile attributes (`date` attributes can drive schedules)."""
    return await load_policy(conn)


@router.put(
    "/policy",
    response_model=Policy,
    responses=responses(
        beyond_schema(
            {
                "body.quiet_hours": "`start` and `end` differ (null: no quiet hours)",
                # JSON Schema could say it only through `not`, which generators choke on.
                "body": "no kind is both transactional and promotional, and no balance "
                "service kind is promotional (a list left out counts as its default)",
                "body.calendars": "`default` is one of `countries`",
                # uniqueItems over an enum of 250 codes stalls the schema's data generators.
                "body.calendars.countries": "each country at most once",
            }
        )
    ),
    tags=["policy"],
    summary="Replace the contact policy",
)
async def put_policy(outreach: Outreach, policy: Policy, principal: MarketingWriter) -> Policy:
    """Replace the whole policy; omitted fields take their defaults, and `null` turns the
    frequency cap or quiet hours off. It applies to every decision from now on."""
    async with outreach.engine.begin() as conn:
        # Serialises replacements, so each entry's `before` is what that change replaced.
        await lock_policy(conn)
        before = await load_policy(conn)
        await save_policy(conn, policy, outreach.clock.now())
        await audit.record(
            conn,
            actor=audit.Actor.of(principal),
            service="outreach",
            action="policy.updated",
            subject="policy",
            before=before,
            after=policy,
        )
    current = outreach.current
    await current.reload(outreach.engine)
    if before.schedule_context != policy.schedule_context:
        # Calendars, date attributes or the default zone moved every schedule's instants.
        schedules = [
            r for r in current.rules.values() if r.enabled and r.trigger.type == "schedule"
        ]
        if schedules:
            await reindex_schedule(
                outreach.engine, schedules, policy.schedule_context, outreach.clock.now()
            )
    log.info("policy_replaced", actor=principal.name)
    return policy
