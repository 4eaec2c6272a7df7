"""The outbox relay: publishes rows a service wrote in its own transactions, then deletes them.

A row is deleted only after the broker acknowledged it, so a crash publishes it again (never
loses it); consumers drop the repeat by its id. One relay at a time holds a PostgreSQL
advisory lock and publishes, oldest first: with two relays racing, a customer's later change
could overtake an earlier one. Rows are never picked by a high-water mark (a transaction that
commits late would be skipped); every pass takes whatever is there.

A pass runs on the connection that holds the lock, two statements outside any transaction:
read the oldest rows, publish them, delete them. The lock makes this relay the only reader
that deletes, so no row lock is needed, and a pass that fails on that connection (the
database went away, and the lock with it) ends this relay's leadership. The delete is not
waited onto disk (``synchronous_commit`` off on that connection alone): a delete lost in a
database crash publishes its rows once more, as a crash between publish and delete always
could. The connection is closed, never returned to the pool, when leadership ends: a pooled
connection would keep the session's lock and setting for whoever took it next. The relay is
the only publisher to its topic in its process, so it hands the producer whole record batches
(:func:`shared.kafka.publish_alone`).
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.kafka import Record, publish_alone
from shared.logging import get_logger
from shared.worker import Worker

log = get_logger(__name__)

_TRY_LOCK = text("SELECT pg_try_advisory_lock(:k)")
# The delete is the only write on the leader's connection (see the module text).
_NO_FLUSH_WAIT = text("SET synchronous_commit = off")


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
            f"SELECT id, customer_id, payload FROM {table} ORDER BY id LIMIT {int(batch)}"
        )
        self._delete = text(f"DELETE FROM {table} WHERE id = ANY(CAST(:ids AS bigint[]))")
        self.published = 0

    async def run_once(self) -> int:
        return await self.relay_once()

    async def relay_once(self) -> int:
        """Publish one batch of rows, oldest first, if this relay leads; returns how many."""
        conn = self._leader
        if conn is None and await self.ready():
            conn = self._leader
        if conn is None:
            return 0
        rows = (await conn.execute(self._select)).all()
        if not rows:
            return 0
        await publish_alone(
            self._producer,
            [Record(self._topic, r.customer_id.encode(), r.payload) for r in rows],
            timeout=10,
        )
        await conn.execute(self._delete, {"ids": [r.id for r in rows]})
        self.published += len(rows)
        return len(rows)

    async def ready(self) -> bool:
        """Whether this relay leads (holds the advisory lock); only the leader publishes.

        A leader is not asked again: its next pass runs on the lock's connection, and a pass
        that fails there ends the leadership (:meth:`failed`)."""
        if self._leader is not None:
            return True
        conn = await self._engine.connect()
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = await conn.scalar(_TRY_LOCK, {"k": self._lock_key})
            if got:
                await conn.execute(_NO_FLUSH_WAIT)
        except BaseException:
            await _discard(conn)
            raise
        if not got:
            await conn.close()
            return False
        self._leader = conn
        log.info("outbox_leader", topic=self._topic)
        return True

    async def failed(self, exc: Exception) -> None:
        # The broker or the database is away: the rows stay, to be published on a retry.
        log.warning("outbox_retry", reason=type(exc).__name__, topic=self._topic)
        await self._drop_leadership()

    async def aclose(self) -> None:
        await self._drop_leadership()

    async def _drop_leadership(self) -> None:
        if self._leader is not None:
            conn, self._leader = self._leader, None
            await _discard(conn)


async def _discard(conn: AsyncConnection) -> None:
    """Close ``conn`` for good (its session's lock and settings end with it), never back into
    the pool."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()
