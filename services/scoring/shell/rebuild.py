"""Rebuilding scoring's state from the events topic, the system of record.

    python -m services.scoring.shell.rebuild [--yes]

Stop the scoring service first. The rebuild empties scoring's customer tables (the population
parameters are kept, and so are the changes in the outbox that the relay has not published
yet: the service's relay sends them when it starts again), replays ``crm.customer-events.v1``
from the beginning of every partition up to the end it finds when it starts, applying events
exactly as the service does but without publishing changes (the past is not announced
twice), and finally points the service's consumer group at that end, so the service resumes
with what came after.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.scoring.settings import ScoringSettings, scoring_settings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from services.scoring.store import customers as store
from services.scoring.store import identities as identity_store
from shared.clock import Clock, SystemClock
from shared.db import make_engine
from shared.events import Envelope
from shared.kafka_read import end_offsets, read_until_end
from shared.kafka_security import client_kwargs
from shared.logging import configure_logging, get_logger
from shared.settings import CommonSettings
from shared.topics import Topics

log = get_logger(__name__)


async def rebuild(
    common: CommonSettings, settings: ScoringSettings, clock: Clock | None = None
) -> int:
    """Returns how many events were applied."""
    topic = Topics.from_settings(common).events
    end = await end_offsets(common, topic)
    if not end:
        raise SystemExit(f"topic {topic} not found")
    engine = make_engine(common, pool_size=2)
    applied = 0
    try:
        async with engine.begin() as conn:
            await store.empty(conn)
            await identity_store.empty(conn)
        population = PopulationCache()
        await population.reload(engine)
        applier = EventApplier(
            engine,
            settings,
            clock or SystemClock(),
            population,
            publish=False,
            inbox_retention=common.inbox_retention,
            phone_region=common.phone_region,
        )
        async for batch in read_until_end(common, topic, until=end):
            events: list[tuple[Envelope, bytes]] = []
            for r in batch:
                try:
                    events.append((Envelope.from_json(r.value), r.value))
                except ValueError:
                    log.warning("rebuild_skipped_record", partition=r.partition, offset=r.offset)
            applied += await applier.apply(events) if events else 0
        await _hand_over(common, settings, end)
    finally:
        await engine.dispose()
    log.info("rebuild_done", applied=applied)
    return applied


async def _hand_over(
    common: CommonSettings, settings: ScoringSettings, end: dict[TopicPartition, int]
) -> None:
    """Point the service's consumer group just past what the rebuild applied."""
    group = AIOKafkaConsumer(
        **client_kwargs(common),
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await group.start()
    try:
        group.assign(list(end))
        await group.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in end.items()})
    finally:
        await group.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.scoring.shell.rebuild",
        description=__doc__.split("\n\n")[0] if __doc__ else "",
    )
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    common = CommonSettings()
    configure_logging(common.log_level, json=False)
    if not args.yes:
        answer = input(
            "This empties scoring's customer tables and replays every event. "
            "Is the scoring service stopped? [y/N] "
        )
        if answer.strip().lower() != "y":
            return 1
    applied = asyncio.run(rebuild(common, scoring_settings()))
    print(f"rebuilt from {applied} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
