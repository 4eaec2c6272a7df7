"""Applying a batch of customer events: the shell around the pure state transition.

One transaction per batch: the inbox claims the event ids (a repeat is dropped here), the
touched customers' states are loaded and locked in one query, every new event is applied in
order and yields a change with the new card, and states, history, complaints, order facts and
outbox rows are written back in one statement each. Offsets are committed by the consumer
after this returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring.core.card import Scored, score
from services.scoring.core.changes import Outgoing, erasure_change, event_change
from services.scoring.core.complaints import complaints_of
from services.scoring.core.state import CustomerState, apply
from services.scoring.settings import ScoringSettings
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.state_cache import Held, StateCache
from services.scoring.store import complaints as complaint_store
from services.scoring.store import customers as store
from services.scoring.store import order_facts
from services.scoring.store.customers import CustomerRow, StoredHistory
from shared.clock import Clock
from shared.consumer import Message
from shared.events import Envelope, EventType, OrderData
from shared.logging import get_logger
from shared.settings import inbox_retention

log = get_logger(__name__)


class EventApplier:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: ScoringSettings,
        clock: Clock,
        population: PopulationCache,
        *,
        publish: bool = True,
        inbox_retention: timedelta = inbox_retention(),
    ) -> None:
        """``publish=False`` applies without writing changes (a rebuild re-derives state and
        must not announce the past again). ``inbox_retention``: how long an applied event's
        id is remembered (:func:`shared.settings.inbox_retention`)."""
        self._publish = publish
        self._inbox_retention = inbox_retention
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._population = population
        self._cache = StateCache(settings.state_cache_customers)

    async def handle(self, records: Sequence[Message]) -> list[tuple[Message, Exception]]:
        """The consumer's handler: decode, apply, and hand back what cannot be decoded."""
        events: list[tuple[Envelope, bytes]] = []
        rejected: list[tuple[Message, Exception]] = []
        for record in records:
            try:
                envelope = Envelope.from_json(record.value)
                if record.key is not None and record.key.decode() != envelope.customer_id:
                    raise ValueError("record key does not match the event's customer_id")
            except (ValidationError, ValueError, UnicodeDecodeError) as exc:
                rejected.append((record, exc))
                continue
            events.append((envelope, record.value))
        if events:
            await self.apply(events)
        return rejected

    async def apply(self, events: Sequence[tuple[Envelope, bytes]]) -> int:
        """Apply new events durably; returns how many were new."""
        settings = self._settings
        population = self._population.current
        async with self._engine.begin() as conn:
            new_ids = await store.claim(
                conn,
                [e.event_id for e, _ in events],
                [e.customer_id for e, _ in events],
                [e.received_at for e, _ in events],
                self._inbox_retention,
            )
            fresh: list[tuple[Envelope, bytes]] = []
            for envelope, raw in events:
                if envelope.event_id in new_ids:
                    new_ids.discard(envelope.event_id)  # a repeat inside the batch, too
                    fresh.append((envelope, raw))
            if not fresh:
                return 0

            touched = {e.customer_id for e, _ in fresh}
            held = self._cache.take(touched)
            stored = await store.lock(conn, touched, {c: h.version for c, h in held.items()})
            erased_at = await store.erased(conn, touched)
            states: dict[str, CustomerState] = {}
            history: dict[str, StoredHistory] = {}
            for cid, found in stored.items():
                if found.held:
                    states[cid], history[cid] = held[cid].state, held[cid].history
                else:
                    assert found.state is not None and found.history is not None
                    states[cid], history[cid] = found.state, found.history
            stages = {cid: found.stage for cid, found in stored.items()}
            members = {cid: found.member_tier for cid, found in stored.items()}
            cards: dict[str, Scored] = {}
            outbox: list[Outgoing] = []
            dropped: list[str] = []
            # Per customer, the orders an event of this batch changed.
            ordered: dict[str, set[str]] = {}
            for envelope, raw in fresh:
                cid = envelope.customer_id
                erased = erased_at.get(cid)
                if erased is not None and envelope.occurred_at <= erased:
                    # From before the customer's erasure (a replay, a late retry): it must not
                    # bring them back.
                    dropped.append(envelope.event_id)
                    continue
                if envelope.event_type is EventType.CUSTOMER_ERASED:
                    await self._forget(conn, envelope, raw, states, cards, outbox)
                    erased_at[cid] = envelope.occurred_at
                    stages.pop(cid, None)
                    members.pop(cid, None)
                    # Their stored history now stands under an anonymous label.
                    history.pop(cid, None)
                    ordered.pop(cid, None)
                    dropped.append(envelope.event_id)
                    continue
                state, changed = apply(states.get(cid), envelope, settings)
                states[cid] = state
                if changed and isinstance(envelope.data, OrderData):
                    ordered.setdefault(cid, set()).add(envelope.data.order_id)
                card = score(state, self._clock.now(), population, settings)
                # A complaint is held to the tier on the first card that knows it.
                state.hold_complaints(card.tier)
                cards[cid] = card
                outbox.append(
                    event_change(envelope, raw, card, stages.get(cid, "prospect"), members.get(cid))
                )
                stages[cid] = card.stage
                members[cid] = card.member_tier

            await store.drop_inbox(conn, dropped)
            versions = await store.save(
                conn, [CustomerRow.of(states[cid], card) for cid, card in cards.items()]
            )
            now_stored = await store.sync_history(
                conn, ((cid, history.get(cid, []), card.history) for cid, card in cards.items())
            )
            await complaint_store.sync(
                conn,
                (
                    (cid, complaint)
                    for cid, card in cards.items()
                    for complaint in complaints_of(states[cid], None, card.tier, settings)
                ),
            )
            await order_facts.sync(
                conn, ((states[cid], ids) for cid, ids in ordered.items() if cid in cards)
            )
            if self._publish:
                await store.add_outbox(conn, outbox)
        self._cache.put(
            (cid, Held(version, states[cid], now_stored[cid])) for cid, version in versions.items()
        )
        return len(fresh)

    async def prune_inbox(self) -> int:
        """Forget the ids of events received longer ago than the inbox retention (ingest
        forgets them a day later); returns how many."""
        async with self._engine.begin() as conn:
            removed = await store.prune_inbox(conn, self._inbox_retention)
        if removed:
            log.info("inbox_pruned", removed=removed)
        return removed

    async def _forget(
        self,
        conn: AsyncConnection,
        envelope: Envelope,
        raw: bytes,
        states: dict[str, CustomerState],
        cards: dict[str, Scored],
        outbox: list[Outgoing],
    ) -> None:
        """Erase a customer inside the batch's transaction: what this batch computed for them
        is discarded, their rows go, and an erasure change (an empty card) tells outreach."""
        cid = envelope.customer_id
        state = states.pop(cid, None)
        cards.pop(cid, None)
        outbox[:] = [(c, payload) for c, payload in outbox if c != cid]
        spend, orders = Decimal(0), 0
        if state is not None:
            card = score(state, self._clock.now(), self._population.current, self._settings)
            spend, orders = card.lifetime_spend, card.orders
        await store.forget(
            conn,
            store.Erasure(cid, envelope.event_id, envelope.occurred_at, spend, orders),
        )
        outbox.append(erasure_change(envelope, raw, self._clock.now()))
        log.info("customer_erased", event_id=envelope.event_id)
