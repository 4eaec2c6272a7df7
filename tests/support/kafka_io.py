"""Reading topics back in tests: the real broker, no mocks."""

from __future__ import annotations

import asyncio

from aiokafka.structs import ConsumerRecord

from shared.kafka_read import read_until_end


async def read_all(bootstrap: str, topic: str, timeout_ms: int = 10_000) -> list[ConsumerRecord]:
    """Every record now on ``topic``, from the beginning to the current end of each partition
    (a :class:`TimeoutError` when that takes longer than a few times ``timeout_ms``)."""
    async with asyncio.timeout(timeout_ms * 6 / 1000):
        return [r async for batch in read_until_end(bootstrap, topic) for r in batch]
