"""A rule's daily limit (``limits.max_per_day``) as a dry run counts it.

Live, each decision takes what is left of its rule's day, the most valuable customers of the
decision first (:func:`services.outreach.core.policy.decide_all`). A preview sees a whole
audience one chunk at a time, in customer id order, so it cannot take slots as it goes: it
keeps, for each day, the most valuable of the customers who would take a slot (at most what
the day has left), and counts every customer pushed out of them as held back by the limit.
Memory stays at one entry per slot, whatever the audience.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from services.outreach.core.policy import Decision, Outcome, Reason


@dataclass(frozen=True, slots=True)
class _Rank:
    """A customer's place for a slot: the higher value score first, then the smaller id (the
    live order). Ordered worst first, so a heap's top is the first to give its slot up."""

    score: float
    customer_id: str

    def __lt__(self, other: _Rank) -> bool:
        if self.score != other.score:
            return self.score < other.score
        return self.customer_id > other.customer_id


def value_rank(card: Mapping[str, object]) -> float:
    """What ranks a customer for a rule's daily slots: the card's value score (none: last)."""
    score = card.get("value_score")
    return float(score) if isinstance(score, int | float) else float("-inf")


@dataclass
class DaySlots:
    """The slots of each day a dry run of one rule looks at: ``per_day``, less what the ledger
    says the rule already used that day (``spent``)."""

    per_day: int
    spent: Mapping[datetime, int] = field(default_factory=dict)
    _kept: dict[datetime, list[tuple[_Rank, Decision, bool]]] = field(default_factory=dict)
    # The decisions pushed out of a day's slots, by outcome and reason: each becomes a
    # ``daily_limit`` suppression.
    over: Counter[tuple[Outcome, Reason | None]] = field(default_factory=Counter)
    # Of those, the ones a control arm would have held out.
    over_held_out: int = 0

    def claim(
        self,
        day: datetime,
        score: float,
        customer_id: str,
        decision: Decision,
        *,
        held_out: bool = False,
    ) -> None:
        """A customer whose decision would take a slot of ``day`` (it goes out or waits);
        ``held_out``: in a control arm (a hold-out takes its slot like a sent action)."""
        kept = self._kept.setdefault(day, [])
        room = max(0, self.per_day - self.spent.get(day, 0))
        entry = (_Rank(score, customer_id), decision, held_out)
        if len(kept) < room:
            heapq.heappush(kept, entry)
            return
        if kept and kept[0][0] < entry[0]:
            entry = heapq.heapreplace(kept, entry)
        _, pushed_out, was_held_out = entry
        self.over[pushed_out.outcome, pushed_out.reason] += 1
        self.over_held_out += was_held_out

    def holders(self, day: datetime) -> list[str]:
        """The customers who hold the day's slots, the most valuable first."""
        kept = sorted(self._kept.get(day, ()), key=lambda e: e[0], reverse=True)
        return [rank.customer_id for rank, _, _ in kept]

    def keeps(self, day: datetime, customer_id: str) -> bool:
        """Whether the customer holds one of the day's slots."""
        return any(rank.customer_id == customer_id for rank, _, _ in self._kept.get(day, ()))
