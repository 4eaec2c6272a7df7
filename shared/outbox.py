"""The outbox relay: publishes rows a service wrote in its own transactions, then deletes them.

A row is deleted only after the broker acknowledged it, so a crash publishes it again (never
loses it); consumers drop the repeat by its id. One relay at a time holds a PostgreSQL
advisory lock and publishes, oldest first: with two relays racing, a customer's later change
could overtake an earlier one. Rows are never picked by a high-water mark (a transaction that
commits late would be skipped); every pass takes whatever is there.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.kafka import Record, publish_many
from shared.logging import get_logger
from shared.worker import Worker

log = get_logger(__name__)


class OutboxRelay(Worker):
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        producer: Any,
        table: str,
        topic: str,
        lock_key: int,
        batch: int = 2000,
        idle_seconds: float = 0.05,
    ) -> None:
        super().__init__(idle_seconds=idle_seconds)
        self._engine = engine
        self._producer = producer
        self._topic = topic
        self._lock_key = lock_key
        self._leader: AsyncConnection | None = None
        self._select = text(
            f"SELECT id, customer_id, payload FROM {table} ORDER BY id LIMIT {int(batch)} "
            "FOR UPDATE SKIP LOCKED"
        )
        self._delete = text(f"DELETE FROM {table} WHERE id = ANY(CAST(:ids AS bigint[]))")
        self.published = 0

    async def run_once(self) -> int:
        return await self.relay_once()

    async def relay_once(self) -> int:
        """Publish one batch of rows, oldest first; returns how many."""
        async with self._engine.begin() as conn:
            rows = (await conn.execute(self._select)).all()
            if not rows:
                return 0
            await publish_many(
                self._producer,
                [Record(self._topic, r.customer_id.encode(), r.payload) for r in rows],
                timeout=10,
            )
            await conn.execute(self._delete, {"ids": [r.id for r in rows]})
        self.published += len(rows)
        return len(rows)

    async def ready(self) -> bool:
        """Whether this relay leads (holds the advisory lock); only the leader publishes."""
        if self._leader is not None:
            try:
                await self._leader.execute(text("SELECT 1"))
                return True
            except Exception:
                await self._drop_leadership()
        conn = await self._engine.connect()
        got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._lock_key})
        if got:
            self._leader = conn
            log.info("outbox_leader", topic=self._topic)
            return True
        await conn.close()
        return False

    async def failed(self, exc: Exception) -> None:
        # The broker or the database is away: the rows stay, to be published on a retry.
        log.warning("outbox_retry", reason=type(exc).__name__, topic=self._topic)
        await self._drop_leadership()

    async def aclose(self) -> None:
        await self._drop_leadership()

    async def _drop_leadership(self) -> None:
        if self._leader is not None:
            with contextlib.suppress(Exception):
                await self._leader.close()
            self._leader = None
