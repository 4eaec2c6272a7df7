"""Running a backtest within its budgets: choosing the part of the change stream to replay,
reading it a chunk at a time, and replaying each chunk off the event loop.

The window asked for is every change recorded since ``days`` ago. When it holds more than the
row budget, only its newest part is replayed (``row_budget``); when the replay runs past the
time budget while still in the part older than the floor, it starts again from the floor
(``time_budget``). The floor — the last 30 days or the newest 200,000 changes, whichever holds
fewer (:mod:`services.outreach.core.budgets`) — is always replayed whole. Which part was
replayed is chosen by the record times Kafka keeps, before reading it: the newest changes are
what a budget keeps, and a customer's changes are still replayed oldest first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiokafka import TopicPartition
from prometheus_client import Counter

from services.outreach.core.backtest import BacktestResult, Replay
from services.outreach.core.budgets import GUARANTEED_DAYS, GUARANTEED_ROWS, CutBy, ReadBudget
from services.outreach.core.changes import read_change
from services.outreach.core.policy import Policy
from services.outreach.core.rules import Rule
from shared.changes import Change
from shared.kafka_read import Batch, Offsets, TopicHistory
from shared.settings import CommonSettings

REPLAYED = Counter(
    "tend_outreach_backtest_changes_total",
    "Changes replayed by backtests (a long backtest shows its progress here)",
)

# Records per chunk handed to the replay: a few megabytes of parsed changes at a time.
CHUNK = 2000
# The upper end of the search over record times (the year 2527): records are stamped by the
# producers' clocks, which the service's own clock need not agree with.
_LAST_MS = 2**44


class _OutOfTime(Exception):
    """The time budget ran out while the replay was still short of the floor."""


@dataclass(frozen=True)
class Backtested:
    result: BacktestResult
    complete: bool
    cut_by: CutBy | None


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _changes(batch: Batch) -> Iterator[Change]:
    for record in batch:
        try:
            yield read_change(record.value or b"")
        except ValueError:
            continue  # not a change: the live consumer dead-letters it, a replay skips it


async def backtest(
    settings: CommonSettings,
    topic: str,
    rule: Rule,
    *,
    policy: Policy,
    suppressed: set[str],
    now: datetime,
    days: int,
    budget: ReadBudget,
    global_control_percent: float = 0,
) -> Backtested:
    """Replay the changes of the last ``days`` days (or the newest part the budgets allow)
    with ``rule`` as the only live rule (``global_control_percent``: the global control
    group's share, held out of the policy's kinds)."""
    started = time.monotonic()
    since_ms = _ms(now - timedelta(days=days))

    def new_replay() -> Replay:
        return Replay(
            rule,
            policy=policy,
            suppressed=suppressed,
            global_control_percent=global_control_percent,
        )

    async with TopicHistory(settings, topic) as history:
        window = await history.offsets_at(since_ms)
        total = history.count(window)
        floor_ms = max(since_ms, _ms(now - timedelta(days=GUARANTEED_DAYS)))
        if total > GUARANTEED_ROWS:
            # The latest instant from which at least GUARANTEED_ROWS records are left.
            newest = await history.newest(GUARANTEED_ROWS - 1, lo_ms=since_ms, hi_ms=_LAST_MS)
            floor_ms = max(floor_ms, newest - 1)
        start_ms = since_ms
        if total > budget.rows:
            newest = await history.newest(budget.rows, lo_ms=since_ms, hi_ms=_LAST_MS)
            start_ms = min(floor_ms, newest)
        start = window if start_ms == since_ms else await history.offsets_at(start_ms)
        cut_by: CutBy | None = "row_budget" if history.count(start) < total else None
        floor = await history.offsets_at(floor_ms)

        try:
            replay = await _replay(history, start, floor, new_replay, budget, started)
        except _OutOfTime:  # the floor alone, whole
            cut_by = "time_budget"
            replay = await _replay(history, floor, floor, new_replay, None, started)
    result = await asyncio.to_thread(replay.finish, now)
    return Backtested(result, complete=cut_by is None, cut_by=cut_by)


async def _replay(
    history: TopicHistory,
    start: Offsets,
    floor: Offsets,
    new_replay: Callable[[], Replay],
    budget: ReadBudget | None,
    started: float,
) -> Replay:
    """The replay (a ``new_replay()``) of the records from ``start`` to the end;
    :class:`_OutOfTime` when ``budget``'s time ran out while some partition was still short
    of ``floor``."""
    replay = new_replay()
    position = dict(start)
    async for batch in history.read(start, max_records=CHUNK):
        # Parsing and matching are the CPU work: a worker thread does them, so the event loop
        # answers other requests meanwhile.
        await asyncio.to_thread(replay.feed, _changes(batch))
        REPLAYED.inc(len(batch))
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            position[tp] = max(position.get(tp, 0), record.offset + 1)
        if (
            budget is not None
            and time.monotonic() - started >= budget.seconds
            and any(position[tp] < offset for tp, offset in floor.items())
        ):
            raise _OutOfTime
    return replay
