"""Topics in tests, made and read back: the real broker, no mocks."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord

from shared.kafka_read import read_until_end
from shared.settings import CommonSettings


def kafka_settings(target: CommonSettings | str) -> CommonSettings:
    """Settings to reach ``target``: the deployment's own, or the environment's pointed at the
    bootstrap address given (a plain-text broker of a test's own)."""
    if isinstance(target, CommonSettings):
        return target
    return CommonSettings().model_copy(update={"kafka_bootstrap_servers": target})


async def read_all(
    kafka: CommonSettings | str, topic: str, timeout_ms: int = 10_000
) -> list[ConsumerRecord]:
    """Every record now on ``topic``, from the beginning to the current end of each partition
    (a :class:`TimeoutError` when that takes longer than a few times ``timeout_ms``)."""
    settings = kafka_settings(kafka)
    async with asyncio.timeout(timeout_ms * 6 / 1000):
        return [r async for batch in read_until_end(settings, topic) for r in batch]


async def create_topic(settings: CommonSettings, name: str, partitions: int = 3) -> None:
    """A topic of the test's own, on the settings' broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
