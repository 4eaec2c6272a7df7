"""Previews and backtests are bounded: a backtest over 200,000 recorded changes answers, says
exactly what it replayed, and leaves outreach answering other requests meanwhile; a budget
that cuts a backtest keeps the newest changes, never fewer than the newest 200,000 or the last
30 days' (whichever are fewer), and says which budget cut it; so does a preview's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from services.outreach.app import create_app
from services.outreach.core.budgets import GUARANTEED_ROWS
from services.outreach.settings import OutreachSettings
from shared.auth import Scope, create_key
from shared.db import make_engine
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.databases import fresh_settings
from tests.support.history import publish_visits, skip_to_end
from tests.support.servers import ServiceProcess

pytestmark = pytest.mark.integration

HISTORY = 200_000
OLDEST = 100  # published before the newest HISTORY, and left out by a row budget of 1
CUSTOMERS = 20_000
SPAN = timedelta(days=20)
STEP = SPAN / (OLDEST + HISTORY)  # between two changes (and their record times)
RULE: dict[str, Any] = {
    "id": "heavy-recall",
    "name": "recall after a visit",
    "priority": 10,
    "trigger": {"type": "event", "event": "visit.recorded"},
    "action": {
        "kind": "recall",
        "channel": "webhook",
        "template": {"subject": "Still thinking about it?", "body": "Hi"},
    },
}
BACKTEST = f"/v1/rules/{RULE['id']}/backtest"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Outreach:
    client: httpx.AsyncClient
    ops: str  # an ops:read key
    now: datetime  # when the history was published (its newest change)


async def _keys(settings: CommonSettings) -> tuple[str, str]:
    engine = make_engine(settings, pool_size=1)
    try:
        _, ops = await create_key(engine, "heavy-ops", [Scope.OPS_READ])
        _, marketing = await create_key(
            engine, "heavy-marketing", [Scope.MARKETING_WRITE, Scope.OPS_READ]
        )
    finally:
        await engine.dispose()
    return ops, marketing


async def _add_rule(client: httpx.AsyncClient, marketing: str) -> None:
    resp = await client.post("/v1/rules", json=RULE, headers=auth(marketing))
    assert resp.status_code == 201, resp.text


@pytest_asyncio.fixture(scope="module")
async def heavy(
    settings: CommonSettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Outreach]:
    """An outreach process of its own, with a row budget of 1, over 200,100 visits of 20,000
    customers recorded in the last 20 days (its consumer starts after them: the backtest is
    what is measured)."""
    async with fresh_settings(settings) as own:
        ops, marketing = await _keys(own)
        bootstrap, topic = own.kafka_bootstrap_servers, Topics.from_settings(own).changes
        now = datetime.now(UTC)
        await publish_visits(
            bootstrap,
            topic,
            changes=OLDEST + HISTORY,
            customers=CUSTOMERS,
            start=now - SPAN,
            end=now,
        )
        group = f"{own.topic_prefix}outreach"
        await skip_to_end(bootstrap, topic, group)
        logs: Path = tmp_path_factory.mktemp("heavy")
        process = ServiceProcess(
            "outreach",
            own,
            logs,
            {
                "TEND_OUTREACH_CONSUMER_GROUP": group,
                "TEND_OUTREACH_READ_ROW_BUDGET": "1",
                "TEND_LOG_LEVEL": "WARNING",
            },
        )
        await asyncio.to_thread(process.start)
        try:
            async with httpx.AsyncClient(base_url=process.url, timeout=300) as client:
                await _add_rule(client, marketing)
                yield Outreach(client, ops, now)
        finally:
            await asyncio.to_thread(process.stop)


def _replayed(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("tend_outreach_backtest_changes_total "):
            return float(line.split()[1])
    return 0.0


async def test_a_backtest_over_200000_changes_answers_with_what_it_covered_and_healthz_first(
    heavy: Outreach,
) -> None:
    client = heavy.client
    before = _replayed((await client.get("/metrics")).text)
    backtest = asyncio.create_task(
        client.post(BACKTEST, params={"days": 30}, headers=auth(heavy.ops))
    )
    # Once the backtest shows progress (it is replaying, most of its changes still to go),
    # /healthz is answered before it: the replay does not hold the event loop.
    while not backtest.done() and _replayed((await client.get("/metrics")).text) <= before:
        await asyncio.sleep(0.05)
    answered_first = 0
    for _ in range(5):
        health = await client.get("/healthz")
        assert health.status_code == 200
        answered_first += not backtest.done()

    resp = await backtest
    assert resp.status_code == 200, resp.text
    assert answered_first == 5, "a /healthz sent while the backtest ran waited for it"
    got = resp.json()
    coverage = got["coverage"]
    assert coverage["changes"] == got["changes"] == HISTORY
    assert coverage["customers"] == got["customers"] == CUSTOMERS
    # The row budget (1) cut the window, down to the floor: the newest 200,000 changes.
    assert coverage["complete"] is False and coverage["cut_by"] == "row_budget"
    first, last = (datetime.fromisoformat(coverage[k]) for k in ("from", "to"))
    assert first == heavy.now - SPAN + STEP * OLDEST
    assert last == heavy.now - SPAN + STEP * (OLDEST + HISTORY - 1)
    # Every visit was decided once, and the contact policy held some back.
    assert got["decided"] == sum(got["outcomes"].values()) == HISTORY
    assert 0 < got["reasons"]["frequency_cap"] < HISTORY


# -- budgets --------------------------------------------------------------------------------


OLD, RECENT = 5_000, 300


@dataclass
class History:
    settings: CommonSettings
    ops: str
    marketing: str
    now: datetime


@pytest_asyncio.fixture(scope="module")
async def old_and_new(settings: CommonSettings) -> AsyncIterator[History]:
    """5,000 visits recorded 33 to 34 days ago, then 300 in the last 10 days."""
    async with fresh_settings(settings) as own:
        ops, marketing = await _keys(own)
        bootstrap, topic = own.kafka_bootstrap_servers, Topics.from_settings(own).changes
        now = datetime.now(UTC)
        await publish_visits(
            bootstrap,
            topic,
            changes=OLD,
            customers=50,
            start=now - timedelta(days=34),
            end=now - timedelta(days=33),
        )
        await publish_visits(
            bootstrap,
            topic,
            changes=RECENT,
            customers=50,
            start=now - timedelta(days=10),
            end=now,
            first=OLD,
        )
        await skip_to_end(bootstrap, topic, f"{own.topic_prefix}outreach")
        yield History(own, ops, marketing, now)


@asynccontextmanager
async def outreach(history: History, **budgets: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Outreach in-process over ``history``, with these budget settings."""
    own = history.settings
    app = create_app(
        own,
        OutreachSettings(consumer_group=f"{own.topic_prefix}outreach", **budgets),
        periodic=False,
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as client,
    ):
        if (await client.get(f"/v1/rules/{RULE['id']}", headers=auth(history.ops))).is_error:
            await _add_rule(client, history.marketing)
        yield client


async def _backtest(client: httpx.AsyncClient, history: History, days: int) -> dict[str, Any]:
    resp = await client.post(BACKTEST, params={"days": days}, headers=auth(history.ops))
    assert resp.status_code == 200, resp.text
    got: dict[str, Any] = resp.json()
    return got


async def test_a_backtest_within_its_budgets_replays_the_whole_window(
    old_and_new: History,
) -> None:
    async with outreach(old_and_new) as client:
        got = await _backtest(client, old_and_new, 35)
    assert got["coverage"]["changes"] == OLD + RECENT
    assert got["coverage"]["complete"] is True and got["coverage"]["cut_by"] is None
    first = datetime.fromisoformat(got["coverage"]["from"])
    assert first == old_and_new.now - timedelta(days=34)


@pytest.mark.parametrize(
    ("budgets", "cut_by"),
    [
        ({"read_row_budget": 1}, "row_budget"),
        ({"read_time_budget_seconds": 1e-6}, "time_budget"),
    ],
)
async def test_a_budget_keeps_the_newest_changes_and_never_less_than_30_days(
    old_and_new: History, budgets: dict[str, Any], cut_by: str
) -> None:
    async with outreach(old_and_new, **budgets) as client:
        got = await _backtest(client, old_and_new, 35)
    coverage = got["coverage"]
    assert coverage["complete"] is False and coverage["cut_by"] == cut_by
    # The last 30 days hold fewer than 200,000 changes: they are the floor, replayed whole.
    assert coverage["changes"] == got["changes"] == RECENT
    first = datetime.fromisoformat(coverage["from"])
    assert first == old_and_new.now - timedelta(days=10)
    assert got["decided"] == RECENT


async def test_a_preview_cut_by_its_budget_says_how_many_customers_it_examined(
    old_and_new: History,
) -> None:
    # 200,100 customers in the replica, the first ten (in id order) in the audience.
    engine = make_engine(old_and_new.settings, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    """
                    INSERT INTO outreach.cards (customer_id, card, complaint_open, change_at)
                    SELECT id,
                           jsonb_build_object('customer_id', id, 'stage', 'mature',
                                              'tier', CASE WHEN i < 10 THEN 'key' ELSE 'low' END),
                           false, now()
                    FROM generate_series(0, :n - 1) AS i,
                         LATERAL (SELECT 'p-' || lpad(i::text, 6, '0') AS id) AS named
                    """
                ),
                {"n": GUARANTEED_ROWS + 100},
            )
    finally:
        await engine.dispose()
    rule = {**RULE, "id": "heavy-preview", "conditions": {"eq": ["tier", "key"]}}
    async with outreach(old_and_new, read_row_budget=1) as client:
        resp = await client.post("/v1/rules/preview", json=rule, headers=auth(old_and_new.ops))
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["coverage"] == {
        "customers": GUARANTEED_ROWS,
        "complete": False,
        "cut_by": "row_budget",
    }
    assert got["matched"] == 10
