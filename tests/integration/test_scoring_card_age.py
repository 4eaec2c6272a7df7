"""A reader holds a customer's card as of the last change published for them: outreach's
replica, which rules read. Trailing windows, P(alive), RFM scores and the chances of an order
move with time alone, so a refit (which computes every card) sends a ``cause: refresh``
change for each card whose figures time moved since the last one published, and
for no other; a rebuild, which announces nothing, leaves every card to go out at the next
refit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.core.card import Population
from services.scoring.core.predict import BgNbdParams, Fitters, GammaGammaParams
from services.scoring.settings import ScoringSettings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.refit import refit
from services.scoring.store import customers as store
from shared.clock import FixedClock
from shared.db import make_engine
from shared.settings import CommonSettings
from tests.support.databases import fresh_settings
from tests.support.events import paid_order

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
FITTERS = Fitters(
    bg_nbd=lambda _h: BgNbdParams(r=0.24, alpha=4.41, a=0.79, b=2.43),
    gamma_gamma=lambda *_a: GammaGammaParams(p=6.25, q=3.74, v=15.44),
)


async def _taken(engine: AsyncEngine) -> list[dict[str, Any]]:
    """The changes in the outbox, oldest first; the outbox is emptied (as the relay does)."""
    async with engine.begin() as conn:
        rows = await conn.execute(text("DELETE FROM scoring.outbox RETURNING id, payload"))
        return [orjson.loads(p) for _, p in sorted(rows.tuples())]


async def test_a_refit_sends_again_the_cards_time_moved_and_no_other(
    settings: CommonSettings,
) -> None:
    scoring = ScoringSettings()
    clock = FixedClock(T0)
    cache = PopulationCache(Population())
    # Twenty repeat buyers make a population to fit; "quiet" bought two days ago.
    events = []
    for i in range(20):
        events += [
            paid_order(f"c{i}", T0 - timedelta(days=90)),
            paid_order(f"c{i}", T0 - timedelta(days=30), f"{10 * (i + 1)}.00"),
        ]
    events += [
        paid_order("quiet", T0 - timedelta(days=40)),
        paid_order("quiet", T0 - timedelta(days=2)),
    ]
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        await EventApplier(engine, scoring, clock, cache).apply([(e, e.to_json()) for e in events])
        await _taken(engine)
        # The first fit gives everyone a tier and a forecast: every card goes out.
        clock.set(T0 + timedelta(hours=1))
        first = await refit(engine, clock, cache, scoring, fitters=FITTERS)
        first_published = await _taken(engine)
        # An hour on, nothing a rule reads has moved: nothing goes out.
        clock.set(T0 + timedelta(hours=2))
        hour_later = await refit(engine, clock, cache, scoring, fitters=FITTERS)
        hour_later_published = await _taken(engine)
        # Four weeks on, "quiet"'s order has left the 30-day window: no event, no stage move,
        # and the card outreach holds would still say they spent in the last 30 days.
        clock.set(T0 + timedelta(days=29))
        month_later = await refit(engine, clock, cache, scoring, fitters=FITTERS)
        month_later_published = await _taken(engine)
        clock.set(T0 + timedelta(days=29, hours=1))
        again = await refit(engine, clock, cache, scoring, fitters=FITTERS)
        again_published = await _taken(engine)
        await engine.dispose()

    assert first.changed == len(first_published) == 21
    assert (hour_later.changed, hour_later_published) == (0, [])
    by_customer = {c["customer_id"]: c for c in month_later_published}
    assert month_later.changed == len(month_later_published)
    quiet = by_customer["quiet"]
    assert quiet["cause"] == "refresh" and quiet["event"] is None
    assert quiet["stage_change"] is None and quiet["membership_change"] is None
    assert quiet["card"]["value"]["spend_30d"] == "0.00"
    assert quiet["card"]["value"]["spend_90d"] == "80.00"
    assert datetime.fromisoformat(quiet["card"]["as_of"]) == T0 + timedelta(days=29)
    # Sent once: an hour on, the cards published say what the new ones say.
    assert (again.changed, again_published) == (0, [])


async def test_the_cards_a_rebuild_wrote_go_out_at_the_next_refit(
    settings: CommonSettings,
) -> None:
    scoring = ScoringSettings()
    clock = FixedClock(T0)
    cache = PopulationCache(Population())
    events = [paid_order(f"c{i}", T0 - timedelta(days=i + 1)) for i in range(12)]
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        await EventApplier(engine, scoring, clock, cache).apply([(e, e.to_json()) for e in events])
        await refit(engine, clock, cache, scoring, fitters=FITTERS)
        await _taken(engine)
        # A rebuild applies without publishing: outreach holds none of its cards yet.
        async with engine.begin() as conn:
            await store.empty(conn)
        rebuilt = EventApplier(engine, scoring, clock, cache, publish=False)
        await rebuilt.apply([(e, e.to_json()) for e in events])
        nothing_yet = await _taken(engine)
        report = await refit(engine, clock, cache, scoring, fitters=FITTERS)
        published = await _taken(engine)
        await engine.dispose()

    assert nothing_yet == []
    assert report.changed == 12
    assert sorted(c["customer_id"] for c in published) == sorted(f"c{i}" for i in range(12))
    assert {c["cause"] for c in published} == {"refresh"}
