"""The outbox relay: publishes rows a service wrote in its own transactions, then deletes them.

A row is deleted only after the broker acknowledged it, so a crash publishes it again (never
loses it); consumers drop the repeat by its id. One relay at a time holds a PostgreSQL
advisory lock and publishes, oldest first: with two relays racing, a customer's later change
could overtake an earlier one. Rows are never picked by a high-water mark (a transaction that
commits late would be skipped); every pass takes whatever is there.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.kafka import Record, publish_many
from shared.logging import get_logger

log = get_logger(__name__)


class OutboxRelay:
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
        self._engine = engine
        self._producer = producer
        self._topic = topic
        self._lock_key = lock_key
        self._idle = idle_seconds
        self._leader: AsyncConnection | None = None
        self._stopping = asyncio.Event()
        self._select = text(
            f"SELECT id, customer_id, payload FROM {table} ORDER BY id LIMIT {int(batch)} "
            "FOR UPDATE SKIP LOCKED"
        )
        self._delete = text(f"DELETE FROM {table} WHERE id = ANY(CAST(:ids AS bigint[]))")
        self.published = 0
        self._wake = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def nudge(self) -> None:
        """New rows were committed: look now rather than after the idle pause."""
        self._wake.set()

    async def run(self) -> None:
        delay = 0.2
        try:
            while not self._stopping.is_set():
                try:
                    if not await self._lead():
                        await self._pause(1.0)
                        continue
                    sent = await self.relay_once()
                    delay = 0.2
                    if sent == 0:
                        await self._pause(self._idle)
                except Exception as exc:  # broker or database away: keep the rows, retry
                    log.warning("outbox_retry", reason=type(exc).__name__, topic=self._topic)
                    await self._drop_leadership()
                    await self._pause(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            await self._drop_leadership()

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

    async def _lead(self) -> bool:
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

    async def _drop_leadership(self) -> None:
        if self._leader is not None:
            with contextlib.suppress(Exception):
                await self._leader.close()
            self._leader = None

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
