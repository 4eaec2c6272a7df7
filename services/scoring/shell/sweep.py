"""Moving stages with time: customers go quiet, then decline, then churn, without any event;
and membership tiers fall as purchases leave the last 365 days.

Each customer row records when time alone would next move its stage or may lower its
membership tier (the ``next_transition_at`` column, indexed); a sweep takes the customers that
are due, oldest first, rebuilds their cards and publishes a ``cause: time`` change for each
stage or tier that moved. It never scans customers who are not due.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.core.card import score
from services.scoring.core.changes import Outgoing, time_change
from services.scoring.settings import ScoringSettings
from services.scoring.shell.population import PopulationCache
from services.scoring.store import customers as store
from services.scoring.store.customers import CustomerRow
from shared.clock import Clock
from shared.heap import release_freed


async def sweep_once(
    engine: AsyncEngine,
    clock: Clock,
    population: PopulationCache,
    settings: ScoringSettings,
    limit: int,
) -> tuple[int, int]:
    """One round: returns (customers looked at, stages or tiers moved)."""
    now = clock.now()
    pop = population.current
    async with engine.begin() as conn:
        due = await store.lock_due(conn, now, limit)
        rows: list[CustomerRow] = []
        outbox: list[Outgoing] = []
        history = []
        for cid, found in due.items():
            assert found.state is not None and found.history is not None  # none held
            card = score(found.state, clock.now(), pop, settings)
            published = found.published
            if card.stage != found.stage:
                history.append((cid, found.history, card.history))
            if card.stage != found.stage or card.member_tier != found.member_tier:
                outbox.append(time_change(card, found.stage, now, found.member_tier))
                published = card.moving
            rows.append(CustomerRow.of(found.state, card, published))
        await store.save(conn, rows)
        await store.sync_history(conn, history)
        await store.add_outbox(conn, outbox)
    return len(due), len(outbox)


async def sweep_all(
    engine: AsyncEngine,
    clock: Clock,
    population: PopulationCache,
    settings: ScoringSettings,
) -> tuple[int, int]:
    """Sweep until no customer is due; returns (looked at, moved)."""
    seen = moved = 0
    while True:
        n, m = await sweep_once(engine, clock, population, settings, settings.sweep_batch)
        seen, moved = seen + n, moved + m
        if n < settings.sweep_batch:
            if seen > settings.sweep_batch:
                release_freed()  # a long sweep's garbage (not a round's: most find few)
            return seen, moved
