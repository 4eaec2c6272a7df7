"""Topic names and their settings, created idempotently at start-up."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import CommonSettings

CUSTOMER_EVENTS = "crm.customer-events.v1"
CUSTOMER_CHANGES = "crm.customer-changes.v1"
OUTREACH_ACTIONS = "crm.outreach-actions.v1"
DLQ = "crm.dlq.v1"

# Retention: events are the system of record for a rebuild, so they are kept for good;
# changes and actions are streams for consumers; the DLQ waits for a human for 30 days.
_CONFIGS: dict[str, dict[str, str]] = {
    CUSTOMER_EVENTS: {"retention.ms": "-1"},
    CUSTOMER_CHANGES: {"retention.ms": str(35 * 86_400_000)},  # backtests read 30 days
    OUTREACH_ACTIONS: {"retention.ms": str(30 * 86_400_000)},
    DLQ: {"retention.ms": str(30 * 86_400_000)},
}


@dataclass(frozen=True)
class Topics:
    """The concrete topic names for one deployment (a prefix lets tests share a broker)."""

    events: str
    changes: str
    actions: str
    dlq: str

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Topics:
        p = settings.topic_prefix
        return cls(p + CUSTOMER_EVENTS, p + CUSTOMER_CHANGES, p + OUTREACH_ACTIONS, p + DLQ)

    def all(self) -> list[str]:
        return [self.events, self.changes, self.actions, self.dlq]


async def ensure_topics(settings: CommonSettings) -> list[str]:
    """Create any missing topic with its partitions and configs; returns the ones created."""
    topics = Topics.from_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=_CONFIGS[name.removeprefix(settings.topic_prefix)],
            )
            for name in topics.all()
            if name not in existing
        ]
        if wanted:
            # Another process may have created them first.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
            # Creation is asynchronous on the broker: return once the topics are there, so a
            # consumer subscribing next is assigned their partitions.
            for _ in range(100):
                if set(topics.all()) <= set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.1)
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def delete_topics(settings: CommonSettings) -> None:
    """Delete this deployment's topics (tests and benchmarks clean up after themselves: a
    broker holding thousands of partitions runs out of file handles)."""
    topics = Topics.from_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = (
            [t for t in existing if t.startswith(settings.topic_prefix)]
            if (settings.topic_prefix)
            else [t for t in topics.all() if t in existing]
        )
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
