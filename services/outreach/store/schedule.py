"""The schedule index: when each schedule rule next fires for each customer (``due_at``), so
the scheduler finds what is due without scanning customers.

Each row also keeps the instant of the last occurrence the scheduler handled (``handled_at``).
A recomputation (a card changed, a rule was saved) may catch up an instant that passed today
(:class:`~services.outreach.core.schedules.CatchUp`); when the scheduler already handled that
instant, the row takes the next one instead, so a customer's every change does not send their
schedule back to be run again. A row with nothing left to fire keeps that memory with a null
``due_at`` until a recomputation finds nothing to catch up either."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.rules import Rule, RuleFailure
from services.outreach.core.schedules import CatchUp, ScheduleContext, inputs_of, next_due

# ``due``: the first instant (a passed one within the catch-up window); ``later``: the first
# strictly after now, taken instead when the scheduler already handled ``due``. A row whose
# instant did not move is left as it is (most of a batch's: a card changed, not the dates it
# schedules by), so it costs no new row version. The last condition holds against the row as
# it stands when locked: a scheduler that handled it since this statement's snapshot (a rule
# saved while it ran) keeps the instant it moved the row to.
_SCHEDULE = text(
    """
    INSERT INTO outreach.schedule AS s (rule_id, customer_id, due_at)
    SELECT t.r, t.c, CASE WHEN t.d <= o.handled_at THEN t.n ELSE t.d END
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(r text, c text, d timestamptz,
        n timestamptz)
    LEFT JOIN outreach.schedule o ON o.rule_id = t.r AND o.customer_id = t.c
    ON CONFLICT (rule_id, customer_id) DO UPDATE SET due_at = EXCLUDED.due_at
    WHERE s.due_at IS DISTINCT FROM EXCLUDED.due_at
        AND (EXCLUDED.due_at <= s.handled_at) IS NOT TRUE
    """
)
# The scheduler's rows, handled: each takes its next instant (null: none) in one statement,
# and stays in its rule's line from the first day the daily limit passed it over (``t.w``,
# null once it was decided).
_ADVANCE = text(
    """
    UPDATE outreach.schedule s SET due_at = t.n, handled_at = t.h,
        waiting_since = CASE WHEN t.w IS NULL THEN NULL ELSE coalesce(s.waiting_since, t.w) END
    FROM unnest(CAST(:rules AS text[]), CAST(:customers AS text[]),
                CAST(:handled AS timestamptz[]), CAST(:next AS timestamptz[]),
                CAST(:waiting AS timestamptz[])) AS t(r, c, h, n, w)
    WHERE s.rule_id = t.r AND s.customer_id = t.c
    """
)
# Customers a stage, membership or broadcast rule's spent daily limit passed over: due again
# at the next day's start, in its line since the first time (a row already there keeps its
# place). A broadcast's row names the launch its customer waits for: a later launch of the
# rule takes the place of one they still wait for (they get the newer news, once).
_LINE_UP = text(
    """
    INSERT INTO outreach.schedule AS s (rule_id, customer_id, due_at, waiting_since, launch_id)
    SELECT t.r, t.c, :due, :now, t.l
    FROM unnest(CAST(:rules AS text[]), CAST(:customers AS text[]),
                CAST(:launches AS text[])) AS t(r, c, l)
    ON CONFLICT (rule_id, customer_id) DO UPDATE SET due_at = EXCLUDED.due_at,
        waiting_since = coalesce(s.waiting_since, EXCLUDED.waiting_since),
        launch_id = coalesce(EXCLUDED.launch_id, s.launch_id)
    """
)
_UNSCHEDULE = text(
    """
    DELETE FROM outreach.schedule s
    USING unnest(CAST(:rules AS text[]), CAST(:customers AS text[])) AS t(r, c)
    WHERE s.rule_id = t.r AND s.customer_id = t.c
    """
)
_DUE = text(
    """
    SELECT s.rule_id, s.customer_id, s.due_at, s.launch_id, c.card
    FROM outreach.schedule s JOIN outreach.cards c USING (customer_id)
    WHERE s.due_at <= :now
    ORDER BY s.due_at
    LIMIT :limit
    -- The customer's replica row too, skipped when taken: the consumer locks a customer's
    -- row before their schedule rows, so waiting here for one it holds would deadlock.
    FOR UPDATE OF s, c SKIP LOCKED
    """
)
# One rule's due rows, the most valuable customers first: a rule with a daily limit whose
# backlog is larger than a pass takes its first pass of the day from here. Its rows only
# (the primary key's range), each due row's card read for its value score.
_DUE_MOST_VALUABLE = text(
    """
    SELECT s.rule_id, s.customer_id, s.due_at, s.launch_id, c.card
    FROM outreach.schedule s JOIN outreach.cards c USING (customer_id)
    WHERE s.rule_id = :rule AND s.due_at <= :now
    ORDER BY CAST(c.card->>'value_score' AS float8) DESC NULLS LAST, s.customer_id
    LIMIT :limit
    FOR UPDATE OF s, c SKIP LOCKED
    """
)
# Rows of rules deleted or no longer on a schedule.
_DROP = text("DELETE FROM outreach.schedule WHERE rule_id = ANY(CAST(:rules AS text[]))")
# Rows of rules disabled: kept, due never, so that the rule finds its line (and the instants
# it handled) again when it is enabled.
_PARK = text(
    """
    UPDATE outreach.schedule SET due_at = NULL
    WHERE rule_id = ANY(CAST(:rules AS text[])) AND due_at IS NOT NULL
    """
)
# A rule enabled again: its line comes due (the rows the scheduler parked while it was off).
_RECALL = text(
    """
    UPDATE outreach.schedule SET due_at = :due
    WHERE rule_id = ANY(CAST(:rules AS text[])) AND due_at IS NULL AND waiting_since IS NOT NULL
    """
)


async def reschedule(
    conn: AsyncConnection,
    schedules: Sequence[Rule],
    cards: Mapping[str, Mapping[str, Any]],
    after: datetime,
    context: ScheduleContext,
    failures: list[RuleFailure] | None = None,
    catch_up: CatchUp | None = None,
) -> None:
    """Recompute when each schedule rule next fires for each of these customers (with
    ``catch_up``, an instant that passed within its window is due at once, unless the
    scheduler already handled it: then the next one). A rule that raises for a customer is
    not scheduled for them and is reported in ``failures``."""
    due: list[tuple[str, str, datetime, datetime | None]] = []
    gone: list[tuple[str, str]] = []
    # Customers whose cards give a rule the same inputs get the same instants: each is worked
    # out once per call (most customers share a zone, and many have no birthday).
    known: dict[tuple[Any, ...], tuple[datetime | None, datetime | None]] = {}
    for customer_id, card in cards.items():
        for n, rule in enumerate(schedules):
            try:
                key = _hashable((n, *inputs_of(rule, card, context)))
                found = known.get(key) if key is not None else None
                if found is None:
                    found = _instants(rule, card, after, context, catch_up)
                    if key is not None:
                        known[key] = found
                at, later = found
            except Exception as exc:  # one rule never stops the others
                if failures is not None:
                    failures.append(RuleFailure.of(rule.id, exc, "schedule"))
                continue
            if at is None:
                gone.append((rule.id, customer_id))
            else:
                due.append((rule.id, customer_id, at, later))
    if due:
        # One JSON parameter for the batch's rows (thousands: a row per rule and customer),
        # which the driver sends as it is rather than walking four arrays item by item.
        rows = [{"r": r, "c": c, "d": d, "n": n} for r, c, d, n in due]
        await conn.execute(_SCHEDULE, {"rows": orjson.dumps(rows).decode()})
    if gone:
        await conn.execute(
            _UNSCHEDULE, {"rules": [g[0] for g in gone], "customers": [g[1] for g in gone]}
        )


def _instants(
    rule: Rule,
    card: Mapping[str, Any],
    after: datetime,
    context: ScheduleContext,
    catch_up: CatchUp | None,
) -> tuple[datetime | None, datetime | None]:
    """When ``rule`` is next due for ``card`` (caught up), and the instant that stands in for
    a caught-up one the scheduler already handled (the one after now; the statement knows
    which to take)."""
    at = next_due(rule, card, after, context=context, catch_up=catch_up)
    later = next_due(rule, card, after, context=context) if at is not None and at <= after else at
    return at, later


def _hashable(key: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``key``, or None when an input is no JSON scalar (a malformed card: worked out alone)."""
    try:
        hash(key)
    except TypeError:
        return None
    return key


@dataclass(frozen=True, slots=True)
class Handled:
    """A due row the scheduler handled: the occurrence it handled (``at``), the next one
    (None: nothing left to fire) and, when the rule's daily limit passed the customer over,
    the instant it did (the row keeps the first such instant until they are decided)."""

    rule_id: str
    customer_id: str
    at: datetime
    next_at: datetime | None
    passed_over_at: datetime | None = None


async def advance(conn: AsyncConnection, handled: Sequence[Handled]) -> None:
    """The scheduler handled these rows (locked by :func:`due`): each records the occurrence
    handled, moves to the next and joins (or stays in, or leaves) its rule's line, all in one
    statement."""
    if not handled:
        return
    await conn.execute(
        _ADVANCE,
        {
            "rules": [h.rule_id for h in handled],
            "customers": [h.customer_id for h in handled],
            "handled": [h.at for h in handled],
            "next": [h.next_at for h in handled],
            "waiting": [h.passed_over_at for h in handled],
        },
    )


async def line_up(
    conn: AsyncConnection,
    pairs: Sequence[tuple[str, str]],
    due_at: datetime,
    now: datetime,
    launch_id: str | None = None,
) -> None:
    """Put each ``(rule_id, customer_id)`` in its rule's line (since ``now``, unless it is
    already there), due again at ``due_at``; a broadcast's customers wait for ``launch_id``."""
    await conn.execute(
        _LINE_UP,
        {
            "rules": [p[0] for p in pairs],
            "customers": [p[1] for p in pairs],
            "launches": [launch_id] * len(pairs),
            "due": due_at,
            "now": now,
        },
    )


async def leave_line(conn: AsyncConnection, pairs: Sequence[tuple[str, str]]) -> None:
    """Forget the rows of customers who left a stage or membership rule's line (decided, or
    no longer in its episode)."""
    if pairs:
        await conn.execute(
            _UNSCHEDULE,
            {"rules": [p[0] for p in pairs], "customers": [p[1] for p in pairs]},
        )


async def due(conn: AsyncConnection, now: datetime, limit: int) -> Sequence[Row[Any]]:
    """Up to ``limit`` rows due at ``now`` (``rule_id``, ``customer_id``, ``due_at``,
    ``launch_id``, ``card``), earliest first, locked; rows another scheduler holds are
    skipped."""
    return (await conn.execute(_DUE, {"now": now, "limit": limit})).all()


async def due_most_valuable(
    conn: AsyncConnection, rule_id: str, now: datetime, limit: int
) -> Sequence[Row[Any]]:
    """Up to ``limit`` of ``rule_id``'s rows due at ``now``, the most valuable customers (the
    card's value score) first, locked as :func:`due` locks them."""
    params = {"rule": rule_id, "now": now, "limit": limit}
    return (await conn.execute(_DUE_MOST_VALUABLE, params)).all()


async def drop_rules(conn: AsyncConnection, rule_ids: Sequence[str]) -> None:
    """Forget every entry of these rules."""
    await conn.execute(_DROP, {"rules": list(rule_ids)})


async def park_rules(conn: AsyncConnection, rule_ids: Sequence[str]) -> None:
    """These rules are disabled: none of their entries is due until they are enabled again,
    each keeping its place in its rule's line."""
    await conn.execute(_PARK, {"rules": list(rule_ids)})


async def recall_lines(conn: AsyncConnection, rule_ids: Sequence[str], due: datetime) -> int:
    """These rules are enabled again: the customers waiting in their lines are due at
    ``due``; how many."""
    result = await conn.execute(_RECALL, {"rules": list(rule_ids), "due": due})
    return int(result.rowcount)
