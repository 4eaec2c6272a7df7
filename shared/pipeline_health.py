"""The pipeline's health as figures: how far a consumer group is behind its topic, and how
many rows wait in an outbox. What ``GET /v1/ops/health`` on scoring and outreach answers.

Every figure is cheap and bounded: lag is two metadata requests to the broker (the group's
committed offsets, the topic's end offsets), never a read of records; a backlog is a count
that stops at :data:`BACKLOG_CAP` rows and the oldest row's time. A broker that does not
answer within :data:`BROKER_SECONDS` leaves the lag unknown (null) rather than the answer
late.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.kafka_read import end_offsets
from shared.kafka_security import start_admin
from shared.logging import get_logger
from shared.settings import CommonSettings

log = get_logger(__name__)

BROKER_SECONDS = 5.0
# A backlog is counted up to this many rows: past it, the figure says "at least".
BACKLOG_CAP = 100_000


class PartitionLag(BaseModel):
    partition: int
    committed: int | None = Field(
        description="the group's next offset to read; null: it has committed none yet"
    )
    end: int = Field(description="the partition's end offset (the next record's)")
    lag: int = Field(description="records not yet consumed: end less committed (end if none)")


class ConsumerLag(BaseModel):
    group: str
    topic: str
    total: int | None = Field(description="the lag summed over partitions; null: unknown")
    partitions: list[PartitionLag] = Field(description="by partition number")
    error: str | None = Field(
        None, description="why the lag is unknown (the broker did not answer), else null"
    )


class Backlog(BaseModel):
    rows: int = Field(description=f"rows waiting, counted up to {BACKLOG_CAP}")
    capped: bool = Field(description=f"true: at least {BACKLOG_CAP} rows wait")
    oldest_at: datetime | None = Field(description="when the oldest waiting row was written")
    oldest_age_seconds: float | None = Field(description="how long the oldest has waited")


# Reading the lag takes an admin client and a consumer of their own (a few hundred ms): a
# figure read within the last few seconds answers instead, so a dashboard polling the health
# of every service does not make the broker's clients the cost of each page.
LAG_FRESH_SECONDS = 5.0
_lag_cache: dict[tuple[str, str, str], tuple[float, ConsumerLag]] = {}


async def consumer_lag(settings: CommonSettings, group: str, topic: str) -> ConsumerLag:
    """How far ``group`` is behind on ``topic``, partition by partition (read at most
    ``LAG_FRESH_SECONDS`` ago)."""
    key = (settings.kafka_bootstrap_servers, group, topic)
    now = time.monotonic()
    cached = _lag_cache.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    lag = await _read_lag(settings, group, topic)
    if lag.error is None:
        _lag_cache[key] = (time.monotonic() + LAG_FRESH_SECONDS, lag)
    return lag


async def _read_lag(settings: CommonSettings, group: str, topic: str) -> ConsumerLag:
    try:
        async with asyncio.timeout(BROKER_SECONDS):
            committed = await _committed(settings, group)
            ends = await end_offsets(settings, topic)
    except (TimeoutError, KafkaError, OSError) as exc:
        log.warning("consumer_lag_unknown", group=group, topic=topic, reason=type(exc).__name__)
        return ConsumerLag(
            group=group,
            topic=topic,
            total=None,
            partitions=[],
            error=f"the broker did not answer: {type(exc).__name__}",
        )
    partitions = []
    for tp, end in sorted(ends.items(), key=lambda kv: kv[0].partition):
        done = committed.get(tp)
        lag = end - done if done is not None else end
        partitions.append(
            PartitionLag(partition=tp.partition, committed=done, end=end, lag=max(lag, 0))
        )
    return ConsumerLag(
        group=group, topic=topic, total=sum(p.lag for p in partitions), partitions=partitions
    )


async def _committed(settings: CommonSettings, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets on every partition it has committed on."""
    admin = await start_admin(settings)
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}


async def backlog(
    conn: AsyncConnection,
    table: str,
    now: datetime,
    *,
    at: str,
    oldest_first: str,
    where: str = "true",
    params: Mapping[str, Any] | None = None,
) -> Backlog:
    """The rows of ``table`` matching ``where``, counted up to :data:`BACKLOG_CAP`, and the
    ``at`` of the first in the order ``oldest_first`` (an indexed order, so finding it reads
    one row). Every argument but ``params`` (bound values ``where`` names) is SQL the caller
    writes, never a client's text."""
    row = (
        await conn.execute(
            text(
                f"""
                SELECT (SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {where}
                                              LIMIT {BACKLOG_CAP}) AS capped) AS rows,
                       (SELECT {at} FROM {table} WHERE {where}
                        ORDER BY {oldest_first} LIMIT 1) AS oldest
                """
            ),
            dict(params or {}),
        )
    ).one()
    oldest: datetime | None = row.oldest
    return Backlog(
        rows=row.rows,
        capped=row.rows >= BACKLOG_CAP,
        oldest_at=oldest,
        oldest_age_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else None,
    )
