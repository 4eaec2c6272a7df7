"""kill -9 at any moment, and two instances sharing the partitions: the final state is what a
clean replay of the same events gives, and no change is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.settings import ScoringSettings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from shared.changes import Change, change_id_for
from shared.clock import SystemClock
from shared.db import make_engine
from shared.events import Envelope
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.databases import fresh_settings
from tests.support.events import random_history
from tests.support.kafka_io import read_all
from tests.support.pipeline import scoring_states
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.integration


async def _produce(settings: CommonSettings, events: Sequence[Envelope]) -> None:
    topic = Topics.from_settings(settings).events
    producer = await start_producer(settings)
    try:
        await publish_many(
            producer,
            [Record(topic, e.customer_id.encode(), e.to_json()) for e in events],
            timeout=60,
        )
    finally:
        await producer.stop()


async def _applied(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM scoring.inbox")) or 0)


async def _wait_for(engine: AsyncEngine, at_least: int, timeout: float = 120) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while (n := await _applied(engine)) < at_least:
        assert asyncio.get_running_loop().time() < deadline, f"only {n} of {at_least} applied"
        await asyncio.sleep(0.05)
    return n


async def _clean_replay(
    base: CommonSettings, events: Sequence[Envelope]
) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    async with fresh_settings(base, topics=False) as clean:
        engine = make_engine(clean, pool_size=2)
        applier = EventApplier(engine, ScoringSettings(), SystemClock(), PopulationCache())
        await applier.apply([(e, e.to_json()) for e in events])
        result = await scoring_states(engine)
        await engine.dispose()
    return result


async def _published_event_changes(settings: CommonSettings) -> set[str]:
    topic = Topics.from_settings(settings).changes
    return {
        c.change_id
        for c in (
            Change.from_json(r.value)
            for r in await read_all(settings.kafka_bootstrap_servers, topic)
        )
        if c.cause == "event"
    }


def _scoring(settings: CommonSettings, logs: Path) -> ServiceProcess:
    # Small batches: a kill lands between, inside and after many transactions.
    return ServiceProcess(
        "scoring",
        settings,
        logs,
        extra_env={
            "TEND_SCORING_CONSUMER_GROUP": f"{settings.topic_prefix}scoring",
            "TEND_SCORING_BATCH_MAX_RECORDS": "50",
            "TEND_LOG_LEVEL": "WARNING",
        },
    )


async def test_kill_9_mid_stream_then_restart_equals_a_clean_replay(
    settings: CommonSettings, tmp_path: Path
) -> None:
    events = random_history(150, seed=7)
    expected = await _clean_replay(settings, events)
    async with fresh_settings(settings) as own:
        engine = make_engine(own, pool_size=2)
        await _produce(own, events)
        killed_at = []
        for fraction in (0.2, 0.5, 0.8):
            proc = _scoring(own, tmp_path)
            await asyncio.to_thread(proc.start)
            await _wait_for(engine, int(len(events) * fraction))
            proc.kill()
            killed_at.append(await _applied(engine))
        print(f"{len(events)} events; killed with {killed_at} applied")
        assert min(killed_at) < len(events), "every kill came after the end: not a crash test"
        proc = _scoring(own, tmp_path)
        await asyncio.to_thread(proc.start)
        await _wait_for(engine, len(events))
        # Let the relay drain the outbox before comparing what was published.
        await _drained(engine)
        proc.stop()

        assert await scoring_states(engine) == expected
        wanted = {change_id_for("event", e.event_id) for e in events}
        assert wanted <= await _published_event_changes(own)
        await engine.dispose()


async def test_two_instances_share_the_partitions_and_reach_the_same_state(
    settings: CommonSettings, tmp_path: Path
) -> None:
    events = random_history(150, seed=11)
    expected = await _clean_replay(settings, events)
    async with fresh_settings(settings) as own:
        engine = make_engine(own, pool_size=2)
        first, second = _scoring(own, tmp_path), _scoring(own, tmp_path)
        await asyncio.gather(asyncio.to_thread(first.start), asyncio.to_thread(second.start))
        await _produce(own, events)
        await _wait_for(engine, len(events) // 3)
        first.kill()  # mid-batch: its partitions move to the survivor
        await _wait_for(engine, len(events))
        await _drained(engine)
        second.stop()

        assert await scoring_states(engine) == expected
        wanted = {change_id_for("event", e.event_id) for e in events}
        assert wanted <= await _published_event_changes(own)
        await engine.dispose()


async def _drained(engine: AsyncEngine, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as conn:
            left = await conn.scalar(text("SELECT count(*) FROM scoring.outbox"))
        if not left:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{left} changes unpublished"
        await asyncio.sleep(0.1)
