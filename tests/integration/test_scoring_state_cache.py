"""The consumer keeps the facts it wrote in memory; a row someone else wrote since is read
again, so the cards never depend on what an instance happens to remember."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.scoring.settings import ScoringSettings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.sweep import sweep_all
from shared.clock import SystemClock
from shared.db import make_engine
from shared.settings import CommonSettings
from tests.support.databases import fresh_settings
from tests.support.events import random_history
from tests.support.pipeline import scoring_states

pytestmark = pytest.mark.integration


async def test_instances_taking_turns_on_the_same_customers_equal_one(
    settings: CommonSettings,
) -> None:
    # Two consumers of one database apply alternate batches of the same customers' events, as
    # happens when partitions move back and forth; each holds facts the other has since
    # overwritten. A sweep rewrites rows in between too. The result must be what one
    # consumer applying everything gives.
    events = random_history(40, seed=11)
    batches = [events[i : i + 25] for i in range(0, len(events), 25)]
    assert len(batches) > 4
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        population = PopulationCache()
        first, second = (
            EventApplier(engine, ScoringSettings(), SystemClock(), population) for _ in range(2)
        )
        for n, batch in enumerate(batches):
            await (first if n % 2 == 0 else second).apply([(e, e.to_json()) for e in batch])
            if n % 3 == 2:
                await sweep_all(engine, SystemClock(), population, ScoringSettings())
        async with engine.connect() as conn:
            # Every write moved the row to a version nobody held before.
            versions = (await conn.execute(text("SELECT version FROM scoring.customers"))).all()
        taking_turns = await scoring_states(engine)
        await engine.dispose()
    assert len(versions) == 40 and len({v for (v,) in versions}) == 40

    async with fresh_settings(settings, topics=False) as clean:
        engine = make_engine(clean, pool_size=2)
        alone = EventApplier(
            engine,
            ScoringSettings(state_cache_customers=0),
            SystemClock(),
            PopulationCache(),
        )
        await alone.apply([(e, e.to_json()) for e in events])
        replayed = await scoring_states(engine)
        await engine.dispose()
    assert taking_turns == replayed


async def test_a_failed_batch_leaves_nothing_half_applied_in_memory(
    settings: CommonSettings,
) -> None:
    events = random_history(5, seed=3)
    third = len(events) // 3
    head, lost, rest = events[:third], events[third : 2 * third], events[2 * third :]
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        applier = EventApplier(engine, ScoringSettings(), SystemClock(), PopulationCache())
        await applier.apply([(e, e.to_json()) for e in head])
        # The batch's transaction breaks at its last write, after the states were updated in
        # memory and saved; its events are never applied (as if they had gone to the DLQ).
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE scoring.outbox RENAME TO outbox_away"))
        with pytest.raises(Exception, match="outbox"):
            await applier.apply([(e, e.to_json()) for e in lost])
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE scoring.outbox_away RENAME TO outbox"))
        await applier.apply([(e, e.to_json()) for e in rest])
        applied = await scoring_states(engine)
        await engine.dispose()

    async with fresh_settings(settings, topics=False) as clean:
        engine = make_engine(clean, pool_size=2)
        alone = EventApplier(engine, ScoringSettings(), SystemClock(), PopulationCache())
        await alone.apply([(e, e.to_json()) for e in head + rest])
        replayed = await scoring_states(engine)
        await engine.dispose()
    assert applied == replayed


async def test_the_consumer_keeps_no_more_customers_than_its_memory_bound(
    settings: CommonSettings,
) -> None:
    # TEND_SCORING_STATE_CACHE_MB bounds the consumer's memory whatever the count allows: 1 MiB
    # holds a few hundred customers of a few orders, not all of 600.
    events = random_history(600, seed=5)
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        bounded = ScoringSettings(state_cache_customers=100_000, state_cache_mb=1)
        applier = EventApplier(engine, bounded, SystemClock(), PopulationCache())
        await applier.apply([(e, e.to_json()) for e in events])
        await engine.dispose()
    assert 0 < len(applier.cache) < 600
    assert applier.cache.bytes <= 2**20
