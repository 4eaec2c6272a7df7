"""The contact policy: read it, or replace it whole. A replacement is written to the audit log
in the transaction that makes it, and applies to every decision from then on."""

from __future__ import annotations

from fastapi import APIRouter, Request

from services.outreach.api.deps import Reader, Writer
from services.outreach.core.policy import Policy
from services.outreach.shell.current import Current
from services.outreach.store.policy import load_policy, lock_policy, save_policy
from shared import audit
from shared.errors import ERROR_RESPONSES
from shared.logging import get_logger

log = get_logger(__name__)

router = APIRouter(prefix="/v1")


@router.get(
    "/policy",
    response_model=Policy,
    responses=ERROR_RESPONSES,
    tags=["policy"],
    summary="The contact policy",
)
async def get_policy(request: Request, _: Reader) -> Policy:
    """The global contact policy: the frequency cap, quiet hours, which kinds are
    transactional (exempt from marketing consent, the cap and quiet hours) and which are
    promotional (held while a complaint is open), and the default time zone."""
    async with request.app.state.engine.connect() as conn:
        return await load_policy(conn)


@router.put(
    "/policy",
    response_model=Policy,
    responses=ERROR_RESPONSES,
    tags=["policy"],
    summary="Replace the contact policy",
)
async def put_policy(request: Request, policy: Policy, principal: Writer) -> Policy:
    """Replace the whole policy; omitted fields take their defaults, and `null` turns the
    frequency cap or quiet hours off. It applies to every decision from now on."""
    s = request.app.state
    async with s.engine.begin() as conn:
        # Serialises replacements, so each entry's `before` is what that change replaced.
        await lock_policy(conn)
        before = await load_policy(conn)
        await save_policy(conn, policy, s.clock.now())
        await audit.record(
            conn,
            actor=audit.Actor.of(principal),
            service="outreach",
            action="policy.updated",
            subject="policy",
            before=before,
            after=policy,
        )
    current: Current = s.current
    await current.reload(s.engine)
    log.info("policy_replaced", actor=principal.name)
    return policy
