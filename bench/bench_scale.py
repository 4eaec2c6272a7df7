"""Memory at scale: each service's resident memory with 1,000,000 customers in the databases,
while a load runs, while scoring refits the population and while outreach's scheduler fires
what came due.

    python -m bench.bench_scale [--customers 1000000] [--orders 5000] [--archetypes 2000]

Seeds a fresh database straight through ``COPY`` (asyncpg's ``copy_records_to_table``) with
rows built the way the services store them: a few thousand archetype customers are built by
scoring's own core (a profile and 0 to 14 paid orders over two years, around a typical
order of each customer's own, so the Gamma-Gamma fit finds its maximum and buyers' cards
carry a CLV and a strategy, applied with
``state.apply`` and scored with ``card.score`` under a population the refit's own
``fit_population`` fitted on them), then copied under a million customer ids — scoring's
facts, listing columns, stage history, order facts and identity rows, outreach's card replica
and a birthday rule's schedule (1% due now), ingest's identity map. The three services then
start as processes (as ``make run`` starts them) and each phase samples every service's VmRSS
(/proc/<pid>/status) every 0.2 s:

- **load**: ``orders`` paid orders of customers drawn from the million, posted to ingest in
  batches of 250 by two clients, until each has its change and its webhook (one rule sends a
  ``care`` webhook per paid order to a receiver in this process);
- **refit**: ``POST /v1/ops/refit`` on scoring, until it answers (both passes over every
  customer, and the refresh changes it writes);
- **overview**: ``GET /v1/stats/overview`` on scoring three times (what the console's first
  page asks: every customer counted by stage, tier, segment and strategy, and the top fifth's
  share of revenue), each read's time noted;
- **due-scan**: ``POST /v1/ops/tick`` on outreach, until it answers (every due birthday
  decided, 2,000 at a time).

The database and the topics are dropped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import orjson
from sqlalchemy.engine import make_url

from bench.bench_e2e import (
    SERVICES,
    TARGET_RSS_MB,
    Batch,
    ChangeWatcher,
    Sampler,
    Stack,
    WebhookReceiver,
    bench_keys,
    configure_outreach,
    fresh_database,
    orders,
    run_load,
    saturating,
)
from services.outreach.core.rules import Rule
from services.outreach.store.rules import save_rule
from services.scoring.core.card import Population, Scored, score
from services.scoring.core.state import CustomerState, apply, from_micros
from services.scoring.settings import ScoringSettings
from services.scoring.shell.refit import fit_population
from services.scoring.store import customers as scoring_store
from services.scoring.store.customers import CustomerRow
from shared.db import make_engine
from shared.events import Consent, CustomerData, Envelope, EventType, OrderData, OrderStatus
from shared.settings import CommonSettings
from tests.support.servers import ServiceProcess

PORTS = {"ingest": 18031, "scoring": 18032, "outreach": 18033}
PHASES = ("load", "refit", "overview", "due-scan")
BIRTHDAY_RULE = "bench-scale-birthday"
DUE_SHARE = 0.01  # of the customers, whose birthday greeting is due when the scan runs
# Every purchase of an archetype, at the end of time (as order_facts keeps them).
_EVERYTHING = 2**62
T = TypeVar("T")


# -- archetypes: real customers built by scoring's core, copied under many ids ------------------


@dataclass(frozen=True)
class Archetype:
    """One customer as the services store them, under a placeholder id (``token``) that each
    copy replaces with its own."""

    token: str
    state: str  # scoring.customers.state
    scored: Scored
    card: str  # the card on the changes topic: outreach.cards.card
    orders: list[tuple[str, datetime, date, Decimal]]  # scoring.order_facts
    tags: list[str]

    def text(self, raw: str, cid: str) -> str:
        return raw.replace(self.token, cid).replace(self.token.lower(), cid)


def _token(k: int) -> str:
    return f"ARCH{k:07d}X"


def archetype_states(n: int, now: datetime, settings: ScoringSettings) -> list[CustomerState]:
    """``n`` customers: a profile (name, email, birthday, consent, a timezone), then 0 to 14
    paid orders at gaps of 1 to 90 days, starting up to two years ago. Each customer has a
    typical order of their own (gamma-distributed across customers, ~$75 on average) and
    each order's amount varies around it: the spread between customers a shop has, which
    the Gamma-Gamma fit needs to find its maximum (with every order drawn from one range,
    its maximum lies at a boundary and the fit is refused, so no seeded card had a CLV)."""
    rng = random.Random(19)
    states = []
    for k in range(n):
        cid = _token(k)
        events = [
            Envelope(
                event_id=str(uuid.UUID(int=rng.getrandbits(128))),
                event_type=EventType.CUSTOMER_UPDATED,
                customer_id=cid,
                occurred_at=now - timedelta(days=800),
                received_at=now,
                source="bench",
                data=CustomerData(
                    name=f"Customer {cid}",
                    email=f"{cid.lower()}@example.com",
                    birthday=date(1950 + k % 50, 1 + k % 12, 1 + k % 28),
                    timezone=rng.choice(["Europe/Berlin", "America/New_York", "Asia/Tokyo"]),
                    consent=Consent(email=True, marketing=True),
                    tags=rng.choice([[], [], ["vip"], ["newsletter"]]),
                ),
            )
        ]
        typical = rng.gammavariate(3.0, 25.0)
        at = now - timedelta(days=rng.randint(30, 730), seconds=rng.randint(0, 86_399))
        for j in range(rng.choice([0, 1, 1, 2, 2, 3, 4, 6, 9, 14])):
            at += timedelta(days=rng.randint(1, 90), seconds=rng.randint(0, 86_399))
            if at >= now:
                break
            events.append(
                Envelope(
                    event_id=str(uuid.UUID(int=rng.getrandbits(128))),
                    event_type=EventType.ORDER_PAID,
                    customer_id=cid,
                    occurred_at=at,
                    received_at=now,
                    source="bench",
                    data=OrderData(
                        order_id=f"o{j}",
                        status=OrderStatus.PAID,
                        amount=max(
                            Decimal("1.00"),
                            Decimal(round(rng.gammavariate(4.0, typical / 4.0), 2)).quantize(
                                Decimal("0.01")
                            ),
                        ),
                        currency="USD",
                    ),
                )
            )
        state: CustomerState | None = None
        for event in events:
            state, _ = apply(state, event, settings)
        assert state is not None
        states.append(state)
    return states


async def fitted_population(
    settings: CommonSettings, states: Sequence[CustomerState], now: datetime
) -> Population:
    """The population scoring's refit fits on these customers alone (stored in force): each
    is copied the same number of times, so the million have the same quantiles and the same
    maximum-likelihood fit, and the bench's refit moves few cards."""
    scoring = ScoringSettings()
    engine = make_engine(settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            await scoring_store.save(
                conn,
                [_row(s, score(s, now, Population(), scoring)) for s in states],
            )
        population, *_ = await fit_population(engine, now, Population(), scoring)
        async with engine.begin() as conn:
            await scoring_store.save_population(conn, population)
            await scoring_store.empty(conn)
    finally:
        await engine.dispose()
    return population


def _row(state: CustomerState, card: Scored) -> CustomerRow:
    """A seeded customer's row, their card published (outreach holds it beside them)."""
    return CustomerRow.of(state, card, card.moving)


def archetypes(
    states: Sequence[CustomerState], population: Population, now: datetime
) -> list[Archetype]:
    settings = ScoringSettings()
    out = []
    for k, state in enumerate(states):
        scored = score(state, now, population, settings)
        out.append(
            Archetype(
                token=_token(k),
                state=state.to_json().decode(),
                scored=scored,
                card=scored.json.decode(),
                orders=[
                    (p.order_id, from_micros(p.at), from_micros(p.at).date(), p.net)
                    for p in state.purchases(_EVERYTHING)
                ],
                tags=CustomerRow.of(state, scored, scored.moving).tags,
            )
        )
    return out


# -- seeding ------------------------------------------------------------------------------------


@dataclass
class Seeded:
    customers: int
    archetypes: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    copy_seconds: dict[str, float] = field(default_factory=dict)  # indexes rebuilt included


def _ids(customers: int, kinds: int) -> Iterator[tuple[str, int]]:
    for i in range(customers):
        yield f"c{i}", i % kinds


async def seed(settings: CommonSettings, customers: int, kinds: int) -> Seeded:
    """Fill the fresh database of ``settings`` with ``customers`` customers (see the module)."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    scoring = ScoringSettings()
    states = archetype_states(kinds, now, scoring)
    population = await fitted_population(settings, states, now)
    types = archetypes(states, population, now)
    rng = random.Random(23)
    seeded = Seeded(customers, kinds, 0.0)
    dsn = make_url(settings.database_url).set(drivername="postgresql")
    # Three connections: the two big tables copy beside the rest, each on a server process.
    pool = await asyncpg.create_pool(
        dsn.render_as_string(hide_password=False), min_size=3, max_size=3
    )

    async def copy(schema: str, table: str, columns: list[str], records: Any) -> None:
        async with pool.acquire() as conn:
            await _copy(conn, schema, table, columns, records)

    async def _copy(
        conn: asyncpg.Connection, schema: str, table: str, columns: list[str], records: Any
    ) -> None:
        # A bulk load's usual order: the secondary indexes are dropped, the rows copied, and
        # the indexes built again from their own definitions (one sort each, not a million
        # insertions); the primary key's stays and checks every row.
        indexes = await conn.fetch(
            """
            SELECT i.indexname, i.indexdef FROM pg_indexes AS i
            WHERE i.schemaname = $1 AND i.tablename = $2 AND NOT EXISTS (
                SELECT 1 FROM pg_constraint AS c
                WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)
            """,
            schema,
            table,
        )
        began = time.perf_counter()
        for index in indexes:
            await conn.execute(f'DROP INDEX "{schema}"."{index["indexname"]}"')
        result = await conn.copy_records_to_table(
            table, schema_name=schema, columns=columns, records=records
        )
        for index in indexes:
            await conn.execute(index["indexdef"])
        seeded.rows[f"{schema}.{table}"] = int(result.split()[-1])
        seeded.copy_seconds[f"{schema}.{table}"] = time.perf_counter() - began

    def customer_rows() -> Iterator[tuple[Any, ...]]:
        for cid, k in _ids(customers, kinds):
            a = types[k]
            s = a.scored
            yield (
                cid,
                a.text(a.state, cid),
                a.text(s.name, cid) if s.name else None,
                a.text(s.email, cid) if s.email else None,
                s.stage,
                s.stage_since,
                s.tier,
                s.segment,
                s.strategy,
                s.value_score,
                s.lifetime_spend,
                s.clv,
                s.p_alive,
                s.last_order_at,
                s.review_at,
                a.text(s.search, cid) if s.search else None,
                a.tags,
                s.member_tier,
                # Published: outreach holds these cards (seeded beside them).
                s.moving.drift,
                orjson.dumps(s.moving.model).decode(),
                now,
            )

    async def scoring_customers() -> None:
        await copy(
            "scoring",
            "customers",
            [
                "customer_id",
                "state",
                "name",
                "email",
                "stage",
                "stage_since",
                "tier",
                "segment",
                "strategy",
                "value_score",
                "lifetime_spend",
                "clv",
                "p_alive",
                "last_order_at",
                "next_transition_at",
                "search",
                "tags",
                "member_tier",
                "published_drift",
                "published_model",
                "updated_at",
            ],
            customer_rows(),
        )

    async def the_rest() -> None:
        await copy(
            "scoring",
            "customer_ids",
            ["customer_id"],
            ((cid,) for cid, _ in _ids(customers, kinds)),
        )
        await copy(
            "scoring",
            "stage_history",
            ["customer_id", "from_stage", "to_stage", "at"],
            (
                (cid, t.from_stage, t.to_stage, t.at)
                for cid, k in _ids(customers, kinds)
                for t in types[k].scored.history
            ),
        )
        await copy(
            "scoring",
            "order_facts",
            ["customer_id", "order_id", "at", "day", "net"],
            ((cid, *o) for cid, k in _ids(customers, kinds) for o in types[k].orders),
        )
        await copy(
            "outreach",
            "schedule",
            ["rule_id", "customer_id", "due_at"],
            (
                (
                    BIRTHDAY_RULE,
                    cid,
                    now - timedelta(minutes=rng.randint(1, 600))
                    if rng.random() < DUE_SHARE
                    else now + timedelta(minutes=rng.randint(1, 525_600)),
                )
                for cid, _ in _ids(customers, kinds)
            ),
        )
        await copy(
            "ingest",
            "identities",
            ["customer_id", "survivor_id", "first_seen"],
            ((cid, cid, now - timedelta(days=800)) for cid, _ in _ids(customers, kinds)),
        )

    async def outreach_cards() -> None:
        await copy(
            "outreach",
            "cards",
            ["customer_id", "card", "complaint_open", "change_at"],
            (
                (cid, types[k].text(types[k].card, cid), False, now)
                for cid, k in _ids(customers, kinds)
            ),
        )

    try:
        await asyncio.gather(scoring_customers(), outreach_cards(), the_rest())
        # The planner's statistics, as autovacuum would have them for tables this old.
        await pool.execute("ANALYZE")
    finally:
        await pool.close()
    engine = make_engine(settings, pool_size=1)
    try:
        async with engine.begin() as sa:
            await save_rule(sa, birthday_rule(), "bench", now)
    finally:
        await engine.dispose()
    seeded.seconds = time.perf_counter() - started
    return seeded


def birthday_rule() -> Rule:
    return Rule.model_validate(
        {
            "id": BIRTHDAY_RULE,
            "name": "Happy birthday (bench)",
            "trigger": {"type": "schedule", "kind": "birthday"},
            "action": {
                "kind": "greeting",
                "channel": "webhook",
                "template": {"body": "Happy birthday, {{ customer.name or 'friend' }}."},
            },
        }
    )


# -- the services, and the phases ---------------------------------------------------------------


@asynccontextmanager
async def seeded_stack(
    customers: int, kinds: int, ports: dict[str, int] = PORTS
) -> AsyncIterator[tuple[Stack, Seeded]]:
    """A fresh database seeded with ``customers``, fresh topics, two API keys and the three
    services as processes; all of it stopped, dropped and deleted on the way out."""
    run = uuid.uuid4().hex[:8]
    env = {
        "TEND_LOG_LEVEL": "WARNING",
        "TEND_OUTREACH_ALLOW_PRIVATE_WEBHOOKS": "true",
        "TEND_SCORING_CONSUMER_GROUP": f"bench-scoring-{run}",
        "TEND_OUTREACH_CONSUMER_GROUP": f"bench-outreach-{run}",
        # The refit and the due-scan run when the bench asks, not on their own timers.
        "TEND_SCORING_REFIT_INTERVAL_SECONDS": "86400",
        "TEND_OUTREACH_SCHEDULER_INTERVAL_SECONDS": "86400",
    }
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"tend-bench-scale-{run}"
    logs.mkdir(parents=True, exist_ok=True)
    async with fresh_database("scale", f"bench.scale.{run}.") as settings:
        seeded = await seed(settings, customers, kinds)
        ingest_key, admin_key = await bench_keys(settings, run)
        services = {
            name: ServiceProcess(name, settings, logs, env, port=ports[name]) for name in SERVICES
        }
        try:
            for service in services.values():
                await asyncio.to_thread(service.start, 180)
            yield Stack(settings, services, ingest_key, admin_key), seeded
        finally:
            for service in services.values():
                await asyncio.to_thread(service.stop)


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    before_mb: dict[str, float]
    peak_mb: dict[str, float]
    note: str


@dataclass(frozen=True)
class ScaleFigures:
    seeded: Seeded
    idle_mb: dict[str, float]  # each service once started, before any phase
    phases: list[Phase]

    def peak(self, service: str) -> float:
        return max(p.peak_mb[service] for p in self.phases)


def order_batches(run: str, n: int, customers: int, per_post: int) -> list[Batch]:
    """``n`` paid orders of customers drawn from the ``customers`` seeded, each after every
    seeded order (an in-order event, as a live shop sends them)."""
    rng = random.Random(29)
    drawn = [f"c{rng.randrange(customers)}" for _ in range(n)]
    return orders(
        run,
        "scale",
        n,
        customers,
        per_post,
        customer_of=drawn.__getitem__,
        apart=timedelta(seconds=1),
    )


async def sampled(stack: Stack, name: str, work: Awaitable[T]) -> tuple[Phase, T]:
    """Run ``work`` (a coroutine) while sampling each service's VmRSS."""
    sampler = Sampler(stack.pids)
    sampling = asyncio.create_task(sampler.run())
    started = time.perf_counter()
    try:
        result = await work
    finally:
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
    seconds = time.perf_counter() - started
    return Phase(name, seconds, dict(sampler.before), dict(sampler.peak), ""), result


async def overview_reads(
    client: httpx.AsyncClient, scoring: str, times: int
) -> list[tuple[float, int]]:
    """``times`` reads of scoring's overview, one after the other: each one's milliseconds and
    the customers it counted."""
    reads = []
    for _ in range(times):
        started = time.perf_counter()
        resp = await client.get(f"{scoring}/v1/stats/overview")
        resp.raise_for_status()
        reads.append(((time.perf_counter() - started) * 1000, resp.json()["customers"]))
    return reads


async def measure(
    customers: int = 1_000_000, orders: int = 5_000, kinds: int = 2_000
) -> ScaleFigures:
    run = uuid.uuid4().hex[:6]
    phases: list[Phase] = []
    async with (
        seeded_stack(customers, kinds) as (stack, seeded),
        WebhookReceiver() as hook,
        ChangeWatcher(stack.settings) as changes,
    ):
        idle = {name: Sampler(stack.pids).before[name] for name in SERVICES}
        await configure_outreach(stack, hook)
        headers = {**stack.auth(stack.ingest_key), "content-type": "application/json"}
        async with httpx.AsyncClient(
            base_url=stack.urls["ingest"], headers=headers, timeout=60
        ) as client:
            batches = order_batches(run, orders, customers, 250)
            phase, load = await sampled(
                stack,
                "load",
                run_load(
                    "load", lambda: saturating(client, batches, 2), changes, hook, max_drain_s=300
                ),
            )
            phases.append(
                replace(
                    phase,
                    note=f"{load.events:,} orders: {load.missing_changes:,} changes and "
                    f"{load.missing_webhooks:,} webhooks not arrived",
                )
            )
        ops = stack.auth(stack.admin_key)
        async with httpx.AsyncClient(headers=ops, timeout=None) as client:
            phase, resp = await sampled(
                stack, "refit", client.post(f"{stack.urls['scoring']}/v1/ops/refit")
            )
            resp.raise_for_status()
            body = resp.json()
            phases.append(
                replace(
                    phase,
                    note=f"{body['customers']:,} customers, {body['buyers']:,} buyers, "
                    f"{body['changed']:,} cards moved",
                )
            )
            phase, reads = await sampled(
                stack, "overview", overview_reads(client, stack.urls["scoring"], 3)
            )
            phases.append(
                replace(
                    phase,
                    note=f"{reads[0][1]:,} customers counted; reads of "
                    + ", ".join(f"{ms:,.0f}" for ms, _ in reads)
                    + " ms",
                )
            )
            phase, resp = await sampled(
                stack, "due-scan", client.post(f"{stack.urls['outreach']}/v1/ops/tick")
            )
            resp.raise_for_status()
            phases.append(replace(phase, note=f"{resp.json()['decided']:,} actions decided"))
    return ScaleFigures(seeded, idle, phases)


def print_figures(f: ScaleFigures) -> None:
    s = f.seeded
    print(
        f"\n## memory at scale ({s.customers:,} customers from {s.archetypes:,} archetypes, "
        f"seeded by COPY in {s.seconds:,.0f} s: "
        + ", ".join(f"{table} {n:,}" for table, n in s.rows.items())
        + ")\n"
    )
    print("| phase | took | " + " | ".join(f"{n} peak VmRSS" for n in SERVICES) + " | |")
    print("|---|---|" + "---|" * len(SERVICES) + "---|")
    print("| started, idle | | " + " | ".join(f"{f.idle_mb[n]:,.0f} MB" for n in SERVICES) + " | |")
    for p in f.phases:
        print(
            f"| {p.name} | {p.seconds:,.1f} s | "
            + " | ".join(f"{p.peak_mb[n]:,.0f} MB" for n in SERVICES)
            + f" | {p.note} |"
        )
    for name in SERVICES:
        peak = f.peak(name)
        verdict = "met" if peak <= TARGET_RSS_MB else "MISSED"
        print(f"- {name}: peak {peak:,.0f} MB (target <= {TARGET_RSS_MB} MB: {verdict})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=5_000)
    parser.add_argument("--archetypes", type=int, default=2_000)
    args = parser.parse_args()
    print_figures(await measure(args.customers, args.orders, args.archetypes))


if __name__ == "__main__":
    asyncio.run(main())
