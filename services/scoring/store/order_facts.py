"""The ``scoring.order_facts`` table: every live order, kept from the customers' facts by the
consumer, read by the money in the flow figures (:mod:`services.scoring.store.flow`).

A row is an order as every fact known says it is, whatever their times: bought at the earliest
of its placed and paid times, worth its total less every refund, gone once cancelled or wholly
refunded (:meth:`CustomerState.purchases` at the end of time). So a customer's rows change
only when one of their order events applies, and the figures read the orders in event time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.core.state import CustomerState, from_micros

# Every fact up to the end of time: an order's row does not wait for its time to come.
_EVERYTHING = 2**62

# The rows of these customers their facts no longer hold (cancelled or wholly refunded since).
_DROP = text(
    """
    DELETE FROM scoring.order_facts AS o
    WHERE o.customer_id = ANY(CAST(:customers AS text[]))
      AND NOT EXISTS (
        SELECT 1 FROM unnest(CAST(:ids AS text[]), CAST(:orders AS text[])) AS w(c, o)
        WHERE w.c = o.customer_id AND w.o = o.order_id)
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


async def sync(conn: AsyncConnection, states: Iterable[CustomerState]) -> None:
    """Bring these customers' rows to the live orders their facts now hold."""
    customers: list[str] = []
    ids: list[str] = []
    orders: list[str] = []
    ats = []
    days: list[date] = []
    nets = []
    for state in states:
        customers.append(state.customer_id)
        for purchase in state.purchases(_EVERYTHING):
            at = from_micros(purchase.at)
            ids.append(state.customer_id)
            orders.append(purchase.order_id)
            ats.append(at)
            days.append(at.date())
            nets.append(purchase.net)
    if not customers:
        return
    await conn.execute(_DROP, {"customers": customers, "ids": ids, "orders": orders})
    if ids:
        await conn.execute(
            _UPSERT, {"ids": ids, "orders": orders, "ats": ats, "days": days, "nets": nets}
        )
