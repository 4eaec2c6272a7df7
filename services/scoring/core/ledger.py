"""A customer's live purchases and their running figures, carried on from event to event.

Every purchase-based figure of the card (value, spend windows, prediction statistics,
membership, preferences, the purchase days the lifecycle walks) is a function of the live
purchases at the card's moment (:meth:`CustomerState.purchases`). Reading them all for every
event costs O(orders). But an order event newer than every order event the state holds only
appends a purchase (a new order) or replaces the latest one (its payment, a refund of it);
the ledger keeps what the figures need — prefix sums, distinct days with their totals, the
sorted gaps, the preference tallies, the membership walk — so each such event updates it in
O(1) (amortised; O(log orders) for a sorted insert) and each figure reads in O(log orders)
at most.

It is a cache on the state, never stored or compared. Built from the facts (:meth:`of`) it
holds the purchases as of the card's moment, and when that moment is at or after every order
event (``horizon``) it stands for every later moment too and the state keeps it;
:meth:`follow` carries it on after an order event, or says it cannot (a late or out-of-order
event, a refund or a cancellation of an earlier purchase) and the next card builds it afresh
(the full walk). Building afresh is pushing each purchase in turn, so every figure is summed in
the same order either way, and a card carried on is byte for byte the card built afresh.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from decimal import Decimal
from typing import Any

import orjson

from services.scoring.core import predict
from services.scoring.core.membership import TierWalk, Window
from services.scoring.core.money import money_json
from services.scoring.core.preferences import Listed, Tally, order_lines, section, tally
from services.scoring.core.state import DAY_US, CustomerState, Line, Purchase, kept_json
from services.scoring.settings import MembershipTier
from shared.card import LAST_ITEMS

_ZERO = Decimal(0)
_EPOCH_ORDINAL = 719_163  # date(1970, 1, 1).toordinal()
_END = 2**62  # a moment after every event
_BEFORE_ALL = -(2**62)


class Ledger:
    """The live purchases of one customer with their running figures (module docstring)."""

    __slots__ = (
        "_day_before_last",
        "_last",
        "_last_lines",
        "_owed",
        "_preferences_json",
        "_tier_walk",
        "ats",
        "brands",
        "categories",
        "day_totals",
        "days",
        "gaps",
        "horizon",
        "listed",
        "spend",
        "window",
    )

    def __init__(self, horizon: int | None) -> None:
        # The newest order event the ledger reflects: it holds for any moment at or after;
        # None for a ledger of one moment only (an order event after it is left out).
        self.horizon = horizon
        self.ats: list[int] = []  # each purchase's moment, in purchase order
        self.spend: list[Decimal] = [_ZERO]  # spend[i]: the net spend of the first i purchases
        self.days: list[int] = []  # the distinct purchase days (proleptic ordinals), ascending
        # Each day's net as a float, summed in purchase order (the prediction's statistics).
        self.day_totals: list[float] = []
        self.gaps: list[int] = []  # between consecutive purchase days, sorted
        # Every purchase but the latest, in the preferences' tallies and listings: the latest
        # may still be replaced, so it is added when the section is read.
        self.categories: Tally = {}
        self.brands: Tally = {}
        # The newest of them that listed items, in order: as many as the last items need.
        self.listed: list[Listed] = []
        self.window = Window(self.ats, self.spend)
        self._owed = _ZERO  # the outstanding balance of every purchase but the latest
        self._last: Purchase | None = None
        self._last_lines: tuple[Line, ...] = ()
        # The latest purchase day's total before the latest purchase (None: it began the day).
        self._day_before_last: float | None = None
        self._tier_walk: TierWalk | None = None
        # The preferences section as the card's JSON, until a purchase changes it.
        self._preferences_json: orjson.Fragment | None = None

    @classmethod
    def of(cls, state: CustomerState, as_of: int) -> Ledger:
        """The ledger of ``state``'s purchases at ``as_of`` (micros): the full walk."""
        latest = state.latest_order_at()
        ledger = cls(
            _BEFORE_ALL if latest is None else latest if latest <= as_of else None,
        )
        for purchase in state.purchases(as_of):
            ledger._push(purchase, order_lines(state, purchase.order_id, as_of))
        return ledger

    def follow(self, state: CustomerState, order_id: str, at: int, was_live: bool) -> bool:
        """Carry the ledger on after an event of ``order_id`` at ``at`` changed ``state``
        (``was_live``: the order was a purchase before it); False when only the full walk can
        (the ledger is then left as it was).

        Only that order's purchase can have changed: a new purchase after the latest is
        appended, the latest is replaced when it keeps its moment, and an order that is
        still not live changes nothing; any other change (a purchase that falls among the
        known ones, an earlier purchase refunded or cancelled) needs the full walk."""
        if self.horizon is None:
            return False
        purchase = state.purchase_of(order_id, _END)
        last = self._last
        if last is not None and order_id == last.order_id:
            if purchase is None or purchase.at != last.at:
                return False
            self._replace_last(purchase, order_lines(state, order_id, _END))
        elif was_live:
            return False
        elif purchase is not None:
            if last is not None and (purchase.at, order_id) <= (last.at, last.order_id):
                return False
            self._push(purchase, order_lines(state, order_id, _END))
        self.horizon = max(self.horizon, at)
        return True

    def _push(self, purchase: Purchase, lines: tuple[Line, ...]) -> None:
        self._preferences_json = None
        last = self._last
        if last is not None:
            self._owed = self._owed + last.outstanding
            if self._last_lines:
                tally(self.categories, self.brands, last, self._last_lines)
                self.listed.append((last.at, last.order_id, self._last_lines))
                newest = _newest(self.listed)
                if len(newest) < len(self.listed):
                    self.listed = newest
        self._last, self._last_lines = purchase, lines
        self.ats.append(purchase.at)
        self.spend.append(self.spend[-1] + purchase.net)
        day = purchase.at // DAY_US + _EPOCH_ORDINAL
        days = self.days
        if days and days[-1] == day:
            self._day_before_last = self.day_totals[-1]
            self.day_totals[-1] = self._day_before_last + float(purchase.net)
        else:
            if days:
                insort(self.gaps, day - days[-1])
            days.append(day)
            self._day_before_last = None
            self.day_totals.append(0.0 + float(purchase.net))

    def _replace_last(self, purchase: Purchase, lines: tuple[Line, ...]) -> None:
        # Same order, same moment: only its amounts and lines change.
        self._preferences_json = None
        self._last, self._last_lines = purchase, lines
        self.spend[-1] = self.spend[-2] + purchase.net
        before = 0.0 if self._day_before_last is None else self._day_before_last
        self.day_totals[-1] = before + float(purchase.net)

    # -- the figures ---------------------------------------------------------------------------

    @property
    def orders(self) -> int:
        return len(self.ats)

    @property
    def lifetime(self) -> Decimal:
        return self.spend[-1]

    @property
    def outstanding(self) -> Decimal:
        return self._owed if self._last is None else self._owed + self._last.outstanding

    def since(self, now: int, window_days: int) -> tuple[Decimal, int]:
        """Net spend and order count of the ``window_days`` days up to ``now``."""
        first = bisect_right(self.ats, now - window_days * DAY_US)
        return self.spend[-1] - self.spend[first], len(self.ats) - first

    def before_last(self, window_days: int) -> tuple[Decimal, int]:
        """Net spend and order count of the ``window_days`` days up to the latest purchase."""
        if not self.ats:
            return _ZERO, 0
        return self.since(self.ats[-1], window_days)

    def stats(self, today: int) -> predict.RepeatStats | None:
        """The prediction's statistics on day ``today`` (an ordinal, on or after the latest
        purchase day), as :func:`predict.daily_stats_of_days` makes them."""
        if not self.days:
            return None
        totals = self.day_totals
        first, x = self.days[0], len(totals) - 1
        mean_spend = math.fsum(totals[1:]) / x if x else 0.0
        return predict.RepeatStats(
            x, float(self.days[-1] - first), float(today - first), mean_spend
        )

    def tier_walk(self, tiers: tuple[MembershipTier, ...]) -> TierWalk:
        """The membership walk carried on with these purchases (:func:`membership.standing`)."""
        if self._tier_walk is None or self._tier_walk.tiers is not tiers:
            self._tier_walk = TierWalk(tiers)
        return self._tier_walk

    def preferences(self) -> dict[str, Any]:
        """The card's ``preferences`` section (:func:`preferences.preferences`)."""
        categories, brands, listed = self.categories, self.brands, self.listed
        last = self._last
        if last is not None and self._last_lines:
            categories, brands = dict(categories), dict(brands)
            tally(categories, brands, last, self._last_lines)
            listed = [*listed, (last.at, last.order_id, self._last_lines)]
        return section(categories, brands, _newest(listed))

    def preferences_json(self) -> orjson.Fragment:
        """:meth:`preferences` as the card's JSON writes it (money as its text, times in
        UTC with a ``Z``), written once per change of the purchases."""
        if self._preferences_json is None:
            if not (self.categories or self.brands or self.listed or self._last_lines):
                return _NO_PREFERENCES
            self._preferences_json = kept_json(
                orjson.dumps(self.preferences(), default=money_json, option=orjson.OPT_UTC_Z)
            )
        return self._preferences_json


# The section of a customer whose orders never listed an item, written once.
_NO_PREFERENCES = orjson.Fragment(orjson.dumps(section({}, {}, [])))


def _newest(listed: list[Listed]) -> list[Listed]:
    """The newest purchases of ``listed`` (in purchase order) that the last items can come
    from: enough for :data:`LAST_ITEMS` lines, and every other one at the oldest's moment."""
    count, start = 0, len(listed)
    while start > 0 and count < LAST_ITEMS:
        start -= 1
        count += len(listed[start][2])
    while start > 0 and listed[start - 1][0] == listed[start][0]:
        start -= 1
    return listed[start:]
