"""Moving stages with time: customers go quiet, then decline, then churn, without any event.

Each card records when time alone would next move its stage (``next_transition_at``, indexed);
a sweep takes the customers that are due, oldest first, rebuilds their cards and publishes a
``cause: time`` change for each stage that moved. It never scans customers who are not due.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring import store
from services.scoring.changes import change_payload
from services.scoring.consumer import PopulationCache, card_of, history_of
from services.scoring.settings import ScoringSettings
from services.scoring.state import CustomerState
from services.scoring.store import CustomerRow
from shared.changes import change_id_for
from shared.clock import Clock

_DUE = text(
    """
    SELECT customer_id, state, stage FROM scoring.customers
    WHERE next_transition_at <= :now
    ORDER BY next_transition_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)


async def sweep_once(
    engine: AsyncEngine,
    clock: Clock,
    population: PopulationCache,
    settings: ScoringSettings,
    limit: int,
) -> tuple[int, int]:
    """One round: returns (customers looked at, stages moved)."""
    now = clock.now()
    pop = population.current
    async with engine.begin() as conn:
        due = (await conn.execute(_DUE, {"now": now, "limit": limit})).all()
        rows: list[CustomerRow] = []
        outbox: list[tuple[str, bytes]] = []
        history = {}
        for row in due:
            state = CustomerState.from_json(row.state)
            card, card_json = card_of(state, clock, pop, settings)
            rows.append(CustomerRow.of(state, card, card_json))
            if card.stage != row.stage:
                history[row.customer_id] = history_of(state, card, pop, settings)
                outbox.append(
                    (
                        row.customer_id,
                        change_payload(
                            change_id=change_id_for(
                                "time", row.customer_id, card.stage, str(card.stage_since)
                            ),
                            customer_id=row.customer_id,
                            cause="time",
                            at=now,
                            card_json=card_json,
                            stage_change=(row.stage, card.stage),
                        ),
                    )
                )
        await store.save(conn, rows)
        await store.replace_history(conn, history)
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
            return seen, moved
