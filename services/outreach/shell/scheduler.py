"""What time alone sets off: schedule rules coming due (birthdays, follow-ups, cron...) and
deferred actions whose quiet hours are over.

Due schedules are found through the ``schedule`` index (``due_at``), never by scanning
customers; each is decided through :mod:`services.outreach.shell.decide` under the customer's
lock, with the customer's local date as the occurrence, then rescheduled.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.core.rules import Match, Rule
from services.outreach.core.schedules import occurrence_key
from services.outreach.settings import OutreachSettings
from services.outreach.shell.consumer import reschedule
from services.outreach.shell.current import Current
from services.outreach.shell.decide import Recorded, decide_and_record
from shared.clock import Clock

_DUE = text(
    """
    SELECT s.rule_id, s.customer_id, s.due_at, c.card
    FROM outreach.schedule s JOIN outreach.cards c USING (customer_id)
    WHERE s.due_at <= :now
    ORDER BY s.due_at
    LIMIT :limit
    FOR UPDATE OF s SKIP LOCKED
    """
)
_RELEASE_DEFERRED = text(
    """
    UPDATE outreach.actions SET status = 'pending', next_attempt_at = not_before
    WHERE status = 'scheduled' AND not_before <= :now
    """
)
_REPLICA_CHUNK = text(
    "SELECT customer_id, card FROM outreach.cards WHERE customer_id > :after "
    "ORDER BY customer_id LIMIT :n"
)
# Rows of rules deleted, disabled or no longer on a schedule.
_DROP = text("DELETE FROM outreach.schedule WHERE rule_id = ANY(CAST(:rules AS text[]))")


async def fire_due(
    engine: AsyncEngine, clock: Clock, current: Current, settings: OutreachSettings
) -> tuple[int, list[Recorded]]:
    """One round of due schedules (at most ``scheduler_batch``): (due rows, decided)."""
    now = clock.now()
    policy = current.policy
    rules = current.rules
    async with engine.begin() as conn:
        due = (await conn.execute(_DUE, {"now": now, "limit": settings.scheduler_batch})).all()
        if not due:
            return 0, []
        matches: list[Match] = []
        cards: dict[str, Any] = {}
        live_rules = []
        for row in due:
            rule = rules.get(row.rule_id)
            if rule is None or not rule.enabled or rule.trigger.type != "schedule":
                continue
            cards[row.customer_id] = row.card
            if current.ruleset.conditions_hold(rule, row.card):
                key = occurrence_key(
                    rule, row.card, row.due_at, default_timezone=policy.default_timezone
                )
                matches.append(Match(rule, row.customer_id, key))
            live_rules.append(rule)
        recorded = await decide_and_record(
            conn, matches, cards, policy=policy, settings=settings, now=now
        )
        # Next occurrence: strictly after this one, so it can never fire twice.
        for row in due:
            rule = rules.get(row.rule_id)
            if rule is not None and rule in live_rules:
                await reschedule(
                    conn,
                    [rule],
                    {row.customer_id: row.card},
                    row.due_at + timedelta(minutes=1),
                    policy.default_timezone,
                )
        gone = sorted({row.rule_id for row in due} - {r.id for r in live_rules})
        if gone:
            await conn.execute(_DROP, {"rules": gone})
    return len(due), recorded


async def release_deferred(engine: AsyncEngine, now: datetime) -> int:
    async with engine.begin() as conn:
        result = await conn.execute(_RELEASE_DEFERRED, {"now": now})
    return int(result.rowcount)


async def tick(
    engine: AsyncEngine, clock: Clock, current: Current, settings: OutreachSettings
) -> int:
    """Everything time sets off now; returns how many actions were decided."""
    decided = 0
    while True:
        due, batch = await fire_due(engine, clock, current, settings)
        decided += len(batch)
        if due < settings.scheduler_batch:
            break
    await release_deferred(engine, clock.now())
    return decided


async def reindex_schedule(
    engine: AsyncEngine,
    rules: Sequence[Rule],
    default_timezone: str,
    now: datetime,
    chunk: int = 2000,
) -> int:
    """When each of ``rules`` next fires for every customer in the replica (a rule was saved);
    returns how many customers were looked at."""
    after = ""
    seen = 0
    while True:
        async with engine.begin() as conn:
            rows = (await conn.execute(_REPLICA_CHUNK, {"after": after, "n": chunk})).all()
            if not rows:
                return seen
            await reschedule(
                conn, rules, {r.customer_id: r.card for r in rows}, now, default_timezone
            )
        after = rows[-1].customer_id
        seen += len(rows)
