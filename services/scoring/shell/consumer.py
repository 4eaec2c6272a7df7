"""Applying a batch of customer events: the shell around the pure state transition.

One transaction per batch: the inbox claims the event ids (a repeat is dropped here), the
touched customers' states are loaded and locked in one query, every new event is applied in
order and yields a change with the new card, and states, history, complaints, order facts and
outbox rows are written back in one statement each. Offsets are committed by the consumer
after this returns.

Merged customers (:mod:`services.scoring.shell.identities`): the batch first registers its
customers' ids, which waits for a merge of any of them in flight; an event under a merged id
is then forwarded to the survivor through the ``forwards`` outbox (the events topic), and a
``customer.merged`` folds the merged customers into the survivor and yields one change for
the survivor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from decimal import Decimal

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.scoring.core.card import Scored, score
from services.scoring.core.changes import Outgoing, erasure_change, event_change
from services.scoring.core.complaints import complaints_of
from services.scoring.core.identities import identifiers_of
from services.scoring.core.merge import fold
from services.scoring.core.state import DAY_US, CustomerState, apply
from services.scoring.settings import ScoringSettings
from services.scoring.shell.identities import BatchIdentities
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.state_cache import Held, StateCache
from services.scoring.store import complaints as complaint_store
from services.scoring.store import customers as store
from services.scoring.store import identities as identity_store
from services.scoring.store import order_facts
from services.scoring.store.customers import CustomerRow, StoredHistory
from shared.clock import Clock
from shared.consumer import Message
from shared.events import Envelope, EventType, MergeData, OrderData
from shared.logging import get_logger
from shared.settings import inbox_retention

log = get_logger(__name__)

_MERGE_MARK = b'"customer.merged"'


def customers_touched(record: Message) -> Iterator[bytes | None]:
    """The customers handling ``record`` changes (the consumer's ``overlap_by``): the one it
    is keyed by, and for a merge the customers it folds into them."""
    yield record.key
    if record.value is not None and _MERGE_MARK in record.value:
        try:
            envelope = Envelope.from_json(record.value)
        except (ValidationError, ValueError):
            return  # the handler rejects it
        if isinstance(envelope.data, MergeData):
            for merged in envelope.data.merged_ids:
                yield merged.encode()


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
        phone_region: str = "US",
    ) -> None:
        """``publish=False`` applies without writing changes (a rebuild re-derives state and
        must not announce the past again; an event under a merged id is then applied to the
        survivor at once rather than forwarded). ``inbox_retention``: how long an applied
        event's id is remembered (:func:`shared.settings.inbox_retention`). ``phone_region``:
        where a phone without a country code is read (``TEND_PHONE_REGION``)."""
        self._publish = publish
        self._phone_region = phone_region
        self._inbox_retention = inbox_retention
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._population = population
        self._cache = StateCache(settings.state_cache_customers, settings.state_cache_mb * 2**20)

    @property
    def cache(self) -> StateCache:
        """The customers this consumer holds in memory since it last wrote them."""
        return self._cache

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
        events = _one_copy_each(events)
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

            named = {e.customer_id for e, _ in fresh} | {
                m for e, _ in fresh if isinstance(e.data, MergeData) for m in e.data.merged_ids
            }
            aliases = await identity_store.register(conn, named)
            # The survivors whose facts this batch needs: those a merge folds in, and in a
            # rebuild every survivor (events under its aliases are applied to it here).
            needed = {
                aliases[m]
                for e, _ in fresh
                if isinstance(e.data, MergeData)
                for m in e.data.merged_ids
                if m in aliases
            }
            if not self._publish:
                needed |= set(aliases.values())
            aliases |= await identity_store.register(conn, needed - named)
            ids = BatchIdentities(aliases)
            touched = (named | needed) - set(aliases)
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
                survivor = ids.survivor(cid)
                if survivor != cid:
                    if self._publish:
                        ids.forward(envelope, survivor)
                        continue
                    envelope = ids.retarget(envelope, survivor)
                    raw, cid = envelope.to_json(), survivor
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
                    ids.forget(cid)
                    dropped.append(envelope.event_id)
                    continue
                ids.learn(cid, identifiers_of(envelope, self._phone_region))
                if isinstance(envelope.data, MergeData):
                    merged: list[CustomerState] = []
                    for other in ids.merge(cid, envelope.data.merged_ids, envelope.event_id):
                        # Their facts are the survivor's now; their rows go (identities.merge).
                        if (folded := states.pop(other, None)) is not None:
                            merged.append(folded)
                            ordered.setdefault(cid, set()).update(folded.orders)
                        ordered.setdefault(cid, set()).update(ordered.pop(other, ()))
                        cards.pop(other, None)
                        history.pop(other, None)
                        stages.pop(other, None)
                        members.pop(other, None)
                    retention = settings.visit_retention_days * DAY_US
                    states[cid] = state = fold(cid, states.get(cid), merged, retention)
                else:
                    state, changed = apply(states.get(cid), envelope, settings)
                    states[cid] = state
                    if changed and isinstance(envelope.data, OrderData):
                        ordered.setdefault(cid, set()).add(envelope.data.order_id)
                card = score(state, self._clock.now(), population, settings)
                # A complaint is held to the tier on the first card that knows it, once tiers
                # are fitted (a history loaded before the first fit is held by that fit).
                if population.tiers is not None:
                    state.hold_complaints(card.tier)
                cards[cid] = card
                outbox.append(
                    event_change(envelope, raw, card, stages.get(cid, "prospect"), members.get(cid))
                )
                stages[cid] = card.stage
                members[cid] = card.member_tier

            for merge in ids.merges:
                await identity_store.merge(conn, merge.survivor, merge.merged, merge.event_id)
            await store.drop_inbox(conn, dropped)
            # Every card saved here goes out as this batch's change (none in a rebuild).
            versions = await store.save(
                conn,
                [
                    CustomerRow.of(states[cid], card, card.moving if self._publish else None)
                    for cid, card in cards.items()
                ],
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
            # Ids registered for events that were all dropped (an erased customer's) leave
            # no trace.
            await identity_store.unregister(
                conn, {e.customer_id for e, _ in fresh} - set(cards) - set(ids.aliases)
            )
            await identity_store.redirect(conn, ids.redirections())
            await identity_store.add_identifiers(conn, ids.identifiers())
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
        await identity_store.forget(conn, cid, envelope.event_id, envelope.occurred_at)
        outbox.append(erasure_change(envelope, raw, self._clock.now()))
        log.info("customer_erased", event_id=envelope.event_id)


def _one_copy_each(events: Sequence[tuple[Envelope, bytes]]) -> list[tuple[Envelope, bytes]]:
    """One copy of each event id, in batch order: where an event came both under a merged id
    and forwarded to the survivor (a redelivery beside its copy), the forwarded copy, which
    the inbox claims."""
    chosen: dict[str, int] = {}
    for n, (envelope, _) in enumerate(events):
        seen = chosen.get(envelope.event_id)
        if seen is None or (
            envelope.addressed_to is not None and events[seen][0].addressed_to is None
        ):
            chosen[envelope.event_id] = n
    return [events[n] for n in sorted(chosen.values())]
