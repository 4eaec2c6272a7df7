"""The consumer's memory of the customers it wrote."""

from __future__ import annotations

import gc
import tracemalloc
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.scoring.core.card import Population, score
from services.scoring.core.state import CustomerState, apply
from services.scoring.settings import ScoringSettings
from services.scoring.shell.state_cache import Held, StateCache, forget_held_states, held_bytes
from shared.events import Envelope, EventType, OrderData, OrderItem, OrderStatus

SETTINGS = ScoringSettings()


def held(version: int, cid: str) -> Held:
    return Held(version, CustomerState(cid), [])


def test_taken_entries_are_gone_until_put_back() -> None:
    cache = StateCache(10)
    a, b = held(1, "a"), held(2, "b")
    cache.put([("a", a), ("b", b)])
    assert cache.take(["a", "x"]) == {"a": a}
    assert cache.take(["a"]) == {}
    assert len(cache) == 1


def test_least_recently_written_go_first() -> None:
    cache = StateCache(2)
    cache.put([("a", held(1, "a")), ("b", held(2, "b"))])
    cache.put([("a", held(3, "a"))])
    cache.put([("c", held(4, "c"))])
    assert set(cache.take(["a", "b", "c"])) == {"a", "c"}


def test_capacity_zero_keeps_nothing() -> None:
    cache = StateCache(0)
    cache.put([("a", held(1, "a"))])
    assert len(cache) == 0


T0 = datetime(2026, 3, 1, tzinfo=UTC)


def customer(cid: str, orders: int, *, items: int = 0) -> CustomerState:
    """A customer with ``orders`` paid orders (each listing ``items`` items), a day apart,
    scored once as the consumer scores them (the card leaves its ledger and walk on them)."""
    state: CustomerState | None = None
    for n in range(orders):
        state, _ = apply(
            state,
            Envelope(
                event_id=f"{cid}-{n}",
                event_type=EventType.ORDER_PAID,
                customer_id=cid,
                occurred_at=T0 + timedelta(days=n),
                received_at=T0 + timedelta(days=n),
                source="test",
                data=OrderData(
                    order_id=f"{cid}-o{n}",
                    status=OrderStatus.PAID,
                    amount=Decimal("20.00") * max(items, 1),
                    currency="USD",
                    items=[
                        OrderItem(sku=f"s{k}", quantity=1, unit_price=Decimal("20.00"))
                        for k in range(items)
                    ],
                ),
            ),
            SETTINGS,
        )
    assert state is not None
    score(state, T0 + timedelta(days=orders), Population(), SETTINGS)
    return state


def test_a_cache_bounded_by_bytes_lets_the_least_recent_go_at_the_bound() -> None:
    light = [Held(n, customer(f"l{n}", 1), []) for n in range(4)]
    heavy = Held(9, customer("h", 30, items=3), [])
    assert held_bytes(heavy) > 3 * held_bytes(light[0])
    one = held_bytes(light[0])
    assert all(held_bytes(h) == one for h in light)
    bound = held_bytes(heavy) + 2 * one + 100
    cache = StateCache(1000, max_bytes=bound)
    cache.put((f"l{n}", h) for n, h in enumerate(light))
    assert len(cache) == 4 and cache.bytes == 4 * one  # all fit: the count is far off
    cache.put([("l0", light[0])])  # written again: now the most recent
    cache.put([("h", heavy)])
    # The heavy customer pushes out the least recently written until the estimate fits.
    assert cache.bytes == held_bytes(heavy) + 2 * one
    assert set(cache.take(["l0", "l1", "l2", "l3", "h"])) == {"l3", "l0", "h"}
    assert cache.bytes == 0


def test_a_customer_larger_than_the_bound_is_not_kept() -> None:
    cache = StateCache(1000, max_bytes=1000)
    cache.put([("h", Held(1, customer("h", 5), []))])
    assert len(cache) == 0 and cache.bytes == 0


def test_the_estimate_follows_what_a_held_customer_takes() -> None:
    # The bound is in MiB of memory: the estimate must stay near the real size (tracemalloc,
    # the facts read back as a batch reads them) for light and heavy customers alike. Only
    # what scoring's code allocated counts: threads other tests left running allocate too.
    scoring = [tracemalloc.Filter(True, "*services/scoring/*", all_frames=True)]
    for orders, items in ((1, 0), (4, 0), (16, 0), (8, 3)):
        raw = [customer(f"c{n}", orders, items=items).to_json() for n in range(50)]
        # Read and scored once before measuring: what the first customer of a kind fills in
        # for the whole process (memoised calendars, interned names) is not the customer's.
        for text in raw[:5]:
            score(
                CustomerState.from_json(text), T0 + timedelta(days=orders), Population(), SETTINGS
            )
        gc.collect()
        tracemalloc.start(16)
        try:
            before = tracemalloc.take_snapshot().filter_traces(scoring)
            kept = []
            for n, text in enumerate(raw):
                state = CustomerState.from_json(text)
                score(state, T0 + timedelta(days=orders), Population(), SETTINGS)
                kept.append(Held(n, state, []))
            gc.collect()
            after = tracemalloc.take_snapshot().filter_traces(scoring)
        finally:
            tracemalloc.stop()
        grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
        real = grown / len(kept)
        estimate = held_bytes(kept[0])
        assert 0.7 * real <= estimate <= 1.5 * real, (orders, items, real, estimate)


def test_a_job_rewriting_every_row_empties_every_cache() -> None:
    first, second = StateCache(10), StateCache(10, max_bytes=10**6)
    first.put([("a", held(1, "a"))])
    second.put([("b", Held(2, customer("b", 2), []))])
    forget_held_states()
    assert len(first) == len(second) == 0 and second.bytes == 0
    second.put([("b", Held(3, customer("b", 2), []))])  # written again: kept again
    assert set(second.take(["b"])) == {"b"}


def test_an_entry_put_after_a_later_write_of_the_same_customer_does_not_replace_it() -> None:
    # Overlapped batches: the later batch may put its customer back before the earlier one
    # does; the later write stays.
    cache = StateCache(10)
    later = held(7, "a")
    cache.put([("a", later)])
    cache.put([("a", held(5, "a"))])
    assert cache.take(["a"]) == {"a": later}
    assert cache.bytes == 0
