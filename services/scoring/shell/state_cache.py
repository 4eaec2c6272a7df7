"""The facts the consumer wrote, kept in memory so the next batch need not read them back.

Only the consumer that owns a customer's partition changes their facts, so what it wrote is
usually what it will read next. Each entry remembers the row version it was written at; the
batch's locking read sends facts and stage history only for customers whose row has moved on
since (another instance after a rebalance, a sweep or a refit rewriting the row). Entries are
taken out for the length of a batch (the batch updates states in place) and put back only
once it has committed, so a failed batch can never leave a state it half-applied behind.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from services.scoring.core.state import CustomerState
from services.scoring.store.customers import StoredHistory


class Held(NamedTuple):
    """A customer as this consumer last committed them."""

    version: int
    state: CustomerState
    history: StoredHistory


class StateCache:
    """Least recently written customers go first once ``capacity`` is reached (0: off)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, Held] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, customer_ids: Iterable[str]) -> dict[str, Held]:
        """Remove and return the entries held for these customers."""
        entries = self._entries
        return {cid: held for cid in customer_ids if (held := entries.pop(cid, None))}

    def put(self, written: Iterable[tuple[str, Held]]) -> None:
        """Keep customers just committed."""
        if not self._capacity:
            return
        entries = self._entries
        for cid, held in written:
            entries[cid] = held
            entries.move_to_end(cid)
        while len(entries) > self._capacity:
            entries.popitem(last=False)
