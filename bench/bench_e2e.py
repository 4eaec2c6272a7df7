"""The whole pipeline, end to end: POST /v1/events → scoring → crm.customer-changes.v1 →
outreach → a delivered webhook, with every service in its own process.

    python -m bench.bench_e2e [--rate 1000] [--seconds 20] [--saturation 30000]

Starts ingest, scoring and outreach as separate uvicorn processes (as ``make run`` does) on a
fresh database and a fresh topic prefix, plus, in this process, a webhook receiver that
answers 204 and a consumer of the changes topic. Outreach gets a webhook channel to the
receiver and one rule: every ``order.paid`` fires a ``care`` webhook (transactional, so no
frequency cap or quiet hours hold it), so every order posted yields one change and one
delivered webhook, each timestamped on arrival here against the moment its POST started.

Two runs: a paced sender offering a fixed load (50 orders every 50 ms for 20 s: 1,000/s),
for latency at a rate the pipeline is meant to carry; then saturation (4 clients posting
batches of 500 as fast as ingest takes them), for the sustained rate and the latency when a
backlog builds. Each run has a fresh stack of its own. Each service's resident memory, and
where the CPU went, are sampled during the saturation run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import httpx
import orjson
from aiokafka import AIOKafkaConsumer

from bench import pg_time
from services.outreach.shell.channels.webhook import generate_secret
from shared.auth import Scope, create_key
from shared.db import make_engine
from shared.kafka_security import client_kwargs, start_admin
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support import receivers
from tests.support.databases import fresh_settings
from tests.support.servers import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("ingest", "scoring", "outreach")
PORTS = {"ingest": 18011, "scoring": 18012, "outreach": 18013}
RULE_ID = "bench-care-on-paid-order"
# Issue #19's targets.
TARGET_TO_CHANGE = 4_000  # events/s, POST to change, sustained
TARGET_TO_WEBHOOK = 2_000  # events/s, POST to webhook delivered, sustained
TARGET_P99_MS = 250  # order to change, at 1,000 events/s
TARGET_WEBHOOK_P99_MS = 1_000  # order to webhook, at 1,000 events/s
TARGET_RSS_MB = 300  # per service, with 1,000,000 customers (bench.bench_scale)


# -- the stack: a fresh database, topics, keys and three service processes ----------------------


@dataclass
class Stack:
    settings: CommonSettings
    services: dict[str, ServiceProcess]
    ingest_key: str
    admin_key: str

    @property
    def urls(self) -> dict[str, str]:
        return {name: service.url for name, service in self.services.items()}

    @property
    def pids(self) -> dict[str, int]:
        return {
            name: service.process.pid
            for name, service in self.services.items()
            if service.process is not None
        }

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


async def delete_topics(settings: CommonSettings, wanted: Callable[[str], bool]) -> list[str]:
    """Delete every topic whose name ``wanted`` accepts; the names deleted."""
    admin = await start_admin(settings)
    try:
        names = [t for t in await admin.list_topics() if wanted(t)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


@asynccontextmanager
async def fresh_database(label: str, prefix: str = "") -> AsyncIterator[CommonSettings]:
    """Settings pointing at a new, migrated database (dropped on the way out) and, with a
    ``prefix``, at topics of their own under it (created here, deleted on the way out): the
    tests' own fresh settings, named for the bench."""
    base = CommonSettings().model_copy(update={"topic_prefix": prefix or f"bench.{label}."})
    async with fresh_settings(base, topics=bool(prefix)) as settings:
        yield settings


@asynccontextmanager
async def running_stack(label: str, ports: Mapping[str, int] = PORTS) -> AsyncIterator[Stack]:
    """A fresh database and topics, two API keys and the three services as processes; all of
    it stopped, dropped and deleted on the way out."""
    run = uuid.uuid4().hex[:8]
    env = {
        "TEND_LOG_LEVEL": "WARNING",
        "TEND_OUTREACH_ALLOW_PRIVATE_WEBHOOKS": "true",
        # Groups of their own: the dev stack's services may be consuming under the default
        # names, and one group over two subscriptions would rebalance both.
        "TEND_SCORING_CONSUMER_GROUP": f"bench-scoring-{run}",
        "TEND_OUTREACH_CONSUMER_GROUP": f"bench-outreach-{run}",
    }
    logs = Path(tempfile.mkdtemp(prefix=f"tend-bench-{label}-"))
    async with fresh_database(label, f"bench.{label}.{run}.") as settings:
        ingest_key, admin_key = await bench_keys(settings, run)
        services = {
            name: ServiceProcess(name, settings, logs, env, port=ports[name]) for name in SERVICES
        }
        try:
            for service in services.values():
                await asyncio.to_thread(service.start)
            yield Stack(settings, services, ingest_key, admin_key)
        finally:
            for service in services.values():
                await asyncio.to_thread(service.stop)


# -- what the pipeline delivers, timestamped on arrival -----------------------------------------


class WebhookReceiver(receivers.WebhookReceiver):
    """The tests' receiver (HTTP/1.1 keep-alive, every request answered 200), recording when
    each webhook arrived, by ``webhook-id`` and by the event behind it (the payload's
    ``occurrence``: for an event-triggered rule, the event id). Signatures are not checked
    here: the receiver shares the machine with what it measures."""

    def __init__(self) -> None:
        super().__init__(secret=generate_secret())
        self.by_webhook_id: dict[str, float] = {}
        self.by_event: dict[str, float] = {}
        self.repeats = 0

    async def _record(
        self, path: str, headers: dict[str, str], body: bytes, step: receivers.Step
    ) -> None:
        at = time.time()
        webhook_id = headers.get("webhook-id")
        if webhook_id is None or webhook_id in self.by_webhook_id:
            self.repeats += 1
            return
        self.by_webhook_id[webhook_id] = at
        occurrence = orjson.loads(body).get("occurrence")
        if occurrence is not None:
            self.by_event[occurrence] = at


class ChangeWatcher:
    """Reads the changes topic from its start and records when the change of each event
    arrived here (``change["event"]["event_id"]``), and the change record's own timestamp
    (when scoring's outbox relay produced it)."""

    def __init__(self, settings: CommonSettings) -> None:
        self.arrived: dict[str, float] = {}
        self.produced: dict[str, float] = {}
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._topic = Topics.from_settings(settings).changes
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ChangeWatcher:
        await self._consumer.start()
        self._consumer.subscribe([self._topic])  # no group: every partition, from the start
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    event_id = event_id_of(record.value)
                    if event_id is not None and event_id not in self.arrived:
                        self.arrived[event_id] = now
                        self.produced[event_id] = record.timestamp / 1000


_EVENT = b'"event":{'
_EVENT_ID = b'"event_id":"'


def event_id_of(change: bytes) -> str | None:
    """The id of the event behind a change (``change["event"]["event_id"]``; None for a change
    no event caused), found in its bytes rather than by decoding the whole card: the watcher
    shares the machine with what it measures. Anything unexpected is decoded in full."""
    start = change.find(_EVENT)
    if start >= 0:
        key = change.find(_EVENT_ID, start)
        if key >= 0:
            begin = key + len(_EVENT_ID)
            end = change.find(b'"', begin)
            if end > begin and b"\\" not in change[begin:end]:
                return change[begin:end].decode()
    event = orjson.loads(change).get("event")
    return None if event is None else str(event["event_id"])


# -- resident memory and CPU --------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """VmRSS of ``pid`` in MB (10^6 bytes); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except FileNotFoundError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


class Sampler:
    """Each service's resident memory every ``every`` seconds (the peak is kept), and where
    the machine's CPU went between :meth:`run` starting and :meth:`cpu_shares`."""

    def __init__(self, pids: Mapping[str, int], every: float = 0.2) -> None:
        self.pids = {**pids, "this client": os.getpid()}
        self.every = every
        self.before = {name: rss_mb(pid) for name, pid in pids.items()}
        self.peak = dict(self.before)
        self._cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine0 = machine_seconds()

    async def run(self) -> None:
        while True:
            for name in self.before:
                self.peak[name] = max(self.peak[name], rss_mb(self.pids[name]))
            await asyncio.sleep(self.every)

    def cpu_shares(self) -> dict[str, float]:
        """Each process's share of the machine's CPU capacity since the start, and the rest
        (Kafka, PostgreSQL, anything else on the machine) as ``everything else``."""
        busy0, total0 = self._machine0
        busy1, total1 = machine_seconds()
        capacity = max(total1 - total0, 1e-9)
        shares = {n: (cpu_seconds(p) - self._cpu0[n]) / capacity for n, p in self.pids.items()}
        shares["everything else"] = (busy1 - busy0) / capacity - sum(shares.values())
        return shares


# -- load ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    event_ids: list[str]
    body: bytes


async def bench_keys(settings: CommonSettings, run: str) -> tuple[str, str]:
    """API keys for a bench stack: one that posts events, one for ops and marketing."""
    engine = make_engine(settings, pool_size=1)
    try:
        _, ingest_key = await create_key(engine, f"bench-{run}-ingest", [Scope.EVENTS_WRITE])
        _, admin_key = await create_key(
            engine, f"bench-{run}-admin", [Scope.OPS_READ, Scope.OPS_WRITE, Scope.MARKETING_WRITE]
        )
    finally:
        await engine.dispose()
    return ingest_key, admin_key


def orders(
    run: str,
    phase: str,
    n: int,
    customers: int,
    per_post: int,
    *,
    customer_of: Callable[[int], str] | None = None,
    apart: timedelta = timedelta(minutes=1),
    before: timedelta = timedelta(0),
) -> list[Batch]:
    """``n`` paid orders over ``customers`` customers (the ``i``-th one's ``customer_of(i)``,
    by default ``c{i % customers}``), ``apart`` from each other up to ``before`` now, in POST
    bodies of ``per_post``, each with its own event id (the key for every arrival)."""
    now = datetime.now(UTC) - before
    out = []
    for start in range(0, n, per_post):
        events = [
            {
                "type": "order",
                "event_id": f"{run}-{phase}-{i}",
                "order_id": f"{phase}-{i}",
                "customer_id": customer_of(i) if customer_of else f"c{i % customers}",
                "occurred_at": (now - apart * (n - i)).isoformat(),
                "status": "paid",
                "amount": f"{10 + i % 90}.{i % 100:02d}",
                "currency": "USD",
            }
            for i in range(start, min(start + per_post, n))
        ]
        out.append(Batch([str(e["event_id"]) for e in events], orjson.dumps({"events": events})))
    return out


async def _post(client: httpx.AsyncClient, batch: Batch, sent: dict[str, float]) -> None:
    at = time.time()
    for event_id in batch.event_ids:
        sent[event_id] = at
    resp = await client.post("/v1/events", content=batch.body)
    if resp.status_code != 200 or resp.json()["accepted"] != len(batch.event_ids):
        raise RuntimeError(f"ingest answered {resp.status_code}: {resp.text[:300]}")


async def paced(
    client: httpx.AsyncClient, batches: Sequence[Batch], interval: float
) -> dict[str, float]:
    """One POST every ``interval`` seconds whatever the answers take (an open loop: a slow
    answer does not lower the offered load)."""
    sent: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for k, batch in enumerate(batches):
        delay = start + k * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_post(client, batch, sent)))
    await asyncio.gather(*tasks)
    return sent


async def saturating(
    client: httpx.AsyncClient, batches: Sequence[Batch], concurrency: int
) -> dict[str, float]:
    """``concurrency`` clients, each posting its next batch as soon as the last is answered."""
    sent: dict[str, float] = {}
    queue = list(reversed(batches))

    async def worker() -> None:
        while queue:
            await _post(client, queue.pop(), sent)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sent


# -- one run: send, wait for every change and webhook, measure -----------------------------------


def percentile(values: Sequence[float], p: float, missing: int = 0) -> float:
    """The nearest-rank ``p``-th percentile of ``values`` plus ``missing`` values that never
    came (infinite: a percentile that falls among them is infinite too)."""
    n = len(values) + missing
    if n == 0:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * n))
    ordered = sorted(values)
    return ordered[rank - 1] if rank <= len(ordered) else float("inf")


@dataclass(frozen=True)
class Run:
    name: str
    events: int
    send_s: float  # first POST sent to last POST answered
    posted_per_s: float  # orders / send_s: the rate ingest took them at
    to_change_per_s: float
    to_webhook_per_s: float
    change_p50_ms: float
    change_p99_ms: float
    produced_p99_ms: float
    webhook_p50_ms: float
    webhook_p99_ms: float
    missing_changes: int
    missing_webhooks: int
    max_drain_s: float


async def _drain(
    ids: Sequence[str],
    changes: ChangeWatcher,
    hook: WebhookReceiver,
    stall_s: float,
    max_s: float,
) -> None:
    """Until every id has its change and its webhook, nothing new arrived for ``stall_s``, or
    ``max_s`` passed."""
    started = last_progress = time.monotonic()
    last_count = -1
    wanted = set(ids)  # counted by set operations: the watcher shares this process's core
    while time.monotonic() - started < max_s:
        count = len(wanted & changes.arrived.keys()) + len(wanted & hook.by_event.keys())
        if count == 2 * len(ids):
            return
        if count != last_count:
            last_progress, last_count = time.monotonic(), count
        elif time.monotonic() - last_progress > stall_s:
            return
        await asyncio.sleep(0.2)


async def run_load(
    name: str,
    send: Callable[[], Awaitable[dict[str, float]]],
    changes: ChangeWatcher,
    hook: WebhookReceiver,
    *,
    stall_s: float = 60,
    max_drain_s: float = 600,
) -> Run:
    """Send, then wait (after the last POST is answered) for what the sends cause."""
    sent = await send()
    first = min(sent.values())
    send_s = time.time() - first
    ids = list(sent)
    await _drain(ids, changes, hook, stall_s, max_drain_s)
    got_changes = [i for i in ids if i in changes.arrived]
    got_hooks = [i for i in ids if i in hook.by_event]
    change_ms = [(changes.arrived[i] - sent[i]) * 1000 for i in got_changes]
    produced_ms = [(changes.produced[i] - sent[i]) * 1000 for i in got_changes]
    hook_ms = [(hook.by_event[i] - sent[i]) * 1000 for i in got_hooks]
    last_change = max((changes.arrived[i] for i in got_changes), default=first)
    last_hook = max((hook.by_event[i] for i in got_hooks), default=first)
    no_change, no_hook = len(ids) - len(got_changes), len(ids) - len(got_hooks)
    return Run(
        name=name,
        events=len(ids),
        send_s=send_s,
        posted_per_s=len(ids) / send_s,
        to_change_per_s=len(got_changes) / (last_change - first) if got_changes else 0.0,
        to_webhook_per_s=len(got_hooks) / (last_hook - first) if got_hooks else 0.0,
        change_p50_ms=percentile(change_ms, 50, no_change),
        change_p99_ms=percentile(change_ms, 99, no_change),
        produced_p99_ms=percentile(produced_ms, 99, no_change),
        webhook_p50_ms=percentile(hook_ms, 50, no_hook),
        webhook_p99_ms=percentile(hook_ms, 99, no_hook),
        missing_changes=no_change,
        missing_webhooks=no_hook,
        max_drain_s=max_drain_s,
    )


async def configure_outreach(stack: Stack, hook: WebhookReceiver) -> None:
    """The receiver as the webhook channel, no cap or quiet hours, and the one rule."""
    async with httpx.AsyncClient(
        base_url=stack.urls["outreach"], headers=stack.auth(stack.admin_key), timeout=30
    ) as client:
        answers = [
            await client.post(
                "/v1/channels",
                json={
                    "id": "bench-receiver",
                    "kind": "webhook",
                    "config": {"url": hook.url},
                    "secret": hook.secret,
                },
            ),
            await client.put("/v1/policy", json={"quiet_hours": None, "frequency_cap": None}),
            await client.post(
                "/v1/rules",
                json={
                    "id": RULE_ID,
                    "name": "Thank every paid order (bench)",
                    "trigger": {"type": "event", "event": "order.paid"},
                    "action": {
                        "kind": "care",
                        "channel": "webhook",
                        "template": {
                            "subject": "Thank you",
                            "body": "Thank you for your order, {{ customer.name or 'friend' }}.",
                        },
                    },
                },
            ),
        ]
    for resp in answers:
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"outreach answered {resp.status_code}: {resp.text[:300]}")


# -- the whole bench ----------------------------------------------------------------------------


@dataclass(frozen=True)
class E2EFigures:
    customers: int
    fixed: Run
    saturated: Run
    rss_before_mb: dict[str, float]
    rss_peak_mb: dict[str, float]
    # Shares of the machine's CPU capacity during the saturation run, from its first POST to
    # its last change and to its last webhook.
    cpu_share: dict[str, dict[str, float]]
    # PostgreSQL's statement time in the same windows, in seconds by service
    # (:mod:`bench.pg_time`); None where the server keeps no statement statistics.
    pg_spent: dict[str, dict[str, float] | None]


@asynccontextmanager
async def pipeline(
    run: str, customers: int, ports: Mapping[str, int]
) -> AsyncIterator[tuple[Stack, WebhookReceiver, ChangeWatcher, httpx.AsyncClient]]:
    """A fresh stack wired to a receiver, with a consumer of its changes and a client of its
    ingest, warmed up as a shop that has run a while: consumer groups joined, connections
    open, the rule compiled, every one of the ``customers`` with an order behind them, and
    the planner's statistics taken of that (:func:`analyze`)."""
    async with (
        running_stack("e2e", ports) as stack,
        WebhookReceiver() as hook,
        ChangeWatcher(stack.settings) as changes,
    ):
        await configure_outreach(stack, hook)
        headers = {**stack.auth(stack.ingest_key), "content-type": "application/json"}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=stack.urls["ingest"], headers=headers, timeout=60, limits=limits
        ) as client:
            # A month before the measured orders (which reach back two weeks at most), so
            # that those come in order, as a shop's do.
            warm = orders(run, "warm", customers, customers, 500, before=timedelta(days=30))
            await run_load("warm-up", lambda: saturating(client, warm, 2), changes, hook)
            await analyze(stack.settings)
            yield stack, hook, changes, client


async def analyze(settings: CommonSettings) -> None:
    """Bring the planner's statistics up to what the warm-up wrote, as autovacuum does by
    itself within its first minute on a live database (its ``autovacuum_naptime``).

    A fresh database's tables were empty when the services' statements were first planned;
    the generic plans they cache then (a sequential scan of a "tiny" table, a hash join)
    would be kept for the whole of a run that ends before autovacuum's first pass, and the
    bench would measure a database no running shop has: with a thousand customers seeded,
    ingest's claim still scanned every key a run had written by its end, for every POST."""
    engine = make_engine(settings, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("ANALYZE")
    finally:
        await engine.dispose()


async def measure(
    *,
    rate: int = 1000,
    seconds: float = 20,
    saturation: int = 15_000,
    customers: int = 10_000,
    concurrency: int = 4,
    max_drain_s: float = 120,
    ports: Mapping[str, int] = PORTS,
) -> E2EFigures:
    """The fixed load, then saturation, each on a stack of its own (what one run leaves
    queued must not slow the next); each waits up to ``max_drain_s`` after its last POST for
    its changes and webhooks."""
    run = uuid.uuid4().hex[:6]
    interval = 0.05
    per_tick = max(1, round(rate * interval))
    ticks = round(seconds / interval)
    async with pipeline(run, customers, ports) as (_, hook, changes, client):
        batches = orders(run, "fixed", ticks * per_tick, customers, per_tick)
        fixed = await run_load(
            f"{round(per_tick / interval):,} events/s",
            lambda: paced(client, batches, interval),
            changes,
            hook,
            max_drain_s=max_drain_s,
        )
    async with pipeline(run, customers, ports) as (stack, hook, changes, client):
        batches = orders(run, "sat", saturation, customers, 500)
        pg_before = await pg_time.snapshot(stack.settings)
        sampler = Sampler(stack.pids)

        async def cpu_once_changed() -> tuple[dict[str, float], dict[str, float] | None]:
            pending = {i for b in batches for i in b.event_ids}
            while pending:
                await asyncio.sleep(0.1)
                pending -= changes.arrived.keys()
            shares = sampler.cpu_shares()
            return shares, pg_time.spent(pg_before, await pg_time.snapshot(stack.settings))

        sampling = asyncio.create_task(sampler.run())
        changed = asyncio.create_task(cpu_once_changed())
        try:
            saturated = await run_load(
                "saturation",
                lambda: saturating(client, batches, concurrency),
                changes,
                hook,
                max_drain_s=max_drain_s,
            )
            cpu = {"to the last webhook": sampler.cpu_shares()}
            pg = {
                "to the last webhook": pg_time.spent(
                    pg_before, await pg_time.snapshot(stack.settings)
                )
            }
            if changed.done():
                cpu = {"to the last change": changed.result()[0], **cpu}
                pg = {"to the last change": changed.result()[1], **pg}
        finally:
            sampling.cancel()
            changed.cancel()
            await asyncio.gather(sampling, changed, return_exceptions=True)
    return E2EFigures(customers, fixed, saturated, sampler.before, sampler.peak, cpu, pg)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def ms(value: float, run: Run) -> str:
    """A latency in ms; one that falls among events that never arrived says so."""
    if math.isinf(value):
        return f"> {run.max_drain_s:,.0f} s after the last POST (never arrived)"
    return f"{value:,.0f} ms"


def latencies(run: Run) -> str:
    return (
        f"order→change p50 {ms(run.change_p50_ms, run)}, p99 {ms(run.change_p99_ms, run)}; "
        f"order→webhook p50 {ms(run.webhook_p50_ms, run)}, p99 {ms(run.webhook_p99_ms, run)}"
    )


def cpu_split(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in shares.items())


def print_figures(f: E2EFigures) -> None:
    fx, sat = f.fixed, f.saturated
    print(
        f"\n## end to end (ingest → scoring → changes → outreach → webhook; {f.customers:,} "
        f"customers; {os.cpu_count()} cores shared by 3 services, Kafka, PostgreSQL and this "
        "client)\n"
    )
    print("| run | figure |")
    print("|---|---|")
    print(
        f"| saturation: {sat.events:,} orders, 4 clients x batches of 500 | posted at "
        f"{sat.posted_per_s:,.0f}/s; to change {sat.to_change_per_s:,.0f} events/s (target "
        f">= {TARGET_TO_CHANGE:,}: {verdict(sat.to_change_per_s >= TARGET_TO_CHANGE)}), to "
        f"webhook {sat.to_webhook_per_s:,.0f} events/s (target >= {TARGET_TO_WEBHOOK:,}: "
        f"{verdict(sat.to_webhook_per_s >= TARGET_TO_WEBHOOK)}) |"
    )
    print(f"| saturation latency | {latencies(sat)} |")
    print(
        f"| fixed load {fx.name} ({fx.events:,} orders in 50 ms ticks, posted at "
        f"{fx.posted_per_s:,.0f}/s) | {latencies(fx)} (target p99 order→change <= "
        f"{TARGET_P99_MS} ms: {verdict(fx.change_p99_ms <= TARGET_P99_MS)}; p99 "
        f"order→webhook <= {TARGET_WEBHOOK_P99_MS:,} ms: "
        f"{verdict(fx.webhook_p99_ms <= TARGET_WEBHOOK_P99_MS)}) |"
    )
    print(
        f"| order→change p99 by the change record's own timestamp (produced, not read) | "
        f"{ms(fx.produced_p99_ms, fx)} at {fx.name}, {ms(sat.produced_p99_ms, sat)} at "
        "saturation |"
    )
    for r in (fx, sat):
        if r.missing_changes or r.missing_webhooks:
            print(
                f"| {r.name}: not arrived {r.max_drain_s:,.0f} s after the last POST | "
                f"{r.missing_changes:,} changes, {r.missing_webhooks:,} webhooks |"
            )
    for window, shares in f.cpu_share.items():
        print(f"| CPU, saturation run, first POST {window} | {cpu_split(shares)} |")
    for window, seconds in f.pg_spent.items():
        print(
            f"| PostgreSQL statement time, saturation run, first POST {window} | "
            f"{pg_time.per_unit(seconds, sat.events)} |"
        )
    for name in SERVICES:
        peak = f.rss_peak_mb[name]
        print(
            f"| {name} resident memory, peak under saturation ({f.customers:,} customers; "
            f"the target at 1M is bench.bench_scale's) | {peak:,.0f} MB (before "
            f"{f.rss_before_mb[name]:,.0f} MB) |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--saturation", type=int, default=15_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--max-drain", type=float, default=120)
    args = parser.parse_args()
    print_figures(
        await measure(
            rate=args.rate,
            seconds=args.seconds,
            saturation=args.saturation,
            customers=args.customers,
            max_drain_s=args.max_drain,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
