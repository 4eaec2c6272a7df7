"""The pool checks a connection that sat idle before handing it out, and spends nothing on one
used a moment ago: a lost busy connection fails one statement as a disconnect (which callers
retry or answer 503), and the pool recovers."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine, unreachable
from shared.settings import CommonSettings

pytestmark = pytest.mark.integration

_PID = text("SELECT pg_backend_pid()")


async def _end_session(settings: CommonSettings, pid: int) -> None:
    """The server ends a session, as a restart or an idle timeout would."""
    other = make_engine(settings, pool_size=1, ping_after_idle=None)
    async with other.connect() as conn:
        assert await conn.scalar(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        # Gone once the server has let it go.
        for _ in range(100):
            alive = await conn.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            )
            if not alive:
                break
            await asyncio.sleep(0.02)
    await other.dispose()


async def _pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(_PID))


async def test_a_connection_lost_while_idle_is_replaced_unseen(settings: CommonSettings) -> None:
    engine = make_engine(settings, pool_size=1, ping_after_idle=0.2)
    try:
        first = await _pid(engine)
        await _end_session(settings, first)
        await asyncio.sleep(0.3)
        # Checked on its way out of the pool: the caller gets a live connection.
        assert await _pid(engine) != first
    finally:
        await engine.dispose()


async def test_a_connection_used_a_moment_ago_is_not_asked_and_a_loss_is_transient(
    settings: CommonSettings,
) -> None:
    engine = make_engine(settings, pool_size=1, ping_after_idle=60)
    try:
        first = await _pid(engine)
        await _end_session(settings, first)
        # Not checked (used within the minute): the statement meets the lost session, and the
        # error is one every caller takes as "the database is unavailable, retry".
        with pytest.raises(sqlalchemy.exc.DBAPIError) as lost:
            await _pid(engine)
        assert unreachable(lost.value)
        # The pool started afresh.
        assert await _pid(engine) != first
    finally:
        await engine.dispose()
