"""Ingest throughput and latency beside a bare aiokafka producer, on the same broker, same run.

    python -m bench.bench_ingest [--events 100000] [--singles 2000] [--workers 1]

Needs Kafka and PostgreSQL up (``make bench`` brings them). Starts ingest as its own process
(uvicorn + uvloop, as ``make run`` does; ``--workers`` for more), so client and server compete
for the same cores as they would on a small production box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import orjson

from shared.auth import Scope, create_key
from shared.db import make_engine
from shared.events import Envelope, EventType, OrderData, OrderStatus
from shared.kafka import Record, make_producer, publish_many
from shared.settings import CommonSettings
from shared.topics import Topics, ensure_topics

ROOT = Path(__file__).resolve().parent.parent
BATCH = 500


def _order(i: int, run: str) -> dict[str, object]:
    return {
        "type": "order",
        "order_id": f"{run}-o{i}",
        "customer_id": f"{run}-c{i % 5000}",
        "occurred_at": (datetime.now(UTC) - timedelta(days=i % 300)).isoformat(),
        "status": "paid",
        "amount": f"{10 + i % 90}.{i % 100:02d}",
        "currency": "USD",
    }


def _envelopes(n: int, run: str) -> list[Envelope]:
    now = datetime.now(UTC)
    return [
        Envelope(
            event_id=str(uuid.uuid4()),
            event_type=EventType.ORDER_PAID,
            customer_id=f"{run}-c{i % 5000}",
            occurred_at=now - timedelta(days=i % 300),
            received_at=now,
            source="bench",
            data=OrderData(
                order_id=f"{run}-o{i}",
                status=OrderStatus.PAID,
                amount=Decimal(f"{10 + i % 90}.{i % 100:02d}"),
                currency="USD",
            ),
        )
        for i in range(n)
    ]


async def bare_producer(settings: CommonSettings, topic: str, n: int, run: str) -> float:
    """Events/s of aiokafka alone: the same envelopes, serialised the same way, in batches of
    500 awaited like ingest awaits them."""
    envelopes = _envelopes(n, run)
    producer = make_producer(settings)
    await producer.start()
    try:
        started = time.perf_counter()
        for i in range(0, n, BATCH):
            chunk = envelopes[i : i + BATCH]
            await publish_many(
                producer,
                [
                    Record(
                        topic,
                        e.customer_id.encode(),
                        e.to_json(),
                        (("event_type", e.event_type.value.encode()),),
                    )
                    for e in chunk
                ],
                timeout=30,
            )
        return n / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def bare_producer_process(settings: CommonSettings, topic: str, n: int, run: str) -> float:
    """The bare producer's events/s, measured in a process of its own: the peer figure then
    does not depend on what the bench process has imported or allocated before it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_ingest",
        "--bare-topic",
        topic,
        "--events",
        str(n),
        "--run",
        run,
        cwd=ROOT,
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "TEND_TOPIC_PREFIX": settings.topic_prefix,
        },
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the bare producer exited with {proc.returncode}")
    return float(orjson.loads(out.decode().strip().splitlines()[-1])["per_s"])


async def ingest_batches(url: str, key: str, n: int, run: str, concurrency: int) -> float:
    bodies = [
        orjson.dumps({"events": [_order(j, run) for j in range(i, min(i + BATCH, n))]})
        for i in range(0, n, BATCH)
    ]
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                resp = await client.post("/v1/events", content=body, headers=headers)
                assert resp.status_code == 200, resp.text
                assert resp.json()["accepted"] == len(orjson.loads(body)["events"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - started)


async def ingest_singles(url: str, key: str, n: int, run: str) -> tuple[float, float, float]:
    """Sequential single-order posts: req/s and p50/p99 latency in ms."""
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    bodies = [
        orjson.dumps({k: v for k, v in _order(i, run + "s").items() if k != "type"})
        for i in range(n)
    ]
    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        started = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            resp = await client.post("/v1/orders", content=body, headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert resp.status_code == 202, resp.text
        elapsed = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100)
    return n / elapsed, q[49], q[98]


def start_ingest(settings: CommonSettings, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DATABASE_URL": settings.database_url,
        "TEND_TOPIC_PREFIX": settings.topic_prefix,
        "TEND_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "services.ingest.app:create_app",
            "--factory",
            "--port",
            str(port),
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("ingest did not become ready")


@dataclass(frozen=True)
class IngestFigures:
    events: int
    concurrency: int
    singles: int
    bare_per_s: float
    batch_per_s: float
    single_per_s: float
    single_p50_ms: float
    single_p99_ms: float
    workers: int = 1

    @property
    def ratio(self) -> float:
        return self.batch_per_s / self.bare_per_s


async def measure(
    settings: CommonSettings,
    events: int,
    singles: int,
    concurrency: int,
    port: int,
    workers: int = 1,
) -> IngestFigures:
    """The bare producer, then ingest (started on ``port`` with ``workers`` processes, as
    ``make run`` starts it) on the topics of ``settings``."""
    run = uuid.uuid4().hex[:8]
    await ensure_topics(settings)
    topic = Topics.from_settings(settings).events
    engine = make_engine(settings, pool_size=1)
    _, key = await create_key(engine, f"bench-{run}", [Scope.EVENTS_WRITE])
    await engine.dispose()

    bare = await bare_producer_process(settings, topic, events, run + "b")
    proc = start_ingest(settings, port, workers)
    try:
        url = f"http://127.0.0.1:{port}"
        await ingest_batches(url, key, 5_000, run + "w", concurrency)  # warm-up
        batch_rate = await ingest_batches(url, key, events, run, concurrency)
        single_rate, p50, p99 = await ingest_singles(url, key, singles, run)
    finally:
        proc.terminate()
        proc.wait(20)
    return IngestFigures(
        events, concurrency, singles, bare, batch_rate, single_rate, p50, p99, workers
    )


def print_figures(f: IngestFigures) -> None:
    print(
        f"\n## ingest ({f.events:,} order events, batches of {BATCH}, "
        f"{f.concurrency} concurrent clients, ingest on {f.workers} worker processes; "
        f"{os.cpu_count()} cores shared with Kafka, PostgreSQL and the client)\n"
    )
    print("| path | figure |")
    print("|---|---|")
    print(f"| bare aiokafka producer (acks=all, idempotent) | {f.bare_per_s:,.0f} events/s |")
    print(f"| POST /v1/events, batches of {BATCH} | {f.batch_per_s:,.0f} events/s |")
    # The peer of the end-to-end figures in the report (issue #19's targets replace this
    # ratio's old >= 50%).
    print(f"| ratio ingest / bare producer | {f.ratio:.0%} |")
    print(
        f"| POST /v1/orders, one at a time | {f.single_per_s:,.0f} req/s, "
        f"p50 {f.single_p50_ms:.1f} ms, p99 {f.single_p99_ms:.1f} ms |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--singles", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("--workers", type=int, default=1, help="ingest processes (make run: 1)")
    parser.add_argument("--bare-topic", help="only run the bare producer on this topic")
    parser.add_argument("--run", default=uuid.uuid4().hex[:8])
    args = parser.parse_args()
    if args.bare_topic:
        per_s = await bare_producer(CommonSettings(), args.bare_topic, args.events, args.run)
        print(orjson.dumps({"per_s": per_s}).decode())
        return

    run = args.run
    settings = CommonSettings().model_copy(update={"topic_prefix": f"bench.{run}."})
    figures = await measure(
        settings, args.events, args.singles, args.concurrency, args.port, args.workers
    )
    print_figures(figures)


if __name__ == "__main__":
    asyncio.run(main())
