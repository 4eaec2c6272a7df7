"""Previewing a rule: :class:`~services.outreach.core.preview.Tally` run over the whole card
replica, streamed in chunks, with each matched customer's contact history and suppression."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.core.policy import Policy
from services.outreach.core.preview import (
    PreviewResult,
    Tally,
    audience,
    audience_stages,
    history_since,
)
from services.outreach.core.rules import Rule
from services.outreach.store.ledger import contact_history, suppressed_among
from services.outreach.store.replica import replica_chunks


async def preview(engine: AsyncEngine, rule: Rule, policy: Policy, now: datetime) -> PreviewResult:
    """Run ``rule`` over the whole replica at ``now``, under ``policy``."""
    holds = audience(rule)
    tally = Tally(rule, policy, now)
    since = history_since(rule, policy, now)
    async with engine.connect() as conn:
        async for rows in replica_chunks(conn, stages=audience_stages(rule)):
            matched = [(r.customer_id, r.card) for r in rows if holds(r.card)]
            if not matched:
                continue
            ids = [customer_id for customer_id, _ in matched]
            history = await contact_history(conn, ids, since)
            suppressed = await suppressed_among(conn, ids)
            for customer_id, card in matched:
                tally.add(
                    customer_id, card, history[customer_id], suppressed=customer_id in suppressed
                )
    return tally.result()
