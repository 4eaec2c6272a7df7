"""`tend topics` sets min.insync.replicas on every topic it manages: an acks=all write is
acknowledged only once that many replicas have it."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka_security import start_admin
from shared.settings import CommonSettings
from shared.topics import Topics, delete_topics, sync_topics
from tests.support.pipeline import until

pytestmark = pytest.mark.integration

_SET_ON_THE_TOPIC = 1  # DescribeConfigs' config_source for a topic's own override


async def _overrides(settings: CommonSettings, names: list[str]) -> dict[str, dict[str, str]]:
    admin = await start_admin(settings)
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
    finally:
        await admin.close()
    return {
        name: {e[0]: e[1] for e in entries if e[3] == _SET_ON_THE_TOPIC}
        for response in described
        for _, _, _, name, entries, *_ in response.resources
    }


async def test_tend_topics_sets_min_insync_replicas_on_new_topics_and_on_those_without(
    settings: CommonSettings,
) -> None:
    own = settings.model_copy(
        update={
            "topic_prefix": f"{settings.topic_prefix}isr{uuid.uuid4().hex[:6]}.",
            "topic_partitions": 1,
        }
    )
    topics = Topics.from_settings(own)
    # The events topic as an older `tend topics` left it: no min.insync.replicas of its own.
    admin = await start_admin(own)
    try:
        await admin.create_topics(
            [NewTopic(topics.events, 1, 1, topic_configs={"retention.ms": "-1"})]
        )

        async def listed() -> bool:
            return topics.events in await admin.list_topics()

        await until(listed, 30, f"{topics.events} created")
    finally:
        await admin.close()
    try:
        assert "min.insync.replicas" not in (await _overrides(own, [topics.events]))[topics.events]
        done = await sync_topics(own)
        assert done.reconfigured[topics.events] == ["min.insync.replicas"]
        assert sorted(done.created) == sorted(set(topics.all()) - {topics.events})
        # One broker here, so one replica: the setting's default for a replication factor of 1.
        for name, configs in (await _overrides(own, topics.all())).items():
            assert configs["min.insync.replicas"] == "1", name
    finally:
        await delete_topics(own)
