"""The ``scoring.order_facts`` table: every live order, kept from the customers' facts by the
consumer, read by the money in the flow figures (:mod:`services.scoring.store.flow`).

A row is an order as every fact known says it is, whatever their times: bought at the earliest
of its placed and paid times, worth its total less every refund, gone once cancelled or wholly
refunded (:meth:`CustomerState.purchase_of` at the end of time). So an order's row changes
only when one of its own events applies, and the figures read the orders in event time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.core.state import CustomerState, from_micros

# Every fact up to the end of time: an order's row does not wait for its time to come.
_EVERYTHING = 2**62

# Orders that are no longer live (cancelled or wholly refunded since).
_DROP = text(
    """
    DELETE FROM scoring.order_facts AS o
    USING unnest(CAST(:ids AS text[]), CAST(:orders AS text[])) AS g(c, o)
    WHERE o.customer_id = g.c AND o.order_id = g.o
    """
)
_UPSERT = text(
    """
    INSERT INTO scoring.order_facts AS f (customer_id, order_id, at, day, net)
    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:orders AS text[]),
        CAST(:ats AS timestamptz[]), CAST(:days AS date[]), CAST(:nets AS numeric[]))
    ON CONFLICT (customer_id, order_id) DO UPDATE SET
        at = EXCLUDED.at, day = EXCLUDED.day, net = EXCLUDED.net
    WHERE (f.at, f.net) IS DISTINCT FROM (EXCLUDED.at, EXCLUDED.net)
    """
)


async def sync(conn: AsyncConnection, touched: Iterable[tuple[CustomerState, set[str]]]) -> None:
    """Bring the rows of these orders (each customer's facts, and the ids of their orders an
    event has just changed) to what the facts now say: an order's row changes only with its
    own events."""
    live_ids: list[str] = []
    live_orders: list[str] = []
    ats: list[datetime] = []
    days: list[date] = []
    nets: list[Decimal] = []
    gone_ids: list[str] = []
    gone_orders: list[str] = []
    for state, order_ids in touched:
        for order_id in order_ids:
            # Only these orders: the customer's other orders are not read (O(orders changed)).
            purchase = (
                state.purchase_of(order_id, _EVERYTHING) if order_id in state.orders else None
            )
            if purchase is None:
                gone_ids.append(state.customer_id)
                gone_orders.append(order_id)
                continue
            at = from_micros(purchase.at)
            live_ids.append(state.customer_id)
            live_orders.append(order_id)
            ats.append(at)
            days.append(at.date())
            nets.append(purchase.net)
    if gone_ids:
        await conn.execute(_DROP, {"ids": gone_ids, "orders": gone_orders})
    if live_ids:
        await conn.execute(
            _UPSERT,
            {"ids": live_ids, "orders": live_orders, "ats": ats, "days": days, "nets": nets},
        )
