"""One chaos scenario from start to verdict: the pipeline up, a steady load, the scenario's
fault while the load runs, more load once it is over (the pipeline must work again), then the
checks and the figures."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.settings import CommonSettings
from tests.chaos.checks import Figures, judge, settle
from tests.chaos.load import Load
from tests.chaos.pipeline import WEBHOOK_TIMEOUT_SECONDS, Pipeline, running_pipeline
from tests.support.receivers import Step, WebhookReceiver

Fault = Callable[[Pipeline, Load, random.Random], Awaitable[None]]

# Every scenario's figures line, for the summary at the end of the run (conftest.py).
FIGURES: list[str] = []


@dataclass(frozen=True)
class Chaos:
    """What every scenario needs from its fixtures."""

    base: CommonSettings  # servers the scenario's database and topics go on
    replay: AsyncEngine  # a database for the clean replay
    directory: Path
    seed: int


async def run_scenario(
    name: str,
    chaos: Chaos,
    fault: Fault,
    *,
    scoring: int = 1,
    outreach: int = 1,
    answers: Callable[[], Step] | None = None,
    warmup: int = 20,
    after: int = 25,
) -> Figures:
    """Run ``fault`` once ``warmup`` events are accepted; ``after`` more must be accepted
    once it is over. ``answers`` picks the webhook receiver's answer to each request."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    figures = Figures(name, chaos.seed)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    logs = chaos.directory / "logs"
    async with (
        WebhookReceiver(chooser=answers, late_seconds=WEBHOOK_TIMEOUT_SECONDS * 2) as hook,
        running_pipeline(chaos.base, logs, hook, scoring=scoring, outreach=outreach) as p,
    ):
        load = Load(p.ingest.url, p.keys["ingest"], random.Random(chaos.seed), prefix=slug)
        p.note("pipeline up")
        async with load:
            await load.until_accepted(warmup, timeout=90)
            p.note("warmed up")
            await fault(p, load, random.Random(chaos.seed + 1))
            p.note("fault over")
            await load.until_accepted(len(load.accepted) + after, timeout=120)
        p.note(f"load over: {len(load.offered)} offered")
        try:
            await settle(p, load)
            p.note("settled")
        except TimeoutError as exc:
            figures.problems.append(str(exc))
        await judge(p, load, chaos.replay, figures)
        timeline = "; ".join(f"{at:.1f} {what}" for at, what in p.timeline)
    figures.seconds = loop.time() - started
    FIGURES.append(figures.line() + ("" if not figures.problems else " FAILED"))
    print(f"\n{figures.line()}\n  timeline: {timeline}")
    for problem in figures.problems:
        print(f"  - {problem}")
    assert not figures.problems, f"{name} (seed {chaos.seed}; logs in {logs}): {figures.problems}"
    assert figures.duplicates == 0 and figures.lost == 0, figures.line()
    return figures
