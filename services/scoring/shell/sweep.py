"""Moving stages with time: customers go quiet, then decline, then churn, without any event;
and membership tiers fall as purchases leave the last 365 days.

Each customer row records when time alone would next move its stage or may lower its
membership tier, or when the last card published for them nears ``card_max_age_hours`` of
age (:func:`~services.scoring.core.changes.republish_at`): the ``next_transition_at`` column,
indexed. A sweep takes the customers that are due, oldest first, rebuilds their cards and
publishes a ``cause: time`` change for each stage or tier that moved, and a ``cause:
refresh`` change for each card that is due to go out again though nothing moved (a reader's
copy would otherwise keep trailing windows and P(alive) as of the customer's last change).
It never scans customers who are not due.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.core.card import score
from services.scoring.core.changes import Outgoing, refresh_change, republish_at, time_change
from services.scoring.settings import ScoringSettings
from services.scoring.shell.population import PopulationCache
from services.scoring.store import customers as store
from services.scoring.store.customers import CustomerRow
from shared.clock import Clock
from shared.heap import release_freed


@dataclass(frozen=True, slots=True)
class Swept:
    """What a sweep did: customers looked at, stages or membership tiers moved, and cards sent
    again because the last one published had grown old."""

    due: int = 0
    moved: int = 0
    refreshed: int = 0

    def __add__(self, other: Swept) -> Swept:
        return Swept(
            self.due + other.due, self.moved + other.moved, self.refreshed + other.refreshed
        )


async def sweep_once(
    engine: AsyncEngine,
    clock: Clock,
    population: PopulationCache,
    settings: ScoringSettings,
    limit: int,
) -> Swept:
    """One round over up to ``limit`` due customers."""
    now = clock.now()
    pop = population.current
    moved = refreshed = 0
    async with engine.begin() as conn:
        due = await store.lock_due(conn, now, limit)
        rows: list[CustomerRow] = []
        outbox: list[Outgoing] = []
        history = []
        for cid, found in due.items():
            assert found.state is not None and found.history is not None  # none held
            card = score(found.state, clock.now(), pop, settings)
            published = found.published_at
            if card.stage != found.stage:
                history.append((cid, found.history, card.history))
            if card.stage != found.stage or card.member_tier != found.member_tier:
                outbox.append(time_change(card, found.stage, now, found.member_tier))
                published, moved = card.as_of, moved + 1
            else:
                again = republish_at(card, published, settings)
                if again is not None and again <= now:
                    outbox.append(refresh_change(card, found.stage, found.member_tier))
                    published, refreshed = card.as_of, refreshed + 1
            rows.append(
                CustomerRow.of(
                    found.state, card, published, republish_at(card, published, settings)
                )
            )
        await store.save(conn, rows)
        await store.sync_history(conn, history)
        await store.add_outbox(conn, outbox)
    return Swept(len(due), moved, refreshed)


async def sweep_all(
    engine: AsyncEngine,
    clock: Clock,
    population: PopulationCache,
    settings: ScoringSettings,
) -> Swept:
    """Sweep until no customer is due."""
    swept = Swept()
    while True:
        round_ = await sweep_once(engine, clock, population, settings, settings.sweep_batch)
        swept += round_
        if round_.due < settings.sweep_batch:
            if swept.due > settings.sweep_batch:
                release_freed()  # a long sweep's garbage (not a round's: most find few)
            return swept
