"""Previewing a rule: :class:`~services.outreach.core.preview.Tally` run over the card replica,
streamed in chunks in customer id order, with each matched customer's contact history and
suppression, until the replica ends or a budget is spent
(:mod:`services.outreach.core.budgets`). Matching and deciding, the CPU work, run in a worker
thread a chunk at a time, so the event loop answers other requests meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.outreach.core.budgets import CutBy, ReadBudget
from services.outreach.core.conditions import Predicate
from services.outreach.core.policy import Policy
from services.outreach.core.preview import (
    PreviewCoverage,
    PreviewResult,
    Tally,
    audience,
    audience_stages,
    history_since,
)
from services.outreach.core.rules import Rule
from services.outreach.core.schedules import day_of
from services.outreach.shell.decide import SAFE_WAIT, waiting_of
from services.outreach.store.ledger import ContactState, contact_state, spent_on
from services.outreach.store.replica import replica_chunks

EXAMINED = Counter(
    "tend_outreach_preview_customers_total",
    "Replica rows examined by previews (a long preview shows its progress here)",
)

Card = tuple[str, Mapping[str, Any]]


def _in_audience(holds: Predicate, rows: Sequence[Any]) -> list[Card]:
    return [(r.customer_id, r.card) for r in rows if holds(r.card)]


def tally_chunk(tally: Tally, matched: list[Card], state: ContactState) -> None:
    """Judge one chunk's matched customers into ``tally`` (CPU work: run it off the loop)."""
    for customer_id, card in matched:
        tally.add(
            customer_id,
            card,
            state.history[customer_id],
            suppressed=customer_id in state.suppressed,
            waiting=[waiting_of(w) for w in state.waiting.get(customer_id, ())],
        )


async def judge_chunk(
    conn: AsyncConnection, tally: Tally, matched: list[Card], since: datetime | None
) -> None:
    """Read the contact state of one chunk's matched customers (their history since
    ``since``, suppression, and messages waiting to go out as the live decision reads them)
    and judge them into ``tally``."""
    ids = [customer_id for customer_id, _ in matched]
    state = await contact_state(conn, ids, since, waiting_after=tally.now + SAFE_WAIT)
    await asyncio.to_thread(tally_chunk, tally, matched, state)


async def preview(
    engine: AsyncEngine,
    rule: Rule,
    policy: Policy,
    now: datetime,
    *,
    budget: ReadBudget,
    within_days: int = 30,
    global_control_percent: float = 0,
) -> PreviewResult:
    """Run ``rule`` over the replica at ``now`` (a schedule rule: over the next
    ``within_days``), under ``policy``, within ``budget``; ``global_control_percent`` is
    the global control group's share (its customers are held out of the policy's kinds)."""
    started = time.monotonic()
    holds = audience(rule)
    since = history_since(rule, policy, now)
    examined = 0
    cut_by: CutBy | None = None
    async with engine.connect() as conn:
        spent = 0
        if rule.limits.max_per_day is not None:
            today = day_of(now, policy.schedule_context.default_timezone)
            used = await spent_on(conn, [rule.id], today, lock=False)
            spent = used.get(rule.id, 0)
        tally = Tally(
            rule,
            policy,
            now,
            within_days=within_days,
            spent_today=spent,
            global_control_percent=global_control_percent,
        )
        async for chunk in replica_chunks(conn, stages=audience_stages(rule)):
            if cut_by is not None:
                break  # rows were left: the scan is cut
            rows = chunk[: budget.max_rows - examined]
            examined += len(rows)
            EXAMINED.inc(len(rows))
            matched = await asyncio.to_thread(_in_audience, holds, rows)
            if matched:
                await judge_chunk(conn, tally, matched, since)
            if len(rows) < len(chunk):
                cut_by = "row_budget"
                break
            cut_by = budget.spent(examined, time.monotonic() - started)
        else:
            cut_by = None  # the replica ended before any budget was spent
    return tally.result(PreviewCoverage(customers=examined, complete=cut_by is None, cut_by=cut_by))
