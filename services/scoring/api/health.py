"""``GET /v1/ops/health`` on scoring: how far its consumer is behind the events, and what
waits in its outbox for the changes topic."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.scoring.api.deps import Scoring
from shared.auth import Reader
from shared.errors import responses
from shared.pipeline_health import Backlog, ConsumerLag, backlog, consumer_lag

router = APIRouter(prefix="/v1", tags=["operations"])


class ScoringHealth(BaseModel):
    at: datetime = Field(description="when the figures were taken")
    consumer: ConsumerLag = Field(description="scoring's group on the events topic")
    outbox: Backlog = Field(description="changes written but not yet published")
    forwards: Backlog = Field(
        description="events that came under a merged id, not yet forwarded to the survivor"
    )


@router.get(
    "/ops/health",
    response_model=ScoringHealth,
    responses=responses(),
    summary="The pipeline's health at scoring",
)
async def scoring_health(scoring: Scoring, _: Reader) -> ScoringHealth:
    """Scoring's consumer lag per partition of the events topic (the group's committed offset
    against the partition's end: events received by ingest and not yet scored) and its
    outbox backlog (changes scored and not yet published to outreach: rows, and how long the
    oldest has waited), and the same of its forwards (events that came under a merged id,
    waiting to go back on the events topic under the survivor). Cheap enough to poll: the
    lag is read from the broker at most every 5 s (a newer request answers the figure read
    then) and the backlogs by indexed reads; when the broker does not answer within 5 s the
    lag is null with an `error`, and the rest is still answered."""
    now = scoring.clock.now()
    lag = await consumer_lag(
        scoring.common,
        scoring.settings.consumer_group,
        scoring.topics.events,
    )
    async with scoring.engine.connect() as conn:
        waiting = await backlog(conn, "scoring.outbox", now, at="created_at", oldest_first="id")
        forwards = await backlog(conn, "scoring.forwards", now, at="created_at", oldest_first="id")
    return ScoringHealth(at=now, consumer=lag, outbox=waiting, forwards=forwards)
