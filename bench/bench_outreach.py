"""Outreach: rule evaluation throughput with 100 active rules, and the scheduler's due-scan
over 1M customers.

    python -m bench.bench_outreach [--customers 1000000]

The due-scan fills a fresh database with a million customers' replica rows and schedule rows
(1% due now, the rest spread over the coming year) and times what the scheduler does each
tick: find every due (rule, customer) with its card, through the ``due_at`` index.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.engine import make_url

from services.outreach.core.rules import benchmark
from shared.db import create_database, drop_database
from shared.migrate import upgrade_all
from shared.settings import CommonSettings

DUE_SCAN = """
    SELECT s.rule_id, s.customer_id, s.due_at, c.card
    FROM outreach.schedule s JOIN outreach.cards c USING (customer_id)
    WHERE s.due_at <= $1
    ORDER BY s.due_at
"""


async def due_scan(customers: int) -> tuple[float, int, float]:
    """(seconds to fill, due rows found, seconds to find them)."""
    base = CommonSettings()
    name = f"tend_bench_{uuid.uuid4().hex[:8]}"
    settings = await create_database(base, name)
    try:
        await asyncio.to_thread(upgrade_all, settings)
        dsn = make_url(settings.database_url).set(drivername="postgresql")
        conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            rng = random.Random(5)
            now = datetime.now(UTC)
            started = time.perf_counter()
            ids = [f"c{i}" for i in range(customers)]
            await conn.copy_records_to_table(
                "cards",
                schema_name="outreach",
                columns=["customer_id", "card", "complaint_open", "change_at"],
                records=((cid, f'{{"customer_id": "{cid}"}}', False, now) for cid in ids),
            )
            await conn.copy_records_to_table(
                "schedule",
                schema_name="outreach",
                columns=["rule_id", "customer_id", "due_at"],
                records=(
                    (
                        "birthday-greeting",
                        cid,
                        now - timedelta(minutes=rng.randint(1, 600))
                        if rng.random() < 0.01
                        else now + timedelta(minutes=rng.randint(1, 525_600)),
                    )
                    for cid in ids
                ),
            )
            await conn.execute("ANALYZE outreach.cards; ANALYZE outreach.schedule")
            filled = time.perf_counter() - started
            timings = []
            for _ in range(3):
                t0 = time.perf_counter()
                rows = await conn.fetch(DUE_SCAN, now)
                timings.append(time.perf_counter() - t0)
            return filled, len(rows), min(timings)
        finally:
            await conn.close()
    finally:
        await drop_database(base, name)


@dataclass(frozen=True)
class OutreachFigures:
    customers: int
    rules_per_s: float
    filled_s: float
    due: int
    scan_s: float


async def measure(customers: int, changes: int) -> OutreachFigures:
    rules = benchmark(changes=changes, rules=100)
    filled, due, scan = await due_scan(customers)
    return OutreachFigures(customers, rules.changes_per_second, filled, due, scan)


def print_figures(f: OutreachFigures) -> None:
    print(f"\n## outreach ({f.customers:,} customers in the schedule index)\n")
    print("| path | figure |")
    print("|---|---|")
    print(
        f"| rule evaluation, 100 active rules | {f.rules_per_s:,.0f} changes/s "
        f"(target >= 20,000: {'met' if f.rules_per_s >= 20_000 else 'MISSED'}) |"
    )
    print(
        f"| scheduler due-scan over {f.customers:,} customers | {f.due:,} due found in "
        f"{f.scan_s * 1000:,.0f} ms (target < 2 s: {'met' if f.scan_s < 2 else 'MISSED'}) |"
    )
    print(f"| (filling the index for the scan: {f.filled_s:.1f} s, not part of any tick) | |")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=20_000)
    args = parser.parse_args()
    print_figures(await measure(args.customers, args.changes))


if __name__ == "__main__":
    asyncio.run(main())
