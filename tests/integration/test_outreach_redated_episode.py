"""A churn dated anew is the same churn: a population refit's new rhythm (or a late order)
moves the day a silent customer's stage began without a purchase in between, and a stage
rule that acted once for the episode does not act again; a customer who bought since is in a
new episode, and is won back again.

On the real PostgreSQL, through the consumer's write path (``ChangeApplier.apply``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from services.outreach.core.templates import SAMPLE_CARD
from shared.settings import CommonSettings
from tests.support.schedule_shop import Shop, opened_shop

pytestmark = pytest.mark.integration

NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)
WINBACK = {
    "id": "winback",
    "name": "Win back the lost",
    "trigger": {"type": "stage", "to": ["churned"], "entered_within_days": 180},
    "action": {
        "kind": "winback",
        "channel": "email",
        "template": {"subject": "We miss you", "body": "Come back"},
    },
}


@pytest.fixture
async def shop(settings: CommonSettings) -> AsyncIterator[Shop]:
    async with opened_shop(settings, NOW) as opened:
        opened.use(WINBACK)
        yield opened


def churned(since: str, last_order: str) -> dict[str, Any]:
    value = {**SAMPLE_CARD["value"], "last_order_at": f"{last_order}T15:00:00Z"}
    return {
        "stage": "churned",
        "stage_since": f"{since}T00:00:00Z",
        "previous_stage": "declining",
        "value": value,
    }


async def winbacks(shop: Shop, customer_id: str) -> list[str]:
    async with shop.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT occurrence FROM outreach.actions WHERE rule_id = 'winback' "
                "AND customer_id = :c ORDER BY decided_at"
            ),
            {"c": customer_id},
        )
        return [r.occurrence for r in rows]


async def published(shop: Shop, customer_id: str) -> list[dict[str, Any]]:
    """The customer's messages on the actions outbox, oldest first."""
    async with shop.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT payload FROM outreach.outbox WHERE customer_id = :c ORDER BY id"),
            {"c": customer_id},
        )
        return [orjson.loads(r.payload) for r in rows]


async def test_a_churn_dated_anew_is_won_back_once_and_a_new_one_again(shop: Shop) -> None:
    await shop.change("amy", **churned("2030-05-01", "2030-01-01"))
    assert await winbacks(shop, "amy") == ["churned@2030-05-01"]

    # The population's rhythm grew: the same silence reaches churned later. Then shorter.
    # The actions stream says so: the action's newest message carries the new day.
    for since in ("2030-05-20", "2030-04-10"):
        shop.clock.advance(timedelta(minutes=1))
        await shop.change("amy", **churned(since, "2030-01-01"))
        assert await winbacks(shop, "amy") == [f"churned@{since}"]
        newest = (await published(shop, "amy"))[-1]
        assert (newest["occurrence"], newest["decided_again_at"]) == (f"churned@{since}", None)
        assert newest["updated_at"] == shop.clock.now().isoformat()

    # A late order from 15 May: Amy bought after that churn began, and her new silence is a
    # new churn, won back again.
    shop.clock.advance(timedelta(minutes=1))
    await shop.change("amy", **churned("2030-06-10", "2030-05-15"))
    assert await winbacks(shop, "amy") == ["churned@2030-04-10", "churned@2030-06-10"]
