"""Event ids are remembered as long in ingest as in the consumers' inboxes: a reused id is a
duplicate (200) or a conflict (409) at ingest for the whole retention, and new to every
service after it; never accepted by ingest and then dropped by an inbox. The hourly prunes
forget what is past the retention and keep the rest."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest.app import create_app as create_ingest
from services.outreach.store import inbox as outreach_inbox
from shared.settings import EVENT_ID_RETENTION_DAYS, CommonSettings, inbox_retention
from tests.integration.conftest import wait_applied
from tests.integration.test_ingest import auth, order

pytestmark = pytest.mark.integration

_AGE = text(
    """
    WITH k AS (
        UPDATE ingest.idempotency_keys SET created_at = created_at - make_interval(days => :days)
        WHERE event_id = :id
    )
    UPDATE scoring.inbox SET received_at = received_at - make_interval(days => :days),
        applied_at = applied_at - make_interval(days => :days)
    WHERE event_id = :id
    """
)


async def _prune_ingest(settings: CommonSettings) -> int:
    """Ingest's hourly prune, as a running ingest does it."""
    app = create_ingest(settings)
    async with app.router.lifespan_context(app):
        return int(await app.state.intake.prune())


async def test_a_reused_event_id_is_recognised_for_the_retention_and_new_everywhere_after(
    ingest: httpx.AsyncClient,
    keys: dict[str, str],
    settings: CommonSettings,
    engine: AsyncEngine,
    scoring: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    headers = auth(keys["ingest"])
    event_id = str(uuid.uuid4())
    body = order(event_id=event_id)
    assert (await ingest.post("/v1/orders", json=body, headers=headers)).status_code == 202
    await wait_applied(engine, [event_id])

    # Thirty days on (far past the old eight-day window), and the hourly prunes have run.
    async with engine.begin() as conn:
        await conn.execute(_AGE, {"id": event_id, "days": 30})
    await _prune_ingest(settings)
    await scoring[1].state.applier.prune_inbox()

    again = await ingest.post("/v1/orders", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    other = await ingest.post(
        "/v1/orders", json={**body, "amount": "61.00", "items": []}, headers=headers
    )
    assert other.status_code == 409, other.text

    # Past the retention (before any prune has run): the id is new to ingest and to scoring.
    async with engine.begin() as conn:
        await conn.execute(_AGE, {"id": event_id, "days": EVENT_ID_RETENTION_DAYS})
    reused = await ingest.post("/v1/orders", json=body, headers=headers)
    assert reused.status_code == 202, reused.text
    async with engine.connect() as conn:
        accepted_at = await conn.scalar(
            text("SELECT created_at FROM ingest.idempotency_keys WHERE event_id = :id"),
            {"id": event_id},
        )
    assert accepted_at > datetime.now(UTC) - timedelta(minutes=5)
    # Scoring applies it again: its inbox row is the new event's.
    for _ in range(100):
        async with engine.connect() as conn:
            received = await conn.scalar(
                text("SELECT received_at FROM scoring.inbox WHERE event_id = :id"),
                {"id": event_id},
            )
        if received == accepted_at:
            break
        await asyncio.sleep(0.2)
    assert received == accepted_at


async def test_the_prunes_forget_ids_past_the_retention_and_keep_the_newer_ones(
    settings: CommonSettings, engine: AsyncEngine, scoring: tuple[httpx.AsyncClient, FastAPI]
) -> None:
    tag = uuid.uuid4().hex[:8]
    days = {
        f"{tag}-{d}": d for d in (1, 30, EVENT_ID_RETENTION_DAYS - 2, EVENT_ID_RETENTION_DAYS + 1)
    }
    async with engine.begin() as conn:
        for event_id, age in days.items():
            at = {"id": event_id, "at": datetime.now(UTC) - timedelta(days=age)}
            await conn.execute(
                text(
                    "INSERT INTO ingest.idempotency_keys "
                    "(event_id, customer_id, payload_hash, state, created_at) "
                    "VALUES (:id, 'c-prune', '\\x00', 1, :at)"
                ),
                at,
            )
            await conn.execute(
                text(
                    "INSERT INTO scoring.inbox (event_id, customer_id, applied_at, received_at) "
                    "VALUES (:id, 'c-prune', :at, :at)"
                ),
                at,
            )
            await conn.execute(
                text("INSERT INTO outreach.inbox (change_id, received_at) VALUES (:id, :at)"), at
            )

    await _prune_ingest(settings)
    assert await scoring[1].state.applier.prune_inbox() >= 1
    async with engine.begin() as conn:
        assert await outreach_inbox.prune(conn, inbox_retention()) >= 1

    kept = {f"{tag}-{d}" for d in (1, 30, EVENT_ID_RETENTION_DAYS - 2)}
    async with engine.connect() as conn:
        for table, column in (
            ("ingest.idempotency_keys", "event_id"),
            ("scoring.inbox", "event_id"),
            ("outreach.inbox", "change_id"),
        ):
            left = set(
                await conn.scalars(
                    text(f"SELECT {column} FROM {table} WHERE {column} LIKE :tag"),
                    {"tag": f"{tag}-%"},
                )
            )
            assert left == kept, table


async def test_outreach_takes_a_change_id_for_new_once_its_event_is_past_the_retention(
    engine: AsyncEngine,
) -> None:
    change_id = f"chg-{uuid.uuid4().hex}"
    first = datetime.now(UTC) - timedelta(days=EVENT_ID_RETENTION_DAYS)
    keep = inbox_retention()
    async with engine.begin() as conn:
        assert await outreach_inbox.claim(conn, [change_id], [first], keep) == {change_id}
        later = first + timedelta(days=30)
        assert await outreach_inbox.claim(conn, [change_id], [later], keep) == set()
        # Ingest forgets the event id a day after the inbox does: by then it is new here.
        reused = first + timedelta(days=EVENT_ID_RETENTION_DAYS)
        assert await outreach_inbox.claim(conn, [change_id], [reused], keep) == {change_id}
