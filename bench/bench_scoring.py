"""Scoring throughput beside a bare aiokafka consumer reading the same topic, same run.

    python -m bench.bench_scoring [--customers 5000] [--orders 10]

Both read the same events from the beginning of a fresh topic. The bare consumer only reads;
scoring decodes, applies each event in its customer's state, builds the new card, and commits
inbox, states, history and outbox in one PostgreSQL transaction per batch — as the service
does — into a fresh database.

A third figure bounds what any I/O work could reach: scoring's core alone on the same
events, in this process, with no Kafka and no database (decode the record, apply it, build
the card, encode the change), timed in CPU seconds of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from bench import pg_time
from services.scoring.core.card import score
from services.scoring.core.changes import event_change
from services.scoring.core.state import CustomerState, apply
from services.scoring.settings import ScoringSettings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from shared.clock import SystemClock
from shared.consumer import BatchConsumer
from shared.db import create_database, drop_database, make_engine
from shared.events import Envelope, EventType, OrderData, OrderStatus
from shared.heap import settle_heap
from shared.kafka import Record, publish_many, start_producer
from shared.kafka_security import client_kwargs
from shared.migrate import upgrade_all
from shared.settings import CommonSettings
from shared.topics import Topics, ensure_topics


def history(customers: int, orders: int, seed: int = 1) -> list[Envelope]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for c in range(customers):
        t = now - timedelta(days=rng.randint(200, 700))
        for k in range(rng.randint(1, 2 * orders - 1)):
            t += timedelta(days=rng.randint(1, 40))
            if t >= now:
                break
            out.append(
                Envelope(
                    event_id=str(uuid.uuid4()),
                    event_type=EventType.ORDER_PAID,
                    customer_id=f"b{c}",
                    occurred_at=t,
                    received_at=now,
                    source="bench",
                    data=OrderData(
                        order_id=f"b{c}-{k}",
                        status=OrderStatus.PAID,
                        amount=Decimal(rng.randint(500, 20000)) / 100,
                        currency="USD",
                    ),
                )
            )
    out.sort(key=lambda e: e.occurred_at)
    return out


async def bare_consumer(settings: CommonSettings, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(settings),
        group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if started is None and batch:
                started = time.perf_counter()
            seen += sum(len(v) for v in batch.values())
        assert started is not None
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


async def scoring(
    settings: CommonSettings, topic: str, n: int, producer: object
) -> tuple[float, dict[str, float] | None]:
    """Events per second through scoring (from its first committed batch), and the
    statement time its database spent on all ``n`` (:mod:`bench.pg_time`)."""
    name = f"tend_bench_{uuid.uuid4().hex[:8]}"
    own = await create_database(settings, name)
    try:
        await asyncio.to_thread(upgrade_all, own)
        engine = make_engine(own, pool_size=2)
        applier = EventApplier(engine, ScoringSettings(), SystemClock(), PopulationCache())
        settle_heap()  # as the service does once started
        consumer = BatchConsumer(
            settings=own,
            topics=[topic],
            group_id=f"bench-scoring-{uuid.uuid4().hex[:6]}",
            handler=applier.handle,
            dlq_topic=Topics.from_settings(own).dlq,
            dlq_producer=producer,
            max_records=2000,
        )
        pg_before = await pg_time.snapshot(own)
        task = asyncio.create_task(consumer.run())
        started = None
        while consumer.processed < n:
            if started is None and consumer.processed:
                started = time.perf_counter()
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - (started or time.perf_counter())
        consumer.stop()
        await task
        pg = pg_time.spent(pg_before, await pg_time.snapshot(own))
        async with engine.connect() as conn:
            applied = await conn.scalar(text("SELECT count(*) FROM scoring.inbox"))
        assert applied == n, f"applied {applied} of {n}"
        await engine.dispose()
        return n / elapsed, pg
    finally:
        await drop_database(settings, name)


def core_alone(records: list[bytes], repeat: int = 3) -> float:
    """Events per CPU second of one core through scoring's core alone: each record decoded,
    applied to its customer's state, scored and encoded as its change, as the consumer does
    per event, with no Kafka, no database and no cache. The best of ``repeat`` passes (each
    from empty states), so that the figure is the code's and not the machine's neighbours'."""
    settings = ScoringSettings()
    population = PopulationCache().current
    clock = SystemClock()
    best = 0.0
    for _ in range(repeat):
        states: dict[str, CustomerState] = {}
        stages: dict[str, str] = {}
        started = time.process_time()
        for raw in records:
            envelope = Envelope.from_json(raw)
            cid = envelope.customer_id
            state, _ = apply(states.get(cid), envelope, settings)
            states[cid] = state
            card = score(state, clock.now(), population, settings)
            state.hold_complaints(card.tier)
            event_change(envelope, raw, card, stages.get(cid, "prospect"), None)
            stages[cid] = card.stage
        best = max(best, len(records) / max(time.process_time() - started, 1e-9))
    return best


@dataclass(frozen=True)
class ScoringFigures:
    events: int
    customers: int
    bare_per_s: float
    scoring_per_s: float
    core_per_s: float  # scoring's core alone, one core, no I/O (core_alone)
    # Seconds of PostgreSQL statement time on all the events, by group (bench.pg_time).
    pg_spent: dict[str, float] | None = None

    @property
    def ratio(self) -> float:
        return self.scoring_per_s / self.bare_per_s

    @property
    def core_us(self) -> float:
        """CPU microseconds per event of scoring's core alone."""
        return 1e6 / self.core_per_s


async def measure(settings: CommonSettings, customers: int, orders: int) -> ScoringFigures:
    """Publish a history to the events topic of ``settings`` (its prefix names a fresh one),
    then read it bare and through scoring. The topic stays, for other readers of the same
    records (``bench.report`` runs Quix Streams on it)."""
    await ensure_topics(settings)
    topic = Topics.from_settings(settings).events
    events = history(customers, orders)
    records = [e.to_json() for e in events]
    producer = await start_producer(settings)
    try:
        for i in range(0, len(events), 5000):
            await publish_many(
                producer,
                [
                    Record(topic, e.customer_id.encode(), raw)
                    for e, raw in zip(events[i : i + 5000], records[i : i + 5000], strict=True)
                ],
                timeout=60,
            )
        bare = await bare_consumer(settings, topic, len(events))
        scored, pg = await scoring(settings, topic, len(events), producer)
    finally:
        await producer.stop()
    core = core_alone(records)
    return ScoringFigures(len(events), customers, bare, scored, core, pg)


def print_figures(f: ScoringFigures) -> None:
    print(
        f"\n## scoring ({f.events:,} order events, {f.customers:,} customers, "
        f"{os.cpu_count()} cores shared with Kafka and PostgreSQL)\n"
    )
    print("| path | figure |")
    print("|---|---|")
    print(f"| bare aiokafka consumer (read only) | {f.bare_per_s:,.0f} events/s |")
    print(
        f"| scoring: apply, card, inbox + state + outbox commit per batch | "
        f"{f.scoring_per_s:,.0f} events/s |"
    )
    # Issue #19 judges scoring against Quix Streams (bench.bench_quix), not this ceiling.
    print(f"| ratio scoring / bare consumer | {f.ratio:.1%} |")
    print(
        f"| scoring's core alone: decode, apply, card, change; no Kafka, no database; one core "
        f"| {f.core_per_s:,.0f} events/s ({f.core_us:,.0f} µs of CPU per event) |"
    )
    print(
        f"| PostgreSQL statement time per event | "
        f"{pg_time.per_unit(f.pg_spent, f.events, 'event')} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--orders", type=int, default=10)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    settings = CommonSettings().model_copy(update={"topic_prefix": f"bench.{run}."})
    print_figures(await measure(settings, args.customers, args.orders))


if __name__ == "__main__":
    asyncio.run(main())
