"""A schedule the scheduler has handled stays handled: a customer's change after the firing
(a card recomputed with the day's catch-up) does not send the schedule row back to the
occurrence just run, so the scheduler does not run it again on every change. A customer the
rule's own limits hold back (cooldown, not contacted for N days) rests until they let it act,
rather than being decided again every day. And the scheduler moves every row it handled in
one statement per pass, not one per row.

On the real PostgreSQL (a database of the test's own, so the scheduler's due scan sees this
test's rows alone), through the consumer's write path (``ChangeApplier.apply``) and the
scheduler's (``fire_due``), with time driven by a :class:`FixedClock`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.core.templates import SAMPLE_CARD
from shared.settings import CommonSettings
from tests.support.schedule_shop import Shop, opened_shop, pack

pytestmark = pytest.mark.integration

# The customers live in UTC: the default pack's care-key-quiet cron fires at 10:00 UTC.
DAY = datetime(2030, 6, 14, tzinfo=UTC)
TEN = DAY + timedelta(hours=10)


@pytest.fixture
async def shop(settings: CommonSettings) -> AsyncIterator[Shop]:
    async with opened_shop(settings, DAY + timedelta(hours=8)) as opened:
        yield opened


def unlimited(rule_id: str) -> dict[str, Any]:
    """The default pack's rule without its limits (and hold-out): these tests are about the
    schedule index, not about the customers a rule's limits rest."""
    rule = pack(rule_id)
    rule.pop("limits", None)
    rule.pop("control_percent", None)
    return rule


async def test_a_change_after_the_daily_cron_fired_leaves_it_at_tomorrow(shop: Shop) -> None:
    shop.use(unlimited("care-key-quiet"))
    await shop.change("kim")
    assert await shop.due_at("care-key-quiet", "kim") == TEN
    shop.clock.set(TEN + timedelta(minutes=30))
    assert await shop.fire() == (1, 1)
    tomorrow = TEN + timedelta(days=1)
    assert await shop.due_at("care-key-quiet", "kim") == tomorrow
    # Two more changes of Kim's that day: the row stays at tomorrow, nothing is due.
    for minutes in (45, 50):
        shop.clock.set(TEN + timedelta(minutes=minutes))
        await shop.change("kim")
        assert await shop.due_at("care-key-quiet", "kim") == tomorrow
        assert await shop.fire() == (0, 0)
    # A customer who first arrives after ten is still caught up that day, once.
    await shop.change("lou")
    assert await shop.due_at("care-key-quiet", "lou") == TEN
    assert await shop.fire() == (1, 1)
    # And tomorrow Kim's firing comes as usual.
    shop.clock.set(tomorrow)
    assert await shop.fire() == (2, 2)  # decided anew
    assert await shop.due_at("care-key-quiet", "kim") == tomorrow + timedelta(days=1)


async def test_a_change_after_a_one_off_instant_fired_does_not_bring_it_back(
    shop: Shop,
) -> None:
    follow_up = unlimited("purchase-follow-up")
    follow_up["action"]["channel"] = "webhook"
    shop.use(follow_up)
    ordered = (DAY - timedelta(days=7) + timedelta(hours=15)).isoformat()
    value = {**SAMPLE_CARD["value"], "last_order_at": ordered}
    await shop.change("ida", value=value)
    nine = DAY + timedelta(hours=9)
    assert await shop.due_at("purchase-follow-up", "ida") == nine
    shop.clock.set(nine)
    assert await shop.fire() == (1, 1)
    # Nothing comes after a follow-up's one instant, and within the days-after grace a new
    # change of Ida's does not make it due again.
    shop.clock.set(nine + timedelta(hours=3))
    await shop.change("ida", value=value)
    assert await shop.fire() == (0, 0)
    shop.clock.set(nine + timedelta(days=1))
    await shop.change("ida", value=value)
    assert await shop.fire() == (0, 0)
    # A new order gives a new instant, which fires.
    reordered = {**value, "last_order_at": shop.clock.now().isoformat()}
    await shop.change("ida", value=reordered)
    assert await shop.due_at("purchase-follow-up", "ida") == nine + timedelta(days=8)


@contextmanager
def schedule_writes(engine: AsyncEngine) -> Iterator[list[str]]:
    """Every statement sent while the block runs that writes the schedule index."""
    seen: list[str] = []

    def watch(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        head = statement.lstrip().upper()
        if "OUTREACH.SCHEDULE" in head and head.startswith(("INSERT", "UPDATE", "DELETE")):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", watch)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", watch)


async def test_the_scheduler_moves_a_whole_pass_in_one_statement(shop: Shop) -> None:
    shop.use(unlimited("care-key-quiet"))
    customers = [f"c{n}" for n in range(6)]
    for customer in customers:
        await shop.change(customer)
    shop.clock.set(TEN)
    with schedule_writes(shop.engine) as writes:
        assert await shop.fire() == (6, 6)
    assert len(writes) == 1, writes
    for customer in customers:
        assert await shop.due_at("care-key-quiet", customer) == TEN + timedelta(days=1)


async def test_a_customer_the_rule_s_limits_hold_back_rests_until_they_let_it_act(
    shop: Shop,
) -> None:
    # A care message to the customer at nine every day (a contact), and the pack's call for
    # key customers nobody contacted for 60 days, at ten.
    hello = {
        "id": "hello",
        "name": "hello",
        "trigger": {"type": "schedule", "kind": "cron", "expression": "0 9 * * *"},
        "action": {"kind": "care", "channel": "webhook", "template": {"body": "Hello"}},
    }
    call = pack("care-key-quiet")
    call["control_percent"] = 0
    shop.use(hello, call)
    await shop.change("kim")
    shop.clock.set(DAY + timedelta(hours=9))
    assert await shop.fire() == (1, 1)  # hello: contacted at nine
    shop.clock.set(TEN)
    # Kim does not qualify for the call: nothing is recorded (a ``limit`` suppression would
    # read as a refusal in the rule's figures and Kim's history).
    assert await shop.fire() == (1, 0)
    async with shop.engine.connect() as conn:
        recorded = await conn.scalar(
            text("SELECT count(*) FROM outreach.actions WHERE rule_id = :r"), {"r": call["id"]}
        )
    assert recorded == 0
    # Kim rests from the call until 60 days after the contact: the first ten o'clock then,
    # not tomorrow (where every day would find the same). A change of Kim's meanwhile does
    # not bring it back.
    rested = TEN + timedelta(days=60)
    assert await shop.due_at(call["id"], "kim") == rested
    shop.clock.set(TEN + timedelta(hours=2))
    await shop.change("kim")
    assert await shop.due_at(call["id"], "kim") == rested
    # The daily hello, which has no limits, comes tomorrow as usual.
    assert await shop.due_at("hello", "kim") == DAY + timedelta(days=1, hours=9)
