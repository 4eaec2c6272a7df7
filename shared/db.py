"""The async database engine, sessions and the declarative base every service's tables use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
import sqlalchemy.exc
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.settings import CommonSettings

# Stable constraint names, so migrations can refer to them and autogenerate stays quiet.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def schema_metadata(schema: str) -> MetaData:
    """The metadata of one service's schema: each service owns exactly one."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


# A pooled connection unused for this long is asked whether the server still has it before it
# is handed out (a database restart, an idle timeout, a proxy may have closed it meanwhile);
# one used more recently is handed out as it is. Asking costs three round trips (BEGIN, the
# ping, ROLLBACK), which a busy service would otherwise spend on every transaction; a
# connection lost within the second fails its statement as a disconnect, which every caller
# already takes as transient (a consumer retries its batch, a request answers 503), and the
# pool then starts afresh.
PING_AFTER_IDLE_SECONDS = 1.0


def make_engine(
    settings: CommonSettings,
    *,
    pool_size: int | None = None,
    synchronous_commit: bool = True,
    ping_after_idle: float | None = PING_AFTER_IDLE_SECONDS,
) -> AsyncEngine:
    """``synchronous_commit=False`` trades the last few hundred milliseconds of commits after
    a database crash for not waiting on a disk flush: only for tables whose loss a retry
    repairs (ingest's idempotency keys), never for state or outboxes. ``ping_after_idle``:
    seconds a pooled connection may sit unused before it is checked on its way out
    (:func:`_ping_when_idle`); None never checks."""
    server_settings = {} if synchronous_commit else {"synchronous_commit": "off"}
    engine = create_async_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=5,
        pool_recycle=1800,
        pool_timeout=5,
        # Statement parameters carry profiles and messages: never into errors or logs.
        hide_parameters=True,
        # JSONB columns are read on every consumed batch: orjson decodes them several times
        # faster than the standard library.
        json_deserializer=orjson.loads,
        connect_args={"command_timeout": 15, "timeout": 5, "server_settings": server_settings},
    )
    if ping_after_idle is not None:
        _ping_when_idle(engine, ping_after_idle)
    return engine


def _ping_when_idle(engine: AsyncEngine, after: float) -> None:
    pool_events = engine.sync_engine

    @event.listens_for(pool_events, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool_events, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < after:
            return  # new, or in use a moment ago
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool drops this connection and hands out another.
            raise sqlalchemy.exc.DisconnectionError("the server closed the connection") from exc


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block succeeds, rolled back when it raises."""
    async with sessions() as session, session.begin():
        yield session


async def create_database(settings: CommonSettings, name: str) -> CommonSettings:
    """Create database ``name`` on the server of ``settings``; settings that point at it."""
    url = make_url(settings.database_url)
    conn = await asyncpg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    new_url = url.set(database=name).render_as_string(hide_password=False)
    return settings.model_copy(update={"database_url": new_url})


async def drop_database(settings: CommonSettings, name: str, wait_seconds: float = 600) -> None:
    """Drop the database ``name``, ending its sessions. An autovacuum worker in it (a
    superuser's session, which FORCE does not end for a non-superuser) is waited for, up to
    ``wait_seconds``: on a small database it is gone in moments, on a million freshly written
    rows it may take minutes."""
    url = make_url(settings.database_url).set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    deadline = time.monotonic() + wait_seconds
    delay = 0.25
    try:
        while True:
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                if time.monotonic() + delay > deadline:
                    raise RuntimeError(f"could not drop database {name}: still in use") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
    finally:
        await conn.close()


async def database_reachable(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


async def answers_promptly(engine: AsyncEngine, seconds: float) -> bool:
    """True when the database answers ``SELECT 1`` within ``seconds``: it is up and not
    overloaded (a probe that tells one slow statement from a slow database)."""
    try:
        async with asyncio.timeout(seconds), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


# SQLSTATE query_canceled: the server's statement_timeout (or an operator's cancel).
_QUERY_CANCELED = "57014"


def statement_timed_out(exc: BaseException) -> bool:
    """True when a statement ran too long: the server cancelled it (``statement_timeout``)
    or the driver's command timeout expired. Whether the statement or the database is to
    blame is for the caller to find out (:func:`answers_promptly`)."""
    return isinstance(exc, TimeoutError) or _QUERY_CANCELED in _sqlstates(exc)


# The server rolled a transaction back to let another go on.
_LOST_TO_ANOTHER = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


def rolled_back(exc: BaseException) -> bool:
    """True when the server rolled the transaction back to let another go on (a deadlock, a
    serialization failure): nothing in the work was wrong, and the same work tried again
    succeeds."""
    return not _LOST_TO_ANOTHER.isdisjoint(_sqlstates(exc))


def _sqlstates(exc: BaseException) -> set[str]:
    """The SQLSTATEs ``exc`` carries: its own, or, wrapped by SQLAlchemy, the driver's."""
    chain: list[BaseException | None] = [exc]
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        chain += [exc.orig, exc.orig.__cause__ if exc.orig is not None else None]
    return {state for e in chain if isinstance(state := getattr(e, "sqlstate", None), str)}


# What a lost or refused database connection looks like, however it surfaces: the driver's
# own errors, or a pool with no connection free in time (SQLAlchemy's wrapped errors are
# judged by :func:`unreachable`).
UNREACHABLE_DRIVER: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.InterfaceError,
    sqlalchemy.exc.TimeoutError,
)


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means the database could not be reached (worth a 503 and a retry),
    not that a statement was wrong."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return (
            exc.connection_invalidated
            or isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
            or isinstance(exc.orig, (*UNREACHABLE_DRIVER, OSError))
        )
    return isinstance(exc, (*UNREACHABLE_DRIVER, OSError))
