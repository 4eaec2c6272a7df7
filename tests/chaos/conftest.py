"""Fixtures of the chaos suite: a seed per scenario (logged; ``TEND_CHAOS_SEED`` replays one),
a database for clean replays, and the servers each scenario runs on."""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import make_engine
from shared.settings import CommonSettings
from tests.chaos.scenario import FIGURES, Chaos
from tests.support.databases import fresh_settings


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    chosen = os.environ.get("TEND_CHAOS_SEED")
    value = int(chosen) if chosen else random.SystemRandom().randrange(1_000_000)
    print(f"\n{request.node.name}: seed {value} (TEND_CHAOS_SEED={value} replays it)")
    return value


@pytest_asyncio.fixture(scope="session")
async def replay_engine(settings: CommonSettings) -> AsyncIterator[AsyncEngine]:
    """A migrated database of its own where each scenario's clean replay runs."""
    async with fresh_settings(settings, topics=False) as replay:
        engine = make_engine(replay, pool_size=2)
        yield engine
        await engine.dispose()


@pytest.fixture
def chaos(settings: CommonSettings, replay_engine: AsyncEngine, tmp_path: Path, seed: int) -> Chaos:
    """A scenario on the shared broker and database server (its own database and topics)."""
    return Chaos(settings, replay_engine, tmp_path, seed)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures of every scenario that ran, whether or not output was captured."""
    if FIGURES:
        terminalreporter.section("chaos figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
