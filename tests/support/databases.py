"""A database and topics of a test's (or a benchmark's) own, on the real PostgreSQL and Kafka.

Kept apart from :mod:`tests.support.stack` so that using it brings none of the services: a
benchmark measuring a bare producer in its own process must not carry the services' modules
on its heap (the garbage collector's work, and so the figure, depends on them).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.db import create_database, drop_database
from shared.migrate import upgrade_all
from shared.settings import CommonSettings
from shared.topics import delete_topics, ensure_topics


@asynccontextmanager
async def fresh_settings(
    base: CommonSettings, *, topics: bool = True
) -> AsyncIterator[CommonSettings]:
    """Settings with a new migrated database and (by default) a new topic prefix."""
    name = f"tend_iso_{uuid.uuid4().hex[:10]}"
    settings = await create_database(base, name)
    if topics:
        prefix = f"{base.topic_prefix}iso{uuid.uuid4().hex[:6]}."
        settings = settings.model_copy(update={"topic_prefix": prefix})
    try:
        # alembic drives its own event loop, so it runs in a thread
        await asyncio.to_thread(upgrade_all, settings)
        if topics:
            await ensure_topics(settings)
        yield settings
    finally:
        await drop_database(base, name)
        if topics:
            await delete_topics(settings)
