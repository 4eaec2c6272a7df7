"""Topic names and their settings, created idempotently at start-up."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from shared.kafka_security import start_admin
from shared.settings import CommonSettings

CUSTOMER_EVENTS = "crm.customer-events.v1"
CUSTOMER_CHANGES = "crm.customer-changes.v1"
OUTREACH_ACTIONS = "crm.outreach-actions.v1"
DLQ = "crm.dlq.v1"

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

# Retention: events are the system of record for a rebuild, so they are kept for good;
# changes and actions are streams for consumers; the DLQ waits for a human for 30 days.
#
# The DLQ is also compacted so that a customer's erasure — a tombstone under the key of each of
# their dead letters, shared.dlq.erase_from_dlq — removes their records within hours rather
# than at the end of the 30 days. Each dead letter has a key of its own (the poison record's
# key and where it was read), so compaction, which keeps the latest record per key, never
# removes one that was not erased:
# * segment.ms 1 h: the active segment is never compacted, so it rolls hourly (on the next
#   write after the hour) and a tombstone becomes cleanable within the hour;
# * min.cleanable.dirty.ratio 0.01: the DLQ is small, so clean it as soon as anything is
#   dirty instead of waiting for half of it to be;
# * max.compaction.lag.ms 6 h: whatever the ratio, no record waits longer than that to be
#   compacted once its segment has rolled;
# * delete.retention.ms 1 day: a tombstone outlives the records it removed by a day, so a
#   `tend dlq list` or `replay` that was reading during the compaction still honours it.
# The cleaner merges the small hourly segments as it goes, so they do not pile up.
_CONFIGS: dict[str, dict[str, str]] = {
    CUSTOMER_EVENTS: {"retention.ms": "-1"},
    CUSTOMER_CHANGES: {"retention.ms": str(35 * _DAY_MS)},  # backtests read 30 days
    OUTREACH_ACTIONS: {"retention.ms": str(30 * _DAY_MS)},
    DLQ: {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(30 * _DAY_MS),
        "segment.ms": str(_HOUR_MS),
        "min.cleanable.dirty.ratio": "0.01",
        "max.compaction.lag.ms": str(6 * _HOUR_MS),
        "delete.retention.ms": str(_DAY_MS),
    },
}


def topic_configs(settings: CommonSettings, name: str) -> dict[str, str]:
    """The configs Tend sets on topic ``name`` (prefixed): its retention and cleanup, and
    ``min.insync.replicas`` (an acks=all write waits for that many replicas, so an
    acknowledged event survives the loss of a broker)."""
    return {
        **_CONFIGS[name.removeprefix(settings.topic_prefix)],
        "min.insync.replicas": str(settings.min_insync_replicas),
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


@dataclass(frozen=True)
class TopicSync:
    created: list[str]
    # topic -> the config keys that were set back to what Tend wants
    reconfigured: dict[str, list[str]]


async def ensure_topics(settings: CommonSettings) -> list[str]:
    """Create any missing topic and bring the configs of existing ones up to date; returns
    the topics created."""
    return (await sync_topics(settings)).created


async def sync_topics(settings: CommonSettings) -> TopicSync:
    """Create any missing topic with its partitions and configs, and set the configs Tend
    manages on the topics that already exist (e.g. a DLQ created before it was compacted).
    Topic overrides Tend does not manage are kept."""
    topics = Topics.from_settings(settings)
    admin = await start_admin(settings)
    try:
        existing = set(await admin.list_topics())
        present = {name: topic_configs(settings, name) for name in topics.all() if name in existing}
        reconfigured = await _reconcile(admin, present) if present else {}
        wanted = [
            NewTopic(
                name=name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=topic_configs(settings, name),
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
        return TopicSync([t.name for t in wanted], reconfigured)
    finally:
        await admin.close()


# DescribeConfigs' config_source for an override set on the topic itself.
_TOPIC_OVERRIDE = 1


async def _reconcile(
    admin: AIOKafkaAdminClient, wanted: dict[str, dict[str, str]]
) -> dict[str, list[str]]:
    described = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted]
    )
    changed: dict[str, list[str]] = {}
    for response in described:
        for error_code, error_message, _, name, entries, *_ in response.resources:
            if error_code:
                raise RuntimeError(f"cannot read the config of {name}: {error_message}")
            # Compared with the topic's own overrides, not the values in effect: a value Tend
            # manages is pinned on the topic, so a broker default that matches today (one
            # in-sync replica on a one-broker cluster) cannot change it tomorrow.
            overrides = {e[0]: e[1] for e in entries if e[3] == _TOPIC_OVERRIDE}
            stale = sorted(k for k, v in wanted[name].items() if not _same(k, overrides.get(k), v))
            if not stale:
                continue
            # AlterConfigs replaces every override of the topic: send the ones already set
            # (by an operator, say) along with ours, so that only ours change.
            resource = ConfigResource(
                ConfigResourceType.TOPIC, name, configs={**overrides, **wanted[name]}
            )
            for altered in await admin.alter_configs([resource]):
                for code, message, *_ in altered.resources:
                    if code:
                        raise RuntimeError(f"cannot set the config of {name}: {message}")
            changed[name] = stale
    return changed


def _same(key: str, current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    if key == "cleanup.policy":
        return set(current.split(",")) == set(wanted.split(","))
    return current == wanted


async def delete_topics(settings: CommonSettings) -> None:
    """Delete this deployment's topics (tests and benchmarks clean up after themselves: a
    broker holding thousands of partitions runs out of file handles)."""
    topics = Topics.from_settings(settings)
    admin = await start_admin(settings)
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
