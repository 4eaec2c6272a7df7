"""Channels as rules see them: whether a channel a rule names exists, and of which kind."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_KIND = text("SELECT kind FROM outreach.channels WHERE id = :id")


async def channel_kind(conn: AsyncConnection, channel_id: str) -> str | None:
    """The kind of the channel named ``channel_id`` (enabled or not), or None."""
    kind: str | None = await conn.scalar(_KIND, {"id": channel_id})
    return kind
