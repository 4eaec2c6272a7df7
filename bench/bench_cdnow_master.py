"""The whole CDNOW master log through the pipeline: from the first POST to the last card.

    python -m bench.bench_cdnow_master [--concurrency 4]

``CDNOW_master.txt`` ships inside the ``lifetimes`` package: 69,659 orders by 23,570 customers
(customer id, date YYYYMMDD, quantity, spend), 1997-98. Its dates are shifted so the log ends
today (as ``make run``'s demo and ``tend replay --shift-to-today`` do), each line becomes a paid
order at noon UTC, and the orders are posted in time order through ingest, in batches of
1,000 from several concurrent clients, to a fresh stack (ingest, scoring and outreach in
their own processes, as in :mod:`bench.bench_e2e`). The clock stops when scoring's
``GET /v1/stats/overview`` counts every customer and the log's total revenue to the cent.

The overview scans every customer, so it is asked only once scoring's
``tend_consumer_records_total`` (its ``/metrics``, which touches no database) says it has
handled as many records as were posted; until then the bench reads that counter every
0.2 s. Polling the overview itself every half second cost PostgreSQL ~2 s of CPU per run,
taken from the pipeline it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from decimal import Decimal
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench import pg_time
from bench.bench_e2e import Sampler, Stack, cpu_split, running_stack
from tests.support.cdnow import Order, master_log, read_master

PORTS = {"ingest": 18021, "scoring": 18022, "outreach": 18023}
TARGET_S = 15.0


def order_events(orders: Sequence[Order], today: date) -> list[dict[str, Any]]:
    """Paid orders in time order, the log moved so its last day is ``today``."""
    shift = today - max(o.day for o in orders)
    latest = datetime.now(UTC) - timedelta(minutes=1)  # today's noon may lie ahead
    return [
        {
            "type": "order",
            "order_id": f"cdnow-master-{o.line}",
            "customer_id": o.customer_id,
            "occurred_at": min(
                datetime.combine(o.day + shift, day_time(12), UTC), latest
            ).isoformat(),
            "status": "paid",
            "amount": str(o.amount),
            "currency": "USD",
        }
        for o in sorted(orders, key=lambda o: o.day)
    ]


@dataclass(frozen=True)
class CdnowFigures:
    orders: int
    customers: int
    revenue: Decimal
    concurrency: int
    batch: int
    posted_s: float  # first POST to the last answered
    wall_s: float  # first POST to the overview showing everything
    seen_customers: int
    seen_revenue: Decimal
    cpu_share: dict[str, float]  # of the machine's cores, first POST to the last card
    # PostgreSQL's statement time in the same window, seconds by service (bench.pg_time).
    pg_spent: dict[str, float] | None

    @property
    def cpu_per_order_us(self) -> dict[str, float]:
        """CPU microseconds per order, by process, from the first POST to the last card."""
        cores = os.cpu_count() or 1
        return {
            n: share * cores * self.wall_s / self.orders * 1e6
            for n, share in self.cpu_share.items()
        }

    @property
    def complete(self) -> bool:
        return self.seen_customers == self.customers and self.seen_revenue == self.revenue


async def _post_all(stack: Stack, bodies: Sequence[bytes], concurrency: int) -> None:
    queue = list(reversed(bodies))
    headers = {**stack.auth(stack.ingest_key), "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=stack.urls["ingest"], headers=headers, timeout=60) as c:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                resp = await c.post("/v1/events", content=body)
                if resp.status_code == 503:  # the broker is slow: retry as ingest asks
                    queue.append(body)
                    await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
                    continue
                if resp.status_code != 200 or resp.json()["rejected"]:
                    raise RuntimeError(f"ingest answered {resp.status_code}: {resp.text[:300]}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def handled(scoring: httpx.AsyncClient) -> float:
    """The records scoring's consumers have handled, from its ``/metrics``."""
    resp = await scoring.get("/metrics")
    resp.raise_for_status()
    return sum(
        s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
        if s.name == "tend_consumer_records_total"
    )


async def measure(
    *,
    concurrency: int = 4,
    batch: int = 1000,
    timeout: float = 600,
    ports: Mapping[str, int] = PORTS,
) -> CdnowFigures:
    orders = read_master(master_log())
    events = order_events(orders, datetime.now(UTC).date())
    customers = len({o.customer_id for o in orders})
    revenue = sum((o.amount for o in orders), Decimal(0))
    bodies = [orjson.dumps({"events": events[i : i + batch]}) for i in range(0, len(events), batch)]
    seen_customers, seen_revenue = 0, Decimal(0)
    async with (
        running_stack("cdnow", ports) as stack,
        httpx.AsyncClient(
            base_url=stack.urls["scoring"], headers=stack.auth(stack.admin_key), timeout=30
        ) as scoring,
    ):
        pg_before = await pg_time.snapshot(stack.settings)
        sampler = Sampler(stack.pids)
        started = time.perf_counter()
        posting = asyncio.create_task(_post_all(stack, bodies, concurrency))
        posted_s = 0.0
        while time.perf_counter() - started < timeout:
            await asyncio.sleep(0.2)
            if posting.done() and not posted_s:
                posting.result()  # a failed post ends the bench here
                posted_s = time.perf_counter() - started
            if await handled(scoring) < len(events):
                continue
            resp = await scoring.get("/v1/stats/overview")
            resp.raise_for_status()
            overview = resp.json()
            seen_customers = overview["customers"]
            seen_revenue = Decimal(str(overview["lifetime_revenue"]))
            if seen_customers == customers and seen_revenue == revenue:
                break
        wall_s = time.perf_counter() - started
        cpu = sampler.cpu_shares()
        pg = pg_time.spent(pg_before, await pg_time.snapshot(stack.settings))
        if not posting.done():
            posting.cancel()
    return CdnowFigures(
        orders=len(events),
        customers=customers,
        revenue=revenue,
        concurrency=concurrency,
        batch=batch,
        posted_s=posted_s,
        wall_s=wall_s,
        seen_customers=seen_customers,
        seen_revenue=seen_revenue,
        cpu_share=cpu,
        pg_spent=pg,
    )


def print_figures(f: CdnowFigures) -> None:
    print(
        f"\n## CDNOW master log ({f.orders:,} orders, {f.customers:,} customers, "
        f"${f.revenue:,}; batches of {f.batch:,}, {f.concurrency} concurrent clients; "
        f"{os.cpu_count()} cores shared by 3 services, Kafka, PostgreSQL and this client)\n"
    )
    print("| path | figure |")
    print("|---|---|")
    print(f"| every order posted (first POST to last answer) | {f.posted_s:.1f} s |")
    if f.complete:
        print(
            f"| first POST to the last card (overview: every customer, all revenue) | "
            f"{f.wall_s:.1f} s, {f.orders / f.wall_s:,.0f} orders/s (target <= "
            f"{TARGET_S:.0f} s: {'met' if f.wall_s <= TARGET_S else 'MISSED'}) |"
        )
    else:
        print(
            f"| NOT COMPLETE after {f.wall_s:.0f} s | overview showed {f.seen_customers:,} "
            f"customers, ${f.seen_revenue:,} (target <= {TARGET_S:.0f} s: MISSED) |"
        )
    print(
        f"| CPU share of the {os.cpu_count()} cores, first POST to the last card | "
        f"{cpu_split(f.cpu_share)} |"
    )
    print(f"| CPU per order, same window | {per_order(f)} |")
    print(
        f"| PostgreSQL statement time per order, same window | "
        f"{pg_time.per_unit(f.pg_spent, f.orders)} |"
    )


def per_order(f: CdnowFigures) -> str:
    """The CPU split as microseconds per order, and what the target leaves to all cores."""
    us = f.cpu_per_order_us
    budget = (os.cpu_count() or 1) * TARGET_S / f.orders * 1e6
    return (
        ", ".join(f"{name} {v:,.0f} µs" for name, v in us.items())
        + f"; all {sum(us.values()):,.0f} µs (the target leaves {budget:,.0f} µs)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    print_figures(await measure(concurrency=args.concurrency, batch=args.batch))


if __name__ == "__main__":
    asyncio.run(main())
