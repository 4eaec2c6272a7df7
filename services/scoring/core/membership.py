"""Membership tiers: the loyalty tier a customer holds by what they bought over the last year.

The shop configures its tiers, lowest first (``ScoringSettings.membership_tiers``): each is
reached by net spend over the last 365 days, or by live orders over them. A customer holds the
highest tier whose spend or order threshold they reach at ``as_of``. A ``member_tier`` the
backend sets wins over the computed one (``source: backend``), until it sets it to null.

Tiers move at two kinds of moments only: when a purchase happens (an upgrade) and 365 days
after one, when it leaves the window (a downgrade as the year's spend falls). So the tier's
history is a pure function of the purchases: :func:`standing` walks those moments to find
when the current tier was entered (``since``) and which tier came before (``previous``),
which makes an upgrade an episode like a lifecycle stage's, and a card built afresh says the
same as one carried on. Amounts are net of refunds as known at ``as_of`` (a refund lowers the
spend of the moments before it too: the history is re-read, as the stage history is).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.scoring.core.state import DAY_US, CustomerState, Purchase, from_micros
from services.scoring.settings import MembershipTier

WINDOW_US = 365 * DAY_US
UPGRADE, DOWNGRADE = "upgrade", "downgrade"
_ZERO = Decimal(0)
_BEFORE_ALL = -(2**62)


@dataclass(frozen=True, slots=True)
class Standing:
    """A customer's membership at a moment: the card's section (None when there is nothing
    to say), the tier in force, and when time alone may next lower it (micros; None: never
    without a new purchase)."""

    section: dict[str, Any] | None
    tier: str | None
    review_at: int | None


def tier_of(
    spend: Decimal, orders: int, tiers: tuple[MembershipTier, ...]
) -> tuple[int, str | None]:
    """The rank (index in ``tiers``; -1 for none) of the highest tier ``spend`` or ``orders``
    reaches, and the basis it was reached on (``spend_365d`` when spend suffices)."""
    for rank in range(len(tiers) - 1, -1, -1):
        t = tiers[rank]
        if t.min_spend_365d is not None and spend >= t.min_spend_365d:
            return rank, "spend_365d"
        if t.min_orders_365d is not None and orders >= t.min_orders_365d:
            return rank, "orders_365d"
    return -1, None


class Window:
    """Net spend and order count of the 365 days up to any moment, by prefix sums: ``ats``
    are the purchases' moments in order, ``sums[i]`` the net spend of the first ``i``. The
    lists are read, never changed, here (a ledger appends to its own as purchases come)."""

    def __init__(self, ats: list[int], sums: list[Decimal]) -> None:
        self.ats = ats
        self.sums = sums

    @classmethod
    def of(cls, purchases: list[Purchase]) -> Window:
        sums = [_ZERO]
        for p in purchases:
            sums.append(sums[-1] + p.net)
        return cls([p.at for p in purchases], sums)

    def at(self, moment: int) -> tuple[Decimal, int, int]:
        """``(spend, orders, first)`` over ``(moment - 365 days, moment]``; ``first`` is the
        index of the window's oldest purchase."""
        first = bisect_right(self.ats, moment - WINDOW_US)
        last = bisect_right(self.ats, moment)
        return self.sums[last] - self.sums[first], last - first, first

    def moments(self, start: int, end: int, *, through: bool) -> list[int]:
        """The moments the tier can move at from ``start`` on, up to ``end`` (included when
        ``through``), in order: a purchase entering the window, one leaving it."""
        ats = self.ats
        upper = bisect_right if through else bisect_left
        entering = ats[bisect_left(ats, start) : upper(ats, end)]
        leaving = ats[bisect_left(ats, start - WINDOW_US) : upper(ats, end - WINDOW_US)]
        return sorted({*entering, *(a + WINDOW_US for a in leaving)})


@dataclass(slots=True)
class TierWalk:
    """The computed tier walked through every moment before ``upto``: the tier in force
    (``rank``), when it was entered and the one before. Carried on by a ledger from event to
    event while purchases only come later, so a card walks only the moments since."""

    tiers: tuple[MembershipTier, ...]
    upto: int = _BEFORE_ALL
    rank: int = -1
    since: int | None = None
    previous: int = -1

    def walk(self, window: Window, end: int, *, through: bool) -> None:
        """Walk on to ``end`` (through it when ``through``)."""
        for moment in window.moments(self.upto, end, through=through):
            spend, orders, _ = window.at(moment)
            reached, _ = tier_of(spend, orders, self.tiers)
            if reached != self.rank:
                self.rank, self.since, self.previous = reached, moment, self.rank
        self.upto = end + 1 if through else end


def standing(
    state: CustomerState,
    window: Window,
    now: int,
    tiers: tuple[MembershipTier, ...],
    settled: TierWalk | None = None,
) -> Standing:
    """The membership of ``state`` at ``now`` (micros), given the ``window`` of its live
    purchases then. ``settled``: a walk of these tiers to carry on; it is walked on to the
    latest purchase (the moments before it can no longer change while purchases only come
    later) and the walk from there to ``now`` is this card's alone."""
    backend = state.profile.get("member_tier")
    if backend is not None and isinstance(backend.value, str):
        spend, orders, _ = window.at(now)
        section = _section(backend.value, "backend", backend.at, None, None, spend, orders)
        return Standing(section, backend.value, None)
    if not tiers:
        return Standing(None, None, None)

    latest = window.ats[-1] if window.ats else _BEFORE_ALL
    if settled is None or settled.tiers is not tiers or settled.upto > latest:
        settled = TierWalk(tiers)
    if latest > settled.upto:
        settled.walk(window, latest, through=False)
    walk = TierWalk(tiers, settled.upto, settled.rank, settled.since, settled.previous)
    walk.walk(window, now, through=True)
    rank, since, previous = walk.rank, walk.since, walk.previous
    spend, orders, first = window.at(now)
    reached, basis = tier_of(spend, orders, tiers)
    assert reached == rank  # nothing moves between the moments walked
    section = _section(
        tiers[rank].name if rank >= 0 else None,
        "computed",
        since,
        tiers[previous].name if since is not None and previous >= 0 else None,
        (UPGRADE if rank > previous else DOWNGRADE) if since is not None else None,
        spend,
        orders,
        basis=basis,
        next_tier=_next(tiers, rank, spend, orders),
    )
    review = window.ats[first] + WINDOW_US if rank >= 0 else None
    return Standing(section, section["tier"], review)


def _next(
    tiers: tuple[MembershipTier, ...], rank: int, spend: Decimal, orders: int
) -> dict[str, Any] | None:
    if rank + 1 >= len(tiers):
        return None
    t = tiers[rank + 1]
    return {
        "tier": t.name,
        "missing_spend": None if t.min_spend_365d is None else max(t.min_spend_365d - spend, _ZERO),
        "missing_orders": None if t.min_orders_365d is None else max(t.min_orders_365d - orders, 0),
    }


def _section(
    tier: str | None,
    source: str,
    since: int | None,
    previous: str | None,
    direction: str | None,
    spend: Decimal,
    orders: int,
    *,
    basis: str | None = None,
    next_tier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # The keys in the order of shared.card.Membership's fields: the card's JSON is written
    # from this dict directly.
    return {
        "tier": tier,
        "source": source,
        "since": None if since is None else from_micros(since),
        "previous": previous,
        "direction": direction,
        "basis": basis,
        "spend_365d": spend,
        "orders_365d": orders,
        "next": next_tier,
    }
