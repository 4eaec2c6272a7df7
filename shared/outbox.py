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

The consumer whose batch wrote the rows calls :meth:`OutboxRelay.publish_now` once the batch
has committed: the rows are read, published and acknowledged before the consumer takes its
next batch, and their delete follows in the background. A nudged pass, or records merely
handed to the producer, wait for the event loop while the next batch's work holds it (a
quarter of a second and more was seen on a busy machine), and every change of the batch with
them. Passes never overlap (one lock), so rows still leave in their order, once.

The leader vacuums its table itself every ``vacuum_every`` rows it deleted. Every pass reads
the oldest rows by id, and a deleted row's index entry stays until a vacuum removes it, so
each pass stepped over every row deleted since the last one: autovacuum looks at a table
once a minute, and in a minute of a busy consumer the read grew to several times its cost
(in one CDNOW replay it was scoring's third-costliest statement). A vacuum of a table this
small takes a few milliseconds; one that cannot start at once (autovacuum holds the table)
is skipped, and a role that does not own the table gets a warning from the server and
nothing else. It leaves the emptied pages to the next rows rather than cutting them off the
table: that cut locks every writer out of the table for a moment, the consumer's batch
among them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.kafka import Handed, Record, hand_over_alone
from shared.logging import get_logger
from shared.worker import Worker

log = get_logger(__name__)

_TRY_LOCK = text("SELECT pg_try_advisory_lock(:k)")
# The delete is the only write on the leader's connection (see the module text).
_NO_FLUSH_WAIT = text("SET synchronous_commit = off")
# The broker must take and acknowledge a pass's records within this.
PUBLISH_SECONDS = 10
# Rows deleted between two vacuums of the table (see the module text).
VACUUM_EVERY = 2000


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
        vacuum_every: int = VACUUM_EVERY,
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
        self._batch = int(batch)
        self._vacuum = text(f"VACUUM (SKIP_LOCKED, TRUNCATE false) {table}")
        self._vacuum_every = vacuum_every
        self._deleted_since_vacuum = 0
        self.vacuums = 0
        # One pass at a time, whoever starts it (the loop or publish_now).
        self._passing = asyncio.Lock()
        self._settling: asyncio.Task[None] | None = None
        self.published = 0

    async def run_once(self) -> int:
        return await self.relay_once()

    async def relay_once(self) -> int:
        """Publish one batch of rows, oldest first, if this relay leads; returns how many."""
        async with self._passing:
            handed = await self._hand_over()
            if handed is None:
                return 0
            return await self._settle(*handed)

    async def publish_now(self) -> None:
        """Publish the rows there are now and wait for the broker's acknowledgement (see the
        module text); their delete follows in the background. Only a leader does; a pass
        already under way is nudged to look again instead. Never raises: a failure ends the
        leadership, and the relay's own loop tries again."""
        if self._leader is None or self._passing.locked():
            self.nudge()
            return
        await self._passing.acquire()
        try:
            handed = await self._hand_over()
            if handed is not None:
                # Until the broker has them: the producer sends only when the loop lets it,
                # and the next batch's work would hold the loop.
                await handed[1].acknowledged(timeout=PUBLISH_SECONDS)
        except Exception as exc:
            self._passing.release()
            await self.failed(exc)
            self.nudge()
            return
        if handed is None:
            self._passing.release()
            return
        self._settling = asyncio.create_task(self._settle_then_release(*handed))

    async def settled(self) -> None:
        """Wait for a pass :meth:`publish_now` began to finish."""
        if self._settling is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._settling)

    async def _settle_then_release(self, ids: Sequence[int], handed: Handed) -> None:
        """Delete the rows (acknowledged already) and end the pass."""
        try:
            if await self._settle(ids, handed) >= self._batch:
                self.nudge()  # more rows than a pass takes
        except Exception as exc:
            await self.failed(exc)
            self.nudge()
        finally:
            self._passing.release()

    async def _hand_over(self) -> tuple[list[int], Handed] | None:
        """Read the oldest rows and hand them to the producer (none: ``None``)."""
        conn = self._leader
        if conn is None and await self.ready():
            conn = self._leader
        if conn is None:
            return None
        rows = (await conn.execute(self._select)).all()
        if not rows:
            return None
        handed = await hand_over_alone(
            self._producer,
            [Record(self._topic, r.customer_id.encode(), r.payload) for r in rows],
            timeout=PUBLISH_SECONDS,
        )
        return [r.id for r in rows], handed

    async def _settle(self, ids: Sequence[int], handed: Handed) -> int:
        """Once the broker has acknowledged the rows, delete them; returns how many."""
        await handed.acknowledged(timeout=PUBLISH_SECONDS)
        conn = self._leader
        if conn is None:  # leadership ended meanwhile: the next leader publishes them again
            return 0
        await conn.execute(self._delete, {"ids": list(ids)})
        self.published += len(ids)
        self._deleted_since_vacuum += len(ids)
        if self._deleted_since_vacuum >= self._vacuum_every:
            await conn.execute(self._vacuum)
            self._deleted_since_vacuum = 0
            self.vacuums += 1
        return len(ids)

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
        await self.settled()
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
