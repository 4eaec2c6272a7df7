"""The service runtime: what every service process runs on, started and stopped in one order.

A service describes itself once — its name, its routers, and a ``start`` function that builds
its own parts on a :class:`Runtime` — and :func:`service_app` does the rest the same way for
all: the database engine, the Kafka producer, the API-key store, the workers (consumers,
relays, delivery) and the periodic jobs, then on shutdown the workers asked to finish the pass
in progress and awaited, the periodic jobs cancelled, the producer flushed and the engine
closed.

What a service holds while it runs is a typed :class:`~shared.service_state.ServiceState`
(the app's ``state``), which its routes reach by dependency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Protocol

from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import KeyStore
from shared.clock import Clock, SystemClock
from shared.consumer import BatchConsumer, Handler, Message, Touches
from shared.db import answers_promptly, make_engine
from shared.heap import settle_heap
from shared.http import ReadinessCheck, create_app, database_and_broker
from shared.kafka import Producer, start_producer
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.periodic import every
from shared.production import kafka_problems, refuse_insecure
from shared.service_state import S, ServiceState
from shared.settings import CommonSettings
from shared.signals import refresh_backlog, refresh_lag
from shared.supervisor import Supervisor
from shared.topics import Topics

log = get_logger(__name__)

# How long a worker may take to finish its pass at shutdown before it is left behind.
STOP_SECONDS = 30
# A consumed batch of at most this many records has its outbox rows published before the
# next batch is taken (OutboxRelay.publish_now). A larger one means a backlog: there the relay
# publishing while the next batch is worked on carries more events a second, and that decides
# the latency (a pass of 2,000 changes took half a second and more on a busy 2-core machine:
# waited for in line, it would be added to every batch).
PUBLISH_AT_ONCE_RECORDS = 500
# A consumer's batch keeps hitting the statement timeout: if the database answers SELECT 1
# within this, the batch is to blame, not the database (see shared.consumer).
PROBE_SECONDS = 1.0


class Running(Protocol):
    """A worker the runtime starts and stops: a consumer, a relay, a delivery loop."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Nudged(Protocol):
    """A worker told there is new work (a relay, a delivery loop)."""

    def nudge(self) -> None: ...


class Runtime:
    """The shared parts a service's ``start`` builds on, and the place it registers its
    workers and periodic jobs."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state
        self._workers: list[tuple[str, Running]] = []
        self._jobs: list[tuple[float, str, Callable[[], Awaitable[object]], bool]] = []

    @property
    def engine(self) -> AsyncEngine:
        return self.state.engine

    @property
    def producer(self) -> Producer:
        return self.state.producer

    @property
    def topics(self) -> Topics:
        return self.state.topics

    @property
    def clock(self) -> Clock:
        return self.state.clock

    def worker(self, worker: Running, name: str | None = None) -> None:
        """Run ``worker`` for the life of the service, supervised under ``name`` (its class's
        by default); stopped in the order registered."""
        self._workers.append((name or type(worker).__name__, worker))

    def every(
        self,
        seconds: float,
        name: str,
        job: Callable[[], Awaitable[object]],
        *,
        at_start: bool = False,
    ) -> None:
        """Run ``job`` every ``seconds`` (first at once with ``at_start``); a failed round is
        logged and the next tries again."""
        self._jobs.append((seconds, name, job, at_start))

    def outbox_relay(
        self,
        *,
        table: str,
        topic: str,
        lock_key: int,
        batch: int = 2000,
        idle_seconds: float = 0.05,
    ) -> OutboxRelay:
        """A relay publishing ``table`` to ``topic``, run as the worker ``relay:<table>``; the
        table's backlog is a metric (:func:`shared.signals.refresh_backlog`)."""
        relay = OutboxRelay(
            engine=self.engine,
            producer=self.producer,
            table=table,
            topic=topic,
            lock_key=lock_key,
            batch=batch,
            idle_seconds=idle_seconds,
        )
        self.worker(relay, f"relay:{table}")
        self.every(
            self.state.common.signals_interval_seconds,
            f"signals:{table}",
            lambda: refresh_backlog(self.engine, table, self.clock.now()),
            at_start=True,
        )
        return relay

    def batch_consumer(
        self,
        *,
        topics: Sequence[str],
        group_id: str,
        handler: Handler,
        max_records: int,
        then_nudge: Sequence[Nudged] = (),
        overlap_by: Touches | None = None,
    ) -> BatchConsumer:
        """A consumer of ``topics`` in ``group_id`` whose poison records go to the DLQ, run as
        the worker ``consumer`` (registered first, so it stops first). After each batch it
        nudges the workers ``then_nudge``; a relay among them (of the outbox rows the batch
        wrote) publishes them before the next batch is taken, when the batch is small
        (:data:`PUBLISH_AT_ONCE_RECORDS`).
        Its lag per partition is a metric (:func:`shared.signals.refresh_lag`).
        ``overlap_by``: what each record touches, for overlapped batches
        (:mod:`shared.consumer`)."""

        async def handle(records: Sequence[Message]) -> Sequence[tuple[Message, Exception]] | None:
            rejected = await handler(records)
            if len(records) > PUBLISH_AT_ONCE_RECORDS:
                for worker in then_nudge:
                    worker.nudge()
                return rejected
            for worker in others:
                worker.nudge()
            # The batch's rows leave before the next batch is taken, not when the loop next
            # has a moment (shared.outbox); each relay reads on its own connection, at once.
            await asyncio.gather(*(relay.publish_now() for relay in relays))
            return rejected

        relays = [w for w in then_nudge if isinstance(w, OutboxRelay)]
        others = [w for w in then_nudge if not isinstance(w, OutboxRelay)]

        consumer = BatchConsumer(
            settings=self.state.common,
            topics=list(topics),
            group_id=group_id,
            handler=handle if then_nudge else handler,
            dlq_topic=self.topics.dlq,
            dlq_producer=self.producer,
            max_records=max_records,
            probe=lambda: answers_promptly(self.engine, PROBE_SECONDS),
            overlap_by=overlap_by,
        )
        self._workers.insert(0, ("consumer", consumer))
        common = self.state.common
        self.every(
            common.signals_interval_seconds,
            "signals:consumer_lag",
            lambda: refresh_lag(common, group_id, topics),
            at_start=True,
        )
        return consumer

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Workers and periodic jobs run inside this block, supervised (a task that dies
        is started again; see :mod:`shared.supervisor`); leaving it stops them in order."""
        supervisor = Supervisor(
            self.state.service, first_backoff=self.state.common.task_restart_seconds
        )
        self.state.supervisor = supervisor
        for name, worker in self._workers:
            supervisor.start(name, worker.run, stop=worker.stop)
        for seconds, name, job, first in self._jobs:
            supervisor.start(name, partial(every, seconds, name, job, at_start=first))
        try:
            yield
        finally:
            await supervisor.stop(STOP_SECONDS)


def tasks_running(state: ServiceState) -> dict[str, ReadinessCheck]:
    """A readiness check ``task:<name>`` per supervised task: false while it is down."""
    supervisor: Supervisor | None = getattr(state, "supervisor", None)
    if supervisor is None:
        return {}

    def check(name: str) -> ReadinessCheck:
        async def running() -> bool:
            return name not in supervisor.down()

        return running

    return {f"task:{name}": check(name) for name in supervisor.names()}


def service_app(
    *,
    service: str,
    state: S,
    title: str,
    description: str,
    start: Callable[[Runtime], Awaitable[Callable[[], Awaitable[None]] | None]],
    routers: Iterable[APIRouter],
    port: int,
    common: CommonSettings | None = None,
    clock: Clock | None = None,
    engine: Callable[[CommonSettings], AsyncEngine] = make_engine,
    form_paths: tuple[str, ...] = (),
    describe: Callable[[dict[str, Any]], None] | None = None,
    insecure: Iterable[str] = (),
) -> FastAPI:
    """A service's FastAPI app on the shared runtime.

    ``state`` is the service's own (empty) :class:`ServiceState`; ``start`` fills in the
    service's parts and registers its workers and jobs, and may return a function that
    releases what it opened (HTTP clients, say), called after the workers stop. ``describe``
    edits the OpenAPI document (see :func:`shared.http.create_app`). ``insecure``: the
    service's own settings that production refuses (see :mod:`shared.production`); raises
    :class:`~shared.production.InsecureSettings` in production when there are any, or when
    the Kafka settings are."""
    common = common or CommonSettings()
    refuse_insecure(common.environment, [*kafka_problems(common), *insecure])
    clock = clock or SystemClock()
    configure_logging(common.log_level, common.log_json)
    state.service = service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.common, state.clock = common, clock
        state.topics = Topics.from_settings(common)
        state.engine = engine(common)
        try:
            state.producer = await start_producer(common)
            try:
                state.keys = KeyStore(state.engine, common.api_key_cache_seconds)
                runtime = Runtime(state)
                release = await start(runtime)
                try:
                    async with runtime.running():
                        settle_heap()
                        log.info(f"{service}_started", port=port)
                        yield
                finally:
                    if release is not None:
                        await release()
            finally:
                await _bounded(state.producer.stop(), "producer_stop")
        finally:
            await _bounded(state.engine.dispose(), "engine_dispose")

    app = create_app(
        service=service,
        readiness=lambda app: {**database_and_broker(app), **tasks_running(state)},
        title=title,
        description=description,
        lifespan=lifespan,
        max_body=common.max_body_bytes,
        form_paths=form_paths,
        common=common,
        describe=describe,
    )
    app.state = state
    for router in routers:
        app.include_router(router)
    return app


async def _bounded(step: Awaitable[None], name: str) -> None:
    """A shutdown step given :data:`STOP_SECONDS`; one that takes longer is logged and left
    (the process is ending: waiting without end would only hold up its exit)."""
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await step
    except TimeoutError:
        log.error("shutdown_step_timed_out", step=name, seconds=STOP_SECONDS)
