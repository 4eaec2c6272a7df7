"""Where the contact policy is kept: one row, replaced whole."""

from __future__ import annotations

from datetime import datetime

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.policy import Policy


async def load_policy(conn: AsyncConnection) -> Policy:
    raw = await conn.scalar(text("SELECT definition FROM outreach.policy WHERE id = 1"))
    return Policy.model_validate(raw) if raw is not None else Policy()


async def lock_policy(conn: AsyncConnection) -> None:
    """Serialise replacements until the transaction ends."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('outreach.policy', 0))"))


async def save_policy(conn: AsyncConnection, policy: Policy, now: datetime) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO outreach.policy (id, definition, updated_at)
            VALUES (1, CAST(:d AS jsonb), :now)
            ON CONFLICT (id) DO UPDATE SET definition = EXCLUDED.definition,
                updated_at = EXCLUDED.updated_at
            """
        ),
        {"d": orjson.dumps(policy.model_dump(mode="json")).decode(), "now": now},
    )
