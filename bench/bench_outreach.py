"""Outreach: rule evaluation throughput with 100 active rules, the scheduler's due-scan over
1M customers, and outreach's resident memory while it backtests a rule over 200,000 changes.

    python -m bench.bench_outreach [--customers 1000000] [--backtest-changes 200000]

The due-scan fills a fresh database with a million customers' replica rows and schedule rows
(1% due now, the rest spread over the coming year) and times what the scheduler does each
tick: find every due (rule, customer) with its card, through the ``due_at`` index.

The backtest publishes visits of 26,000 customers (full sample cards) spread over the last 20
days to the changes topic of a fresh stack, starts outreach as a process of its own (its
consumer starts after that history), and samples the process's VmRSS while
``POST /v1/rules/{id}/backtest`` replays every one of them with a rule that fires on each.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from services.outreach.core.rules import Rule, RuleSet
from services.outreach.core.templates import SAMPLE_CARD
from shared.auth import Scope, create_key
from shared.changes import Change
from shared.db import create_database, drop_database, make_engine
from shared.migrate import upgrade_all
from shared.settings import CommonSettings
from shared.topics import Topics

# -- rule evaluation ----------------------------------------------------------------------------


class BenchResult(BaseModel):
    """The figures of one :func:`benchmark` run."""

    changes: int
    rules: int
    matches: int
    seconds: float
    changes_per_second: float


_BENCH_CONDITIONS: list[dict[str, Any]] = [
    {"in": ["tier", ["key", "regular"]]},
    {"gt": ["value.lifetime_spend", "500"]},
    {"gte": ["value.orders", 3]},
    {"not": {"has_tag": "do_not_disturb"}},
    {"between": ["rfm.recency", 2, 5]},
    {"lt": ["value.last_order_at", "2025-05-01T00:00:00Z"]},
    {"eq": ["profile.consent.marketing", True]},
    {"in": ["rfm.segment", ["champions", "loyal", "at_risk"]]},
]
_ORDER = {"order_id": "o-1", "currency": "EUR"}
_BENCH_EVENTS: dict[str, dict[str, Any]] = {
    "order.placed": {**_ORDER, "amount": "59.90", "status": "placed"},
    "order.paid": {**_ORDER, "amount": "120.00", "status": "paid"},
    "order.refunded": {**_ORDER, "amount": "20.00", "status": "refunded"},
    "complaint.opened": {"complaint_id": "k-1", "severity": "high", "status": "opened"},
    "complaint.resolved": {"complaint_id": "k-1", "severity": "low", "status": "resolved"},
    "visit.recorded": {"visit_id": "v-1", "channel": "web"},
    "customer.updated": {"name": "Ada"},
}


def _bench_rule(i: int, rng: random.Random) -> Rule:
    trigger: dict[str, Any]
    if i % 5 < 3:  # 60% event rules, spread over the event types
        event = list(_BENCH_EVENTS)[i % len(_BENCH_EVENTS)]
        trigger = {"type": "event", "event": event}
        if event.startswith("order."):
            trigger["filters"] = {"gt": ["amount", rng.choice(["10", "50", "100"])]}
    elif i % 5 == 3:
        trigger = {"type": "stage", "to": [rng.choice(["declining", "churned", "mature"])]}
    else:
        trigger = {"type": "schedule", "kind": "birthday"}
    return Rule.model_validate(
        {
            "id": f"bench-{i:03d}",
            "name": f"bench {i}",
            "trigger": trigger,
            "priority": i % 7,
            "conditions": {"all": rng.sample(_BENCH_CONDITIONS, rng.randint(1, 3))},
            "action": {
                "kind": "greeting",
                "channel": "webhook",
                "template": {"body": "Hello {{ customer.name }}"},
            },
        }
    )


def _bench_change(i: int, rng: random.Random, cards: list[dict[str, Any]]) -> Change:
    event_type = rng.choice(list(_BENCH_EVENTS))
    at = "2025-06-01T00:00:00Z"
    moved = {"from": "mature", "to": "declining", "at": at}
    customer_id = f"c{i % 1000}"
    return Change.model_validate(
        {
            "change_id": f"ch-{i}",
            "customer_id": customer_id,
            "cause": "event",
            "at": at,
            "event": {
                "event_id": f"ev-{i}",
                "event_type": event_type,
                "customer_id": customer_id,
                "occurred_at": at,
                "received_at": at,
                "source": "bench",
                "data": _BENCH_EVENTS[event_type],
            },
            "card": rng.choice(cards),
            "stage_change": moved if i % 10 == 0 else None,
        }
    )


def benchmark(changes: int = 20_000, rules: int = 100, seed: int = 7) -> BenchResult:
    """Time :meth:`RuleSet.match` over ``changes`` synthetic changes (as the consumer reads
    them) and ``rules`` active rules (60% event, 20% stage, 20% schedule); the figure to watch
    is ``changes_per_second``."""
    rng = random.Random(seed)
    ruleset = RuleSet(_bench_rule(i, rng) for i in range(rules))
    cards = []
    for _ in range(64):
        card = dict(SAMPLE_CARD)
        card["tier"] = rng.choice(["key", "regular", "low"])
        card["value"] = {**card["value"], "lifetime_spend": str(rng.randint(0, 2000))}
        card["profile"] = {**card["profile"], "tags": rng.choice([[], ["vip"], ["do_not_disturb"]])}
        cards.append(card)
    stream = [_bench_change(i, rng, cards) for i in range(changes)]
    start = time.perf_counter()
    matches = sum(len(ruleset.match(change)) for change in stream)
    seconds = time.perf_counter() - start
    return BenchResult(
        changes=changes,
        rules=rules,
        matches=matches,
        seconds=seconds,
        changes_per_second=changes / seconds if seconds > 0 else float("inf"),
    )


# -- the scheduler's due-scan -------------------------------------------------------------------

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


# -- a backtest's memory -------------------------------------------------------------------------

TARGET_BACKTEST_RSS_MB = 300
BACKTEST_CUSTOMERS = 26_000
_BACKTEST_RULE: dict[str, Any] = {
    "id": "bench-recall",
    "name": "recall after every visit",
    "trigger": {"type": "event", "event": "visit.recorded"},
    "action": {"kind": "recall", "channel": "webhook", "template": {"body": "Hi"}},
}


@dataclass(frozen=True)
class BacktestFigures:
    changes: int  # replayed, as the answer's coverage says
    customers: int
    complete: bool
    seconds: float
    rss_before_mb: float
    rss_peak_mb: float  # the highest VmRSS sampled while the backtest ran
    hwm_mb: float  # VmHWM afterwards: the process's peak over its whole life


def _status_mb(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` memory field in MB (10^6 bytes); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except FileNotFoundError:
        pass
    return 0.0


async def backtest_memory(changes: int, customers: int = BACKTEST_CUSTOMERS) -> BacktestFigures:
    """Outreach's resident memory while it backtests a rule over ``changes`` changes."""
    # The tests' support brings the services' apps: imported only when this part runs.
    from tests.support.databases import fresh_settings
    from tests.support.history import publish_visits, skip_to_end
    from tests.support.servers import ServiceProcess

    base = CommonSettings().model_copy(
        update={"topic_prefix": f"bench.backtest.{uuid.uuid4().hex[:8]}."}
    )
    async with fresh_settings(base) as settings:
        engine = make_engine(settings, pool_size=1)
        try:
            _, key = await create_key(
                engine, "bench-backtest", [Scope.OPS_READ, Scope.MARKETING_WRITE]
            )
        finally:
            await engine.dispose()
        bootstrap, topic = settings.kafka_bootstrap_servers, Topics.from_settings(settings).changes
        now = datetime.now(UTC)
        await publish_visits(
            bootstrap,
            topic,
            changes=changes,
            customers=customers,
            start=now - timedelta(days=20),
            end=now,
            card=SAMPLE_CARD,
        )
        group = f"{settings.topic_prefix}outreach"
        await skip_to_end(bootstrap, topic, group)
        logs = Path(tempfile.mkdtemp(prefix="tend-bench-backtest-"))
        env = {"TEND_OUTREACH_CONSUMER_GROUP": group, "TEND_LOG_LEVEL": "WARNING"}
        outreach = ServiceProcess("outreach", settings, logs, env)
        await asyncio.to_thread(outreach.start)
        try:
            assert outreach.process is not None
            pid = outreach.process.pid
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=outreach.url, timeout=600) as client:
                made = await client.post("/v1/rules", json=_BACKTEST_RULE, headers=headers)
                made.raise_for_status()
                before = peak = _status_mb(pid, "VmRSS")
                started = time.perf_counter()
                call = asyncio.create_task(
                    client.post(
                        f"/v1/rules/{_BACKTEST_RULE['id']}/backtest",
                        params={"days": 30},
                        headers=headers,
                    )
                )
                while not call.done():
                    peak = max(peak, _status_mb(pid, "VmRSS"))
                    await asyncio.sleep(0.05)
                seconds = time.perf_counter() - started
                answer = (await call).raise_for_status().json()
                hwm = _status_mb(pid, "VmHWM")
        finally:
            await asyncio.to_thread(outreach.stop)
    coverage = answer["coverage"]
    return BacktestFigures(
        coverage["changes"], coverage["customers"], coverage["complete"], seconds, before, peak, hwm
    )


def print_backtest(f: BacktestFigures) -> None:
    print(
        f"\n## outreach backtest ({f.changes:,} changes of {f.customers:,} customers replayed, "
        f"complete: {f.complete})\n"
    )
    print("| measure | figure |")
    print("|---|---|")
    verdict = "met" if f.rss_peak_mb <= TARGET_BACKTEST_RSS_MB else "MISSED"
    print(
        f"| outreach resident (VmRSS), peak during the backtest | {f.rss_peak_mb:,.0f} MB "
        f"(before: {f.rss_before_mb:,.0f} MB; VmHWM {f.hwm_mb:,.0f} MB; target <= "
        f"{TARGET_BACKTEST_RSS_MB} MB: {verdict}) |"
    )
    print(f"| the backtest's answer | {f.seconds:,.1f} s |")


@dataclass(frozen=True)
class OutreachFigures:
    customers: int
    rules_per_s: float
    filled_s: float
    due: int
    scan_s: float
    backtest: BacktestFigures | None = None


async def measure(customers: int, changes: int, backtest_changes: int = 0) -> OutreachFigures:
    rules = benchmark(changes=changes, rules=100)
    filled, due, scan = await due_scan(customers)
    backtest = await backtest_memory(backtest_changes) if backtest_changes else None
    return OutreachFigures(customers, rules.changes_per_second, filled, due, scan, backtest)


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
    if f.backtest is not None:
        print_backtest(f.backtest)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--backtest-changes", type=int, default=200_000)
    parser.add_argument(
        "--only-backtest", action="store_true", help="measure the backtest's memory alone"
    )
    args = parser.parse_args()
    if args.only_backtest:
        print_backtest(await backtest_memory(args.backtest_changes))
        return
    print_figures(await measure(args.customers, args.changes, args.backtest_changes))


if __name__ == "__main__":
    asyncio.run(main())
