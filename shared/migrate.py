"""Alembic, one migration history per schema: ``auth`` (shared) and one per service.

Each history keeps its version table inside its own schema, so services can be migrated and
deployed independently. ``tend migrate`` upgrades them all to head.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db_roles import grant_service_roles
from shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parent.parent

# (schema, folder of its alembic scripts), in the order they are applied.
HISTORIES: list[tuple[str, Path]] = [
    ("auth", ROOT / "shared" / "migrations"),
    ("ingest", ROOT / "services" / "ingest" / "migrations"),
    ("scoring", ROOT / "services" / "scoring" / "migrations"),
    ("outreach", ROOT / "services" / "outreach" / "migrations"),
]


def alembic_config(schema: str, location: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(location))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["schema"] = schema
    return config


def upgrade_all(settings: CommonSettings, revision: str = "head") -> None:
    """Bring every schema to ``revision``, then grant each service's role its privileges
    (:mod:`shared.db_roles`). Synchronous: alembic drives its own event loop."""
    for schema, location in HISTORIES:
        if (location / "env.py").exists():
            command.upgrade(alembic_config(schema, location, settings.database_url), revision)
    asyncio.run(_grant_roles(settings.database_url))


async def _grant_roles(url: str) -> None:
    """Each service's role may write its own schema only (:mod:`shared.db_roles`)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await grant_service_roles(conn)
    finally:
        await engine.dispose()


def run_migrations(target_metadata: MetaData) -> None:
    """The body of every ``env.py``: run this schema's migrations online, asynchronously."""
    config = context.config
    schema: str = config.attributes["schema"]
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None

    def do_run(connection: Connection) -> None:
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=schema,
            include_schemas=True,
            include_name=lambda name, type_, _: type_ != "schema" or name == schema,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(do_run)
        finally:
            await engine.dispose()

    asyncio.run(run())
