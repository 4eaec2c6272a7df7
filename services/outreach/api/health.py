"""``GET /v1/ops/health`` on outreach: how far its consumer is behind the changes, what waits
in its outboxes and for delivery, and how many dead letters wait for a replay."""

from __future__ import annotations

from datetime import datetime

from aiokafka.errors import KafkaError
from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.outreach.api.deps import Outreach
from services.outreach.shell.delivery_backlog import delivery_backlog
from shared.auth import Reader
from shared.dead_letters import read_tail
from shared.errors import responses
from shared.logging import get_logger
from shared.pipeline_health import Backlog, ConsumerLag, backlog, consumer_lag

log = get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["operations"])


class DeadLetterCount(BaseModel):
    pending: int | None = Field(description="dead letters waiting for a replay; null: unknown")
    pending_here: int | None = Field(description="of those, the ones outreach's group gave up on")
    complete: bool = Field(description="false: only the newest records of the topic were read")
    error: str | None = Field(None, description="why the count is unknown, else null")


class OutreachHealth(BaseModel):
    at: datetime = Field(description="when the figures were taken")
    consumer: ConsumerLag = Field(description="outreach's group on the changes topic")
    outbox: Backlog = Field(description="decided actions not yet published to the actions topic")
    events_outbox: Backlog = Field(
        description="facts outreach learned (unsubscribes) not yet published to the events topic"
    )
    delivery: Backlog = Field(
        description="actions due for delivery now (pending, their attempt time passed); "
        "`oldest_age_seconds`: how long the longest-waiting has been due"
    )
    dead_letters: DeadLetterCount


@router.get(
    "/ops/health",
    response_model=OutreachHealth,
    responses=responses(),
    summary="The pipeline's health at outreach",
)
async def outreach_health(outreach: Outreach, _: Reader) -> OutreachHealth:
    """Outreach's consumer lag per partition of the changes topic (the group's committed
    offset against the partition's end), its outbox backlogs (rows, and how long the oldest
    has waited), the delivery backlog (actions due now and not yet sent, and how long the
    oldest has been due) and the dead letters waiting for a replay. Cheap enough to poll:
    the lag read from the broker at most every 5 s, indexed reads, and the dead-letter
    topic's newest records only;
    when the broker does not answer in time, the lag and the dead-letter count are null
    with an `error`, and the rest is still answered."""
    now = outreach.clock.now()
    common = outreach.common
    lag = await consumer_lag(common, outreach.settings.consumer_group, outreach.topics.changes)
    async with outreach.engine.connect() as conn:
        outbox = await backlog(conn, "outreach.outbox", now, at="created_at", oldest_first="id")
        events = await backlog(
            conn, "outreach.events_outbox", now, at="created_at", oldest_first="id"
        )
        due = await delivery_backlog(conn, now)
    return OutreachHealth(
        at=now,
        consumer=lag,
        outbox=outbox,
        events_outbox=events,
        delivery=due,
        dead_letters=await _dead_letters(outreach),
    )


async def _dead_letters(outreach: Outreach) -> DeadLetterCount:
    try:
        tail = await read_tail(outreach.common, outreach.topics.dlq)
    except (TimeoutError, KafkaError, OSError) as exc:  # health answers what it can
        log.warning("dead_letters_unknown", reason=type(exc).__name__)
        return DeadLetterCount(
            pending=None,
            pending_here=None,
            complete=False,
            error=f"the broker did not answer: {type(exc).__name__}",
        )
    pending = [d for d in tail.letters if d.state == "pending"]
    group = outreach.settings.consumer_group
    return DeadLetterCount(
        pending=len(pending),
        pending_here=sum(d.group == group for d in pending),
        complete=tail.complete,
    )
