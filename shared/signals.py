"""The signals an operator watches, as Prometheus metrics: how far consumers are behind, what
waits in the outboxes, and the dead letters.

Counters move where the thing happens (a dead letter in :mod:`shared.consumer`, a missed key
in :mod:`shared.auth`); gauges are read every ``TEND_SIGNALS_INTERVAL_SECONDS`` by a periodic
job of the runtime (:mod:`shared.runtime`) with the figures ``GET /v1/ops/health`` answers
(:mod:`shared.pipeline_health`), never on a scrape: reading the lag takes broker clients of
its own. Every replica of a service reports the same lag and backlogs: take ``max``, not
``sum``, across instances. The alert rules and the dashboard that read these are in
``deploy/monitoring/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.pipeline_health import backlog, consumer_lag
from shared.settings import CommonSettings

CONSUMER_LAG = Gauge(
    "tend_consumer_lag",
    "Records a consumer group has not consumed yet, by topic and partition",
    ["group", "topic", "partition"],
)
CONSUMER_LAG_UNKNOWN = Gauge(
    "tend_consumer_lag_unknown",
    "1 when the last reading of a group's lag failed (the broker did not answer)",
    ["group", "topic"],
)
CONSUMED = Counter(
    "tend_consumer_records_total",
    "Records a consumer group has handled and made durable (applied, or dropped as a repeat "
    "its inbox already held), by topic; dead letters are counted apart",
    ["group", "topic"],
)
DEAD_LETTERS = Counter(
    "tend_dead_letters_total",
    "Records a consumer gave up on and sent to the dead-letter topic, by source topic and "
    "reason (the error's type, or statement_timeout)",
    ["group", "source_topic", "reason"],
)
OUTBOX_ROWS = Gauge(
    "tend_outbox_backlog_rows",
    "Outbox rows written and not yet published (counted up to 100000)",
    ["table"],
)
OUTBOX_OLDEST = Gauge(
    "tend_outbox_oldest_age_seconds",
    "How long the oldest unpublished outbox row has waited (0 when none waits)",
    ["table"],
)


async def refresh_lag(settings: CommonSettings, group: str, topics: Iterable[str]) -> None:
    """Read ``group``'s lag on each of ``topics`` into :data:`CONSUMER_LAG`."""
    for topic in topics:
        lag = await consumer_lag(settings, group, topic)
        CONSUMER_LAG_UNKNOWN.labels(group, topic).set(1 if lag.total is None else 0)
        for partition in lag.partitions:
            CONSUMER_LAG.labels(group, topic, str(partition.partition)).set(partition.lag)


async def refresh_backlog(engine: AsyncEngine, table: str, now: datetime) -> None:
    """Read the backlog of the outbox ``table`` into :data:`OUTBOX_ROWS` and
    :data:`OUTBOX_OLDEST`."""
    async with engine.connect() as conn:
        waiting = await backlog(conn, table, now, at="created_at", oldest_first="id")
    OUTBOX_ROWS.labels(table).set(waiting.rows)
    OUTBOX_OLDEST.labels(table).set(waiting.oldest_age_seconds or 0.0)
