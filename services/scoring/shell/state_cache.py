"""The facts the consumer wrote, kept in memory so the next batch need not read them back.

Only the consumer that owns a customer's partition changes their facts, so what it wrote is
usually what it will read next. Each entry remembers the row version it was written at; the
batch's locking read sends facts and stage history only for customers whose row has moved on
since (another instance after a rebalance, a sweep or a refit rewriting the row). Entries are
taken out for the length of a batch (the batch updates states in place) and put back only
once it has committed, so a failed batch can never leave a state it half-applied behind.

The cache is bounded by customers and by an estimate of the bytes they take: a customer's
facts, the ledger and stage walk the card leaves on them and their stored history grow with
what they did (~4 KB for a first order without a profile, ~16 KB for sixteen orders, more for
items listed, visits and complaints), so a count alone would let a few thousand heavy
customers take what twenty-five thousand light ones do.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from services.scoring.core.state import CustomerState
from services.scoring.store.customers import StoredHistory

# What an entry takes in memory, by what it holds (CPython 3.11, measured with tracemalloc on
# customers scored as the consumer scores them, within ~5% for nine customers in ten): the
# entry, its state, its ledger and stage walk, and then per fact.
_BASE_BYTES = 3_500
_ORDER_EVENT_BYTES = 800  # the event, its purchase in the ledger, its day and gap
_LINE_BYTES = 300  # an item an order event listed, and its share of the preference tallies
_PROFILE_BYTES = 500  # a profile register, and its field in the card's profile section
_VISIT_BYTES = 70
_COMPLAINT_EVENT_BYTES = 550
_TRANSITION_BYTES = 260  # a stage transition, stored and walked


class Held(NamedTuple):
    """A customer as this consumer last committed them."""

    version: int
    state: CustomerState
    history: StoredHistory


def held_bytes(held: Held) -> int:
    """An estimate of the memory ``held`` takes, from how many facts of each kind it holds."""
    state = held.state
    events = lines = 0
    for order in state.orders.values():
        events += len(order)
        for event in order.values():
            lines += len(event.items)
    complaints = sum(len(c) for c in state.complaints.values())
    return (
        _BASE_BYTES
        + _ORDER_EVENT_BYTES * events
        + _LINE_BYTES * lines
        + _PROFILE_BYTES * len(state.profile)
        + _VISIT_BYTES * len(state.visits)
        + _COMPLAINT_EVENT_BYTES * complaints
        + _TRANSITION_BYTES * len(held.history)
    )


class StateCache:
    """Least recently written customers go first once ``capacity`` customers or ``max_bytes``
    (estimated, :func:`held_bytes`) is reached; either at 0 keeps nothing."""

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[Held, int]] = OrderedDict()
        self._bytes = 0
        _CACHES.add(self)

    def clear(self) -> None:
        """Forget every entry (those a batch has taken out come back when it commits)."""
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        """The estimated memory the entries take."""
        return self._bytes

    def take(self, customer_ids: Iterable[str]) -> dict[str, Held]:
        """Remove and return the entries held for these customers."""
        entries = self._entries
        out: dict[str, Held] = {}
        for cid in customer_ids:
            entry = entries.pop(cid, None)
            if entry is not None:
                out[cid] = entry[0]
                self._bytes -= entry[1]
        return out

    def put(self, written: Iterable[tuple[str, Held]]) -> None:
        """Keep customers just committed; an entry written at a later version than the one
        put stays."""
        if not self._capacity or self._max_bytes == 0:
            return
        entries = self._entries
        for cid, held in written:
            old = entries.pop(cid, None)
            if old is not None:
                if old[0].version > held.version:
                    # A later write was put first (batches overlap): it stays.
                    entries[cid] = old
                    continue
                self._bytes -= old[1]
            size = held_bytes(held)
            entries[cid] = (held, size)
            self._bytes += size
        limit = self._max_bytes
        while len(entries) > self._capacity or (limit is not None and self._bytes > limit):
            _, (_, size) = entries.popitem(last=False)
            self._bytes -= size


# Every cache of this process, for a job that rewrites every customer's row.
_CACHES: weakref.WeakSet[StateCache] = weakref.WeakSet()


def forget_held_states() -> None:
    """Empty every state cache of this process, for a job about to rewrite every customer's
    row (a refit): each entry would be stale once the job passed it (its row at a new
    version, its facts read back on the next batch anyway), so its memory is better given to
    the job. Correct at any moment: an entry is only ever used at the version it was written."""
    for cache in list(_CACHES):
        cache.clear()
