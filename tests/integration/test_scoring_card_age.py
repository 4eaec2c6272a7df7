"""A reader holds a customer's card as of the last change published for them: outreach's
replica, which rules read. Trailing windows, P(alive), RFM scores and the chance of an order
move with time alone, so a card that only grows old goes out again: the sweep publishes a
``cause: refresh`` change once the last card published for a customer is
``card_max_age_hours`` old. A refit that rewrites the row without publishing keeps that due
time; a rebuild (which announces nothing) leaves every card due at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
from services.scoring.shell.sweep import sweep_all
from services.scoring.store import customers as store
from shared.clock import FixedClock
from shared.db import make_engine
from shared.events import Envelope, EventType, OrderData, OrderStatus
from shared.settings import CommonSettings
from tests.support.databases import fresh_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
FITTERS = Fitters(
    bg_nbd=lambda _h: BgNbdParams(r=0.24, alpha=4.41, a=0.79, b=2.43),
    gamma_gamma=lambda *_a: GammaGammaParams(p=6.25, q=3.74, v=15.44),
)


def paid(customer_id: str, at: datetime, amount: str = "40.00") -> Envelope:
    return Envelope(
        event_id=str(uuid.uuid4()),
        event_type=EventType.ORDER_PAID,
        customer_id=customer_id,
        occurred_at=at,
        received_at=at,
        source="test",
        data=OrderData(
            order_id=f"{customer_id}-{uuid.uuid4().hex[:6]}",
            status=OrderStatus.PAID,
            amount=Decimal(amount),
            currency="USD",
        ),
    )


async def _taken(engine: AsyncEngine) -> list[dict[str, Any]]:
    """The changes in the outbox, oldest first; the outbox is emptied (as the relay does)."""
    async with engine.begin() as conn:
        rows = await conn.execute(text("DELETE FROM scoring.outbox RETURNING id, payload"))
        return [orjson.loads(p) for _, p in sorted(rows.tuples())]


async def test_a_card_that_only_grows_old_goes_out_again_within_a_day(
    settings: CommonSettings,
) -> None:
    scoring = ScoringSettings()  # card_max_age_hours: 24
    clock = FixedClock(T0)
    cache = PopulationCache(Population())
    # Twenty repeat buyers make a population to fit; "quiet" and "busy" are watched.
    events = []
    for i in range(20):
        events += [
            paid(f"c{i}", T0 - timedelta(days=90)),
            paid(f"c{i}", T0 - timedelta(days=30), f"{10 * (i + 1)}.00"),
        ]
    events += [paid("quiet", T0 - timedelta(days=40)), paid("quiet", T0 - timedelta(days=2))]
    events += [paid("busy", T0 - timedelta(days=40)), paid("busy", T0 - timedelta(days=2))]
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        applier = EventApplier(engine, scoring, clock, cache)
        await applier.apply([(e, e.to_json()) for e in events])
        # The first fit gives everyone a tier: every card moves and goes out, at T0 + 1 h.
        clock.set(T0 + timedelta(hours=1))
        await refit(engine, clock, cache, scoring, fitters=FITTERS)
        await _taken(engine)
        # A card is due again between half a day and a day after it went out (by customer).
        clock.set(T0 + timedelta(hours=13) - timedelta(minutes=1))
        early = await sweep_all(engine, clock, cache, scoring)
        early_published = await _taken(engine)
        # "busy" orders again at T0 + 20 h: their card went out then.
        clock.set(T0 + timedelta(hours=20))
        await applier.apply([(e, e.to_json()) for e in [paid("busy", clock.now())]])
        await _taken(engine)
        # A refit at T0 + 23 h rewrites every row and publishes only the cards it moves: the
        # others' day must not be put off (some are due already).
        clock.set(T0 + timedelta(hours=23))
        await refit(engine, clock, cache, scoring, fitters=FITTERS)
        refit_published = await _taken(engine)
        clock.set(T0 + timedelta(hours=25, minutes=1))
        swept = await sweep_all(engine, clock, cache, scoring)
        refreshed = await _taken(engine)
        again = await sweep_all(engine, clock, cache, scoring)
        again_published = await _taken(engine)
        # "busy"'s card, sent at T0 + 20 h, goes out again within a day of that.
        clock.set(T0 + timedelta(hours=44, minutes=1))
        busy_day = await sweep_all(engine, clock, cache, scoring)
        busy_published = await _taken(engine)
        await engine.dispose()

    assert (early.refreshed, early_published) == (0, [])
    # The refit sent the cards it moved (a tier cut point moved with "busy"'s order); every
    # other card that went out at T0 + 1 h goes out again by T0 + 25 h, "busy"'s not yet.
    moved_by_refit = {c["customer_id"] for c in refit_published}
    assert "quiet" not in moved_by_refit and "busy" not in moved_by_refit
    by_customer = {c["customer_id"]: c for c in refreshed}
    assert set(by_customer) == ({f"c{i}" for i in range(20)} | {"quiet"}) - moved_by_refit
    assert swept.refreshed == len(refreshed) and swept.moved == 0
    quiet = by_customer["quiet"]
    assert quiet["cause"] == "refresh" and quiet["event"] is None
    assert quiet["stage_change"] is None and quiet["membership_change"] is None
    # The card is as of the sweep: its days since the last order count the day that passed.
    assert datetime.fromisoformat(quiet["card"]["as_of"]) == T0 + timedelta(hours=25, minutes=1)
    # Sent once: the next sweep finds the cards a moment old.
    assert (again.refreshed, again_published) == (0, [])
    assert "busy" in {c["customer_id"] for c in busy_published}
    assert busy_day.refreshed == len(busy_published)


async def test_cards_a_rebuild_wrote_go_out_at_the_next_sweep_and_none_when_turned_off(
    settings: CommonSettings,
) -> None:
    clock = FixedClock(T0)
    cache = PopulationCache(Population())
    events = [paid("a", T0 - timedelta(days=3)), paid("b", T0 - timedelta(days=1))]
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        # Off: nothing goes out but what moves.
        off = ScoringSettings(card_max_age_hours=0)
        await EventApplier(engine, off, clock, cache).apply([(e, e.to_json()) for e in events])
        await _taken(engine)
        clock.set(T0 + timedelta(days=10))
        quiet_when_off = await sweep_all(engine, clock, cache, off)
        published_when_off = await _taken(engine)
        async with engine.begin() as conn:
            await store.empty(conn)
        # A rebuild applies without publishing: its cards are due at once.
        scoring = ScoringSettings()
        rebuilt = EventApplier(engine, scoring, clock, cache, publish=False)
        await rebuilt.apply([(e, e.to_json()) for e in events])
        nothing_yet = await _taken(engine)
        swept = await sweep_all(engine, clock, cache, scoring)
        refreshed = await _taken(engine)
        await engine.dispose()

    assert (quiet_when_off.refreshed, published_when_off) == (0, [])
    assert nothing_yet == []
    assert swept.refreshed == 2
    assert sorted(c["customer_id"] for c in refreshed) == ["a", "b"]
    assert {c["cause"] for c in refreshed} == {"refresh"}
