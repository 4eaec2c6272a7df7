"""The ``scoring.order_facts`` table: every live order, kept from the customers' facts by the
consumer, read by the money in the flow figures (:mod:`services.scoring.store.flow`).

A row is an order as every fact known says it is, whatever their times: bought at the earliest
of its placed and paid times, worth its total less every refund, gone once cancelled or wholly
refunded (:meth:`CustomerState.purchase_of` at the end of time). So an order's row changes
only when one of its own events applies, and the figures read the orders in event time.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.core.state import CustomerState

# Every fact up to the end of time: an order's row does not wait for its time to come.
_EVERYTHING = 2**62

# A batch's orders travel as one JSON document (written by orjson, read by PostgreSQL), not
# as a dozen arrays whose every element the driver would inspect and encode in Python.
# Moments are micros since the epoch, made timestamps exactly (integer microseconds).
_ROWS = """json_to_recordset(CAST(:rows AS json)) AS g(c text, o text, us bigint, net numeric)"""
_AT = "to_timestamp(0) + g.us * interval '1 microsecond'"

# Orders that are no longer live (cancelled or wholly refunded since).
_DROP = text(
    f"""
    DELETE FROM scoring.order_facts AS o
    USING {_ROWS}
    WHERE o.customer_id = g.c AND o.order_id = g.o
    """
)
_UPSERT = text(
    f"""
    INSERT INTO scoring.order_facts AS f (customer_id, order_id, at, day, net)
    SELECT g.c, g.o, {_AT}, CAST(({_AT}) AT TIME ZONE 'UTC' AS date), g.net
    FROM {_ROWS}
    ON CONFLICT (customer_id, order_id) DO UPDATE SET
        at = EXCLUDED.at, day = EXCLUDED.day, net = EXCLUDED.net
    WHERE (f.at, f.net) IS DISTINCT FROM (EXCLUDED.at, EXCLUDED.net)
    """
)


async def sync(conn: AsyncConnection, touched: Iterable[tuple[CustomerState, set[str]]]) -> None:
    """Bring the rows of these orders (each customer's facts, and the ids of their orders an
    event has just changed) to what the facts now say: an order's row changes only with its
    own events."""
    live: list[dict[str, object]] = []
    gone: list[dict[str, object]] = []
    for state, order_ids in touched:
        cid = state.customer_id
        for order_id in order_ids:
            # Only these orders: the customer's other orders are not read (O(orders changed)).
            purchase = (
                state.purchase_of(order_id, _EVERYTHING) if order_id in state.orders else None
            )
            if purchase is None:
                gone.append({"c": cid, "o": order_id})
            else:
                # The net as its exact text: a JSON number would pass through a float.
                live.append({"c": cid, "o": order_id, "us": purchase.at, "net": str(purchase.net)})
    if gone:
        await conn.execute(_DROP, {"rows": orjson.dumps(gone).decode()})
    if live:
        await conn.execute(_UPSERT, {"rows": orjson.dumps(live).decode()})
