"""Purchase preferences: what a customer buys, by category and by brand, from the items of
their live orders (the card's ``preferences`` section, :class:`shared.card.Preferences`).

A pure function of the facts and a moment, like every figure of the card, so a card carried
on and one built afresh agree, and ``as_of`` replays history. Each live order's net (its
total less refunds, as :meth:`CustomerState.purchases` reckons it) is shared among its lines
by their value (``quantity × unit_price``), so a refund lowers the spend of every category and
brand of the order in proportion; an order whose lines are worth nothing shares nothing. The
lines are those of the order's latest placed or paid event up to the moment that listed any.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from services.scoring.core.state import PAID, PLACED, CustomerState, Line, Purchase, from_micros
from shared.card import LAST_ITEMS, PREFERENCES_TOP

_ZERO = Decimal(0)
_CENT_PART = Decimal("0.0001")  # shares are kept to the precision of Money


def order_lines(state: CustomerState, order_id: str, as_of: int) -> tuple[Line, ...]:
    """The lines of ``order_id`` as of ``as_of``: its latest placed/paid event listing any."""
    best: tuple[int, bool, str] | None = None
    lines: tuple[Line, ...] = ()
    for event_id, e in state.orders[order_id].items():
        if e.at > as_of or e.kind not in (PLACED, PAID) or not e.items:
            continue
        key = (e.at, e.kind == PAID, event_id)
        if best is None or key > best:
            best, lines = key, e.items
    return lines


# A category's or a brand's tally: name -> (spend, the latest purchase's moment).
Tally = dict[str, tuple[Decimal, int]]
# A purchase that listed items: (moment, order id, lines).
Listed = tuple[int, str, tuple[Line, ...]]


def preferences(
    state: CustomerState, as_of: int, purchases: list[Purchase] | None = None
) -> dict[str, Any]:
    """The ``preferences`` section of the card at ``as_of`` (micros), as plain values;
    ``purchases`` are ``state.purchases(as_of)`` when the caller has them already."""
    categories: Tally = {}
    brands: Tally = {}
    listed: list[Listed] = []
    for purchase in state.purchases(as_of) if purchases is None else purchases:
        lines = order_lines(state, purchase.order_id, as_of)
        if lines:
            listed.append((purchase.at, purchase.order_id, lines))
            tally(categories, brands, purchase, lines)
    return section(categories, brands, listed)


def tally(categories: Tally, brands: Tally, purchase: Purchase, lines: tuple[Line, ...]) -> None:
    """Add ``purchase``'s share of each line to the tallies, in place (an entry is replaced,
    never changed, so a shallow copy of a tally keeps it as it was)."""
    worth = sum((line.quantity * line.unit_price for line in lines), _ZERO)
    at = purchase.at
    for line in lines:
        share = _ZERO
        if worth > _ZERO:
            share = (line.quantity * line.unit_price * purchase.net / worth).quantize(
                _CENT_PART, ROUND_HALF_EVEN
            )
        for name, table in ((line.category, categories), (line.brand, brands)):
            if name is None:
                continue
            entry = table.get(name)
            if entry is None:
                table[name] = (_ZERO + share, at)
            else:
                table[name] = (entry[0] + share, max(entry[1], at))


def section(categories: Tally, brands: Tally, listed: list[Listed]) -> dict[str, Any]:
    """The section from the tallies and the purchases that listed items (at least the newest
    :data:`LAST_ITEMS` lines' worth, and every purchase at the moment of the oldest of them)."""
    by_spend = sorted(categories, key=lambda n: (-categories[n][0], n))
    by_recency = sorted(categories, key=lambda n: (-categories[n][1], n))
    recent = sorted(listed, key=lambda r: (-r[0], r[1]))
    last_items: list[dict[str, Any]] = []
    for at, _, lines in recent:
        for line in lines:
            if len(last_items) == LAST_ITEMS:
                break
            last_items.append(
                {
                    "sku": line.sku,
                    "category": line.category,
                    "brand": line.brand,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "bought_at": from_micros(at),
                }
            )
    return {
        "categories": _section(categories),
        "brands": _section(brands),
        "top_categories_by_spend": by_spend[:PREFERENCES_TOP],
        "top_categories_by_recency": by_recency[:PREFERENCES_TOP],
        "last_items": last_items,
    }


def _section(table: Tally) -> dict[str, dict[str, Any]]:
    return {
        name: {"spend": spend, "last_at": from_micros(at)}
        for name, (spend, at) in sorted(table.items())
    }
