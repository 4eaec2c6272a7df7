"""The refit's first pass reads each customer's figures from the purchases' ledger, without
building their card: the figures, and the population fitted on them, are exactly those of the
pass that scored every customer's whole card, on the golden cards' histories (orders through
every status, late and out-of-order events, merges, a heavy buyer, the CDNOW sample) stored
in a real database, at instants inside and after those histories, in UTC and not.
"""

from __future__ import annotations

from array import array
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.core import predict, rfm, tiers
from services.scoring.core.card import Population, purchase_days, score
from services.scoring.core.merge import fold
from services.scoring.core.state import DAY_US, CustomerState, apply, to_micros
from services.scoring.settings import ScoringSettings
from services.scoring.shell.refit import Figures, fit_figures, gather_figures
from services.scoring.store import customers as store
from services.scoring.store.customers import CustomerRow
from shared.db import make_engine
from shared.events import MergeData
from shared.settings import CommonSettings
from tests.support.databases import fresh_settings
from tests.support.golden_cards import (
    BARE_POPULATION,
    BARE_SETTINGS,
    FULL_POPULATION,
    FULL_SETTINGS,
    histories,
)

pytestmark = pytest.mark.integration

EPOCH = date(1970, 1, 1)

WHEN = (
    datetime(2024, 9, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5))),  # a day ahead in UTC
    datetime(2025, 3, 15, 6, 0, tzinfo=UTC),
    datetime(2031, 1, 1, tzinfo=UTC),  # after every event
)


def golden_states() -> list[CustomerState]:
    """Each golden history's customers as its last event left them."""
    retention = FULL_SETTINGS.visit_retention_days * DAY_US
    states: dict[str, CustomerState] = {}
    for _, steps in histories():
        for step in steps:
            envelope = step.envelope
            cid = envelope.customer_id
            if isinstance(envelope.data, MergeData):
                merged = [states.pop(m) for m in envelope.data.merged_ids if m in states]
                states[cid] = fold(cid, states.get(cid), merged, retention)
            else:
                states[cid], _ = apply(states.get(cid), envelope, FULL_SETTINGS)
    return list(states.values())


async def figures_from_cards(
    engine: AsyncEngine, as_of: datetime, current: Population, settings: ScoringSettings
) -> Figures:
    """The first pass as it was: each customer's whole card, and their purchases walked."""
    figures = Figures()
    async with engine.connect() as conn:
        async for state in store.all_states(conn, 100):
            figures.customers += 1
            card = score(state, as_of, current, settings)
            purchases = state.purchases(to_micros(as_of))
            if not purchases:
                continue
            stats = predict.daily_stats(
                ((EPOCH + timedelta(days=p.at // DAY_US), float(p.net)) for p in purchases),
                as_of.date(),
            )
            days = purchase_days(state, as_of)
            figures.add_buyer(
                card.value_score,
                card.purchase_interval_days,
                stats,
                (as_of.date() - days[-1]).days,
                card.orders,
                float(card.lifetime_spend),
            )
    return figures


def population_as_it_was(
    f: Figures, as_of: datetime, current: Population, settings: ScoringSettings
) -> Population:
    """The fit as it was: every array kept to the end, and the tiers' cut points last."""
    rfm_bp = rfm.breakpoints_from(f.recency, f.frequency, f.monetary) if f.recency else None
    x = np.asarray(f.xs, dtype=np.int64)
    bg = gg = None
    if len(f.xs) >= 10 and int(x.sum()) > 0:
        bg = predict.fit_bgnbd(
            predict.compress(
                x, np.asarray(f.txs, dtype=np.float64), np.asarray(f.ts, dtype=np.float64)
            )
        )
        repeat = (x > 0) & (np.asarray(f.spends) > 0)
        if int(repeat.sum()) >= 10:
            gg = predict.fit_gamma_gamma(x[repeat], np.asarray(f.spends)[repeat])
    median_gap_days = float(np.median(np.asarray(f.gaps))) if f.gaps else None
    composites = array("d", f.composites)
    was = current.median_gap(settings)
    will = median_gap_days or settings.default_median_gap_days
    for i in f.borrowed:
        composites[i] = tiers.with_rhythm(composites[i], was, will, settings)
    clvs = (
        predict.clv_many(
            bg,
            gg,
            x,
            np.asarray(f.txs, dtype=np.float64),
            np.asarray(f.ts, dtype=np.float64),
            np.asarray(f.spends),
        )
        if bg is not None and gg is not None
        else np.zeros(len(f.xs))
    )
    tier_bp = (
        tiers.breakpoints_from(composites, array("d", clvs.tolist()), settings)
        if composites
        else None
    )
    return Population(
        rfm=rfm_bp, tiers=tier_bp, bg=bg, gg=gg, median_gap_days=median_gap_days, fitted_at=as_of
    )


async def test_the_ledger_pass_fits_the_population_the_card_pass_fitted(
    settings: CommonSettings,
) -> None:
    states = golden_states()
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        try:
            async with engine.begin() as conn:
                now = WHEN[-1]
                await store.save(
                    conn,
                    [
                        CustomerRow.of(s, score(s, now, FULL_POPULATION, FULL_SETTINGS), None)
                        for s in states
                    ],
                )
            checked = 0
            for current, scoring in (
                (FULL_POPULATION, FULL_SETTINGS),
                (BARE_POPULATION, BARE_SETTINGS),
            ):
                for as_of in WHEN:
                    ours = await gather_figures(engine, as_of, current, scoring)
                    theirs = await figures_from_cards(engine, as_of, current, scoring)
                    assert ours == theirs, (as_of, current)
                    assert ours.customers == len(states)
                    assert len(ours.xs) > 100 and len(ours.borrowed) > 0
                    was = population_as_it_was(theirs, as_of, current, scoring)
                    population, _, kept = fit_figures(ours, as_of, current, scoring)
                    assert kept == []
                    assert population.model_dump_json() == was.model_dump_json()
                    assert population.bg is not None and population.tiers is not None
                    checked += 1
            assert checked == 6
        finally:
            await engine.dispose()
