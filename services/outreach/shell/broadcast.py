"""Launching a broadcast: its rule fired for every customer of the card replica in its
audience, decided under the contact policy like any other action, a few hundred customers
per transaction. The launch id is the actions' occurrence, so launching again with the same
id decides nobody twice and finishes a launch cut short.

A launch may carry content (:mod:`services.outreach.core.launch`): the new items it announces.
Each card is then judged, and each message rendered, with the content beside the card, so the
rule's conditions can target by preference against the launch's categories and its template
can list the launched items that match each customer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.core.conditions import LAUNCH_KEY
from services.outreach.core.launch import LaunchContent, launch_view
from services.outreach.core.preview import audience
from services.outreach.core.rules import Match, Rule
from services.outreach.settings import OutreachSettings
from services.outreach.shell.current import Current
from services.outreach.shell.decide import decide_and_record
from services.outreach.store.replica import replica_chunks
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
) -> tuple[int, Counter[str]]:
    """Fire ``rule`` (a broadcast) for its audience now: (audience size, decided actions by
    status). ``decided`` is called after each transaction that recorded actions; ``content``
    is what the launch announces, if anything."""
    holds = audience(rule)
    view = launch_view(content, clock.now()) if content is not None else None

    def with_launch(card: Any) -> Any:
        return card if view is None else {**card, LAUNCH_KEY: view}

    size = 0
    statuses: Counter[str] = Counter()
    batch: dict[str, Any] = {}

    async def decide(cards: dict[str, Any]) -> list[str]:
        matches = [Match(rule, customer_id, launch_id) for customer_id in cards]
        async with engine.begin() as conn:
            recorded = await decide_and_record(
                conn,
                matches,
                cards,
                policy=current.policy,
                settings=settings,
                now=clock.now(),
                rules=current.rules,
            )
        if recorded:
            decided()
        return [r.status for r in recorded]

    async with engine.connect() as conn:
        async for rows in replica_chunks(conn):
            seen = ((r.customer_id, with_launch(r.card)) for r in rows)
            batch.update((cid, card) for cid, card in seen if holds(card))
            if len(batch) >= BROADCAST_CHUNK:
                size += len(batch)
                statuses.update(await decide(batch))
                batch = {}
    if batch:
        size += len(batch)
        statuses.update(await decide(batch))
    return size, statuses
