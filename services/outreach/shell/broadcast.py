"""Launching a broadcast: its rule fired for every customer of the card replica in its
audience, decided under the contact policy like any other action, a few hundred customers
per transaction. The launch id is the actions' occurrence, so launching again with the same
id decides nobody twice and finishes a launch cut short.

A rule with a daily limit gives the day's slots to the most valuable customers of the whole
audience: a first pass judges every one of them as its preview does
(:class:`~services.outreach.core.preview.Tally`) and keeps the day's slot holders, whose
actions are decided first; everyone after them finds the day spent and waits in the rule's
line for the launch (nothing recorded yet): the scheduler decides them at the start of the
shop's next days, the most valuable first, a day's slots at a time, each judged again against
the rule's conditions on their card then (one who no longer matches leaves the line), with
the launch's content as it was launched (kept in ``outreach.launches``).

A launch may carry content (:mod:`services.outreach.core.launch`): the new items it announces.
Each card is then judged, and each message rendered, with the content beside the card, so the
rule's conditions can target by preference against the launch's categories and its template
can list the launched items that match each customer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.core.conditions import LAUNCH_KEY
from services.outreach.core.launch import LaunchContent, launch_view
from services.outreach.core.policy import Policy
from services.outreach.core.preview import Tally, audience, history_since
from services.outreach.core.rules import Match, Rule, waits_in_line
from services.outreach.core.schedules import day_of
from services.outreach.settings import OutreachSettings
from services.outreach.shell.current import Current
from services.outreach.shell.decide import decide_and_record, line_up
from services.outreach.shell.preview import judge_chunk
from services.outreach.store import launches, schedule
from services.outreach.store.ledger import spent_on
from services.outreach.store.replica import cards_of, replica_chunks
from shared import audit
from shared.clock import Clock

# Customers decided per transaction in a broadcast: long enough to amortise the round trips,
# short enough that the customers' locks are never held for long.
BROADCAST_CHUNK = 500


async def launch(
    engine: AsyncEngine,
    rule: Rule,
    launch_id: str,
    *,
    current: Current,
    settings: OutreachSettings,
    clock: Clock,
    decided: Callable[[], None],
    content: LaunchContent | None = None,
    actor: audit.Actor | None = None,
) -> tuple[int, Counter[str]]:
    """Fire ``rule`` (a broadcast) for its audience now: (audience size, decided actions by
    status, with ``waiting`` for the customers its spent daily limit left in its line).
    ``decided`` is called after each transaction that recorded actions; ``content`` is what
    the launch announces, if anything. A new launch is kept (with its content) and, with
    ``actor``, written to the audit log before anyone is decided; launching again with the
    same id is neither."""
    holds = audience(rule)
    view = launch_view(content, clock.now()) if content is not None else None
    lined = waits_in_line(rule)
    async with engine.begin() as conn:
        who = actor.name if actor is not None else None
        new = await launches.record(conn, rule.id, launch_id, view, clock.now(), who)
        if new and actor is not None:
            await audit.record(
                conn,
                actor=actor,
                service="outreach",
                action="broadcast.launched",
                subject=rule.id,
                after={"launch_id": launch_id, "content": view},
            )

    def with_launch(card: Any) -> Any:
        return card if view is None else {**card, LAUNCH_KEY: view}

    size = 0
    statuses: Counter[str] = Counter()
    batch: dict[str, Any] = {}

    async def decide(cards: dict[str, Any]) -> list[str]:
        matches = [Match(rule, customer_id, launch_id) for customer_id in cards]
        passed_over: list[Match] = []
        now = clock.now()
        async with engine.begin() as conn:
            recorded = await decide_and_record(
                conn,
                matches,
                cards,
                policy=current.policy,
                settings=settings,
                now=now,
                rules=current.rules,
                passed_over=passed_over if lined else None,
            )
            if lined:
                await line_up(conn, passed_over, current.policy, now)
                # Launched again on a later day: those decided now leave the line.
                await schedule.leave_line(conn, [(rule.id, r.customer_id) for r in recorded])
        if recorded:
            decided()
        return [r.status for r in recorded] + ["waiting"] * len(passed_over)

    first: list[str] = []
    if rule.limits.max_per_day is not None:
        first = await _slot_holders(engine, rule, current.policy, clock.now(), holds, with_launch)
        for k in range(0, len(first), BROADCAST_CHUNK):
            async with engine.connect() as conn:
                found = await cards_of(conn, first[k : k + BROADCAST_CHUNK])
            cards = {cid: with_launch(card) for cid, card in found.items()}
            batch = {cid: card for cid, card in cards.items() if holds(card)}
            size += len(batch)
            statuses.update(await decide(batch))
        batch = {}
    done = set(first)
    async with engine.connect() as conn:
        async for rows in replica_chunks(conn, size=BROADCAST_CHUNK):
            seen = ((r.customer_id, with_launch(r.card)) for r in rows if r.customer_id not in done)
            batch.update((cid, card) for cid, card in seen if holds(card))
            if len(batch) >= BROADCAST_CHUNK:
                size += len(batch)
                statuses.update(await decide(batch))
                batch = {}
    if batch:
        size += len(batch)
        statuses.update(await decide(batch))
    return size, statuses


async def _slot_holders(
    engine: AsyncEngine,
    rule: Rule,
    policy: Policy,
    now: datetime,
    holds: Callable[[Any], bool],
    with_launch: Callable[[Any], Any],
) -> list[str]:
    """Who of the audience would hold today's slots of ``rule`` (it has a daily limit), the
    most valuable first: the audience judged as its preview judges it."""
    today = day_of(now, policy.schedule_context.default_timezone)
    since = history_since(rule, policy, now)
    async with engine.connect() as conn:
        spent = (await spent_on(conn, [rule.id], today, lock=False)).get(rule.id, 0)
        tally = Tally(rule, policy, now, spent_today=spent)
        async for rows in replica_chunks(conn, size=BROADCAST_CHUNK):
            seen = ((r.customer_id, with_launch(r.card)) for r in rows)
            matched = [(cid, card) for cid, card in seen if holds(card)]
            if matched:
                await judge_chunk(conn, tally, matched, since)
    return tally.slot_holders()
