"""A rule's daily budget (``limits.max_per_day``) on the real PostgreSQL: the day's slots go
to the most valuable customers, a scheduled rule's others wait in its line (not recorded) and
come up at its next run, and two transactions deciding for the same rule at once never spend
more than the day has.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.launch import LaunchContent
from services.outreach.core.policy import Policy
from services.outreach.core.rules import Match, Rule
from services.outreach.shell.broadcast import launch
from services.outreach.shell.decide import decide_and_record
from services.outreach.shell.scheduler import rules_saved
from services.outreach.store.replica import cards_after
from services.outreach.store.rules import save_rule, stored_rule
from shared.settings import CommonSettings
from tests.support.schedule_shop import Shop, opened_shop, pack

pytestmark = pytest.mark.integration

# The customers live in UTC, and so does the shop's day: care-key-quiet fires at 10:00.
DAY = datetime(2030, 6, 14, tzinfo=UTC)
TEN = DAY + timedelta(hours=10)
TOMORROW = TEN + timedelta(days=1)


@pytest.fixture
async def shop(settings: CommonSettings) -> AsyncIterator[Shop]:
    async with opened_shop(settings, DAY + timedelta(hours=8)) as opened:
        yield opened


def calls_a_day(n: int) -> Rule:
    """The default pack's team alert for quiet key customers, at most ``n`` a day, every
    customer in its treatment arm (a hold-out takes its slot like an alert: the unit tests)."""
    rule = pack("care-key-quiet")
    rule["limits"]["max_per_day"] = n
    rule["control_percent"] = 0
    return Rule.model_validate(rule)


async def decided_on(shop: Shop, day: datetime) -> dict[str, tuple[str, str | None]]:
    """Each customer's decision of that day: (status, reason)."""
    async with shop.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT customer_id, status, reason FROM outreach.actions "
                "WHERE decided_at >= :d AND decided_at < :d + interval '1 day'"
            ),
            {"d": day.replace(hour=0)},
        )
        return {r.customer_id: (r.status, r.reason) for r in rows}


ALERTED = ("pending", None)
OVER = ("suppressed", "daily_limit")


async def test_a_day_s_alerts_go_to_the_most_valuable_and_the_rest_wait_in_line(
    shop: Shop,
) -> None:
    rule = calls_a_day(2)
    shop.use(rule.model_dump(mode="json"))
    # Five quiet key customers at once (a history just loaded), the value rising with the
    # number: two calls a day reach the two most valuable first. The three others are not
    # recorded (a suppression a day each while the line drains): they wait in its line.
    for n in range(1, 6):
        await shop.change(f"k{n}", value_score=float(n))
    shop.clock.set(TEN)
    assert await shop.fire() == (5, 2)
    assert await decided_on(shop, TEN) == {"k5": ALERTED, "k4": ALERTED}
    assert await shop.line("care-key-quiet") == {"k3": TEN, "k2": TEN, "k1": TEN}
    assert await shop.due_at("care-key-quiet", "k3") == TOMORROW
    # The rules list counts the line.
    async with shop.engine.begin() as conn:
        await save_rule(conn, rule, "marketer", TEN)
        stored = await stored_rule(conn, rule.id)
    assert stored is not None and stored.waiting_for_a_slot == 3
    # The most valuable of all arrives later that day: the day is spent, even for them.
    shop.clock.set(TEN + timedelta(hours=2))
    await shop.change("k9", value_score=9.0)
    assert await shop.fire() == (1, 0)
    assert "k9" not in await decided_on(shop, TEN)
    assert (await shop.line("care-key-quiet"))["k9"] == TEN + timedelta(hours=2)
    # The next day the rule runs again for the four in line, and the next two by value are
    # alerted and leave it; the two others keep their place since yesterday. The two called
    # yesterday rest for the rule's own 60-day cooldown: not due again (no daily 'limit'
    # row) until it ends.
    shop.clock.set(TOMORROW)
    assert await shop.fire() == (4, 2)
    assert await decided_on(shop, TOMORROW) == {"k9": ALERTED, "k3": ALERTED}
    assert await shop.line("care-key-quiet") == {"k2": TEN, "k1": TEN}
    for called in ("k5", "k4"):
        assert await shop.due_at("care-key-quiet", called) == TEN + timedelta(days=60)
    # The day after, the last two; the line is empty, and nobody was ever recorded as held
    # back by the limit.
    shop.clock.set(TOMORROW + timedelta(days=1))
    assert await shop.fire() == (2, 2)
    assert await shop.line("care-key-quiet") == {}
    async with shop.engine.connect() as conn:
        over = await conn.scalar(
            text("SELECT count(*) FROM outreach.actions WHERE reason = 'daily_limit'")
        )
    assert over == 0


async def test_a_customer_in_line_whose_conditions_no_longer_hold_leaves_it(shop: Shop) -> None:
    shop.use(calls_a_day(1).model_dump(mode="json"))
    for n in (1, 2):
        await shop.change(f"k{n}", value_score=float(n))
    shop.clock.set(TEN)
    assert await shop.fire() == (2, 1)
    assert await shop.line("care-key-quiet") == {"k1": TEN}
    # k1 is no longer key by the next run: the rule does not act for them, and they are no
    # longer waiting for it.
    await shop.change("k1", value_score=1.0, tier="regular")
    shop.clock.set(TOMORROW)
    assert await shop.fire() == (1, 0)
    assert await shop.line("care-key-quiet") == {}


async def test_a_backlog_larger_than_a_pass_gives_the_day_to_its_most_valuable(
    shop: Shop,
) -> None:
    shop.use(calls_a_day(2).model_dump(mode="json"))
    shop.settings = shop.settings.model_copy(update={"scheduler_batch": 2})
    # The least valuable first in every order the scan could take (id, arrival).
    for n in range(1, 6):
        await shop.change(f"k{n}", value_score=float(n))
    shop.clock.set(TEN)
    passes = [await shop.fire() for _ in range(4)]
    assert passes == [(2, 2), (2, 0), (1, 0), (0, 0)]
    assert await decided_on(shop, TEN) == {"k5": ALERTED, "k4": ALERTED}
    assert set(await shop.line("care-key-quiet")) == {"k3", "k2", "k1"}


async def test_two_decisions_at_once_never_spend_more_than_the_day_has(shop: Shop) -> None:
    rule = calls_a_day(1)
    shop.use(rule.model_dump(mode="json"))
    for customer in ("ann", "bob"):
        await shop.change(customer, value_score=1.0)
    async with shop.engine.connect() as conn:
        cards = {r.customer_id: r.card for r in await cards_after(conn, "", 10)}
    shop.clock.set(TEN)

    async def decide(conn: AsyncConnection, customer: str) -> list[tuple[str, str | None]]:
        recorded = await decide_and_record(
            conn,
            [Match(rule, customer, "2030-06-14")],
            cards,
            policy=Policy(),
            settings=shop.settings,
            now=TEN,
        )
        return [(r.status, r.reason) for r in recorded]

    # Ann's decision is made and not yet committed when Bob's starts on another connection:
    # Bob's waits for it, then finds the day spent.
    async with shop.engine.connect() as first, shop.engine.connect() as second:
        await first.begin()
        assert await decide(first, "ann") == [ALERTED]
        await second.begin()
        bob = asyncio.create_task(decide(second, "bob"))
        await asyncio.sleep(0.5)
        assert not bob.done()
        await first.commit()
        assert await asyncio.wait_for(bob, 10) == [OVER]
        await second.commit()


def winbacks_a_day(n: int) -> dict[str, Any]:
    """The default pack's win-back of churned customers, at most ``n`` a day, no hold-out."""
    rule = pack("winback-churned")
    rule["limits"] = {"max_per_day": n}
    rule["control_percent"] = 0
    return rule


def churned(value: float, **more: Any) -> dict[str, Any]:
    """A key customer's card, churned since the first of the month."""
    return {
        "value_score": value,
        "stage": "churned",
        "stage_since": "2030-06-01",
        "previous_stage": "declining",
        "as_of": TEN.isoformat(),
        **more,
    }


async def _three_in_line(shop: Shop) -> None:
    """A history just loaded under a win-back of two a day: five churned customers in one
    batch, the value rising with the number. The two most valuable are won back today; the
    others wait in the rule's line, and nothing is recorded for them."""
    shop.use(winbacks_a_day(2))
    shop.clock.set(TEN)
    await shop.changes({f"k{n}": churned(float(n)) for n in range(1, 6)})
    assert await decided_on(shop, TEN) == {"k5": ALERTED, "k4": ALERTED}
    assert await shop.line("winback-churned") == {"k3": TEN, "k2": TEN, "k1": TEN}


async def test_a_stage_rule_s_spent_day_leaves_the_others_in_line_for_the_next(
    shop: Shop,
) -> None:
    # Those in line are due at the start of the shop's next day.
    await _three_in_line(shop)
    midnight = DAY + timedelta(days=1)
    assert await shop.due_at("winback-churned", "k3") == midnight
    # A change of theirs later today finds the day still spent: they keep their place.
    shop.clock.set(TEN + timedelta(hours=3))
    await shop.change("k3", **churned(3.0))
    assert await shop.line("winback-churned") == {"k3": TEN, "k2": TEN, "k1": TEN}
    # k1 comes back before their turn: their churned episode is over.
    await shop.change("k1", **churned(1.0, stage="reactivated", stage_since="2030-06-14"))
    # The next day's run: k3 and k2, the most valuable in line, are won back (the episode
    # they were passed over in); k1 leaves the line without a decision.
    shop.clock.set(TOMORROW)
    assert await shop.fire() == (3, 2)
    assert await decided_on(shop, TOMORROW) == {"k3": ALERTED, "k2": ALERTED}
    assert await shop.line("winback-churned") == {}
    async with shop.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT customer_id, occurrence, reason FROM outreach.actions ORDER BY 1")
        )
        decided = {r.customer_id: (r.occurrence, r.reason) for r in rows}
    assert decided == {f"k{n}": ("churned@2030-06-01", None) for n in (2, 3, 4, 5)}


async def test_a_disabled_stage_rule_keeps_its_line_for_when_it_is_enabled_again(
    shop: Shop,
) -> None:
    await _three_in_line(shop)
    # The marketer pauses the rule for a week: its line comes due and waits, due never, each
    # customer keeping their place (deleted rules' rows go; a paused rule's must not).
    shop.use({**winbacks_a_day(2), "enabled": False})
    shop.clock.set(TOMORROW)
    assert await shop.fire() == (3, 0)
    assert await shop.line("winback-churned") == {"k3": TEN, "k2": TEN, "k1": TEN}
    assert await shop.due_at("winback-churned", "k3") is None
    shop.clock.set(TOMORROW + timedelta(days=7))
    assert await shop.fire() == (0, 0)
    # Enabled again: the line is due at once, and the day's two slots go to its two most
    # valuable customers, for the episode they were passed over in.
    shop.use(winbacks_a_day(2))
    await rules_saved(shop.engine, list(shop.current.rules.values()), Policy(), shop.clock.now())
    assert await shop.fire() == (3, 2)
    assert await decided_on(shop, shop.clock.now()) == {"k3": ALERTED, "k2": ALERTED}
    assert await shop.line("winback-churned") == {"k1": TEN}


async def test_a_paused_rule_s_line_goes_when_it_is_saved_as_an_event_rule(shop: Shop) -> None:
    await _three_in_line(shop)
    shop.use({**winbacks_a_day(2), "enabled": False})
    shop.clock.set(TOMORROW)
    assert await shop.fire() == (3, 0)
    assert len(await shop.line("winback-churned")) == 3  # parked, due never
    # Saved as a rule of an event: nothing it keeps is on the schedule, so nothing is left
    # there that no pass would ever come to.
    shop.use({**winbacks_a_day(2), "trigger": {"type": "event", "event": "order.paid"}})
    await rules_saved(shop.engine, list(shop.current.rules.values()), Policy(), shop.clock.now())
    assert await shop.line("winback-churned") == {}


def spring_news(n: int) -> Rule:
    """A broadcast to key customers that lists the launch's items, at most ``n`` a day."""
    return Rule.model_validate(
        {
            "id": "spring-news",
            "name": "Spring news",
            "trigger": {"type": "broadcast"},
            "conditions": {"eq": ["tier", "key"]},
            "action": {
                "kind": "announcement",
                "channel": "webhook",
                "template": {
                    "subject": "New in",
                    "body": "{% for i in launch.all_items %}{{ i.name }} {% endfor %}",
                },
            },
            "limits": {"max_per_day": n},
        }
    )


async def launch_now(shop: Shop, rule: Rule, launch_id: str, item: str) -> dict[str, Any]:
    content = LaunchContent.model_validate(
        {"items": [{"sku": item, "category": "tea", "name": item}]}
    )
    size, statuses = await launch(
        shop.engine,
        rule,
        launch_id,
        current=shop.current,
        settings=shop.settings,
        clock=shop.clock,
        decided=lambda: None,
        content=content,
    )
    return {"audience": size, **statuses}


async def bodies(shop: Shop) -> dict[str, tuple[str, str, str]]:
    """Each customer's broadcast actions: (occurrence, status, body)."""
    async with shop.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT customer_id, occurrence, status, body FROM outreach.actions "
                "WHERE rule_id = 'spring-news'"
            )
        )
        return {r.customer_id: (r.occurrence, r.status, r.body.strip()) for r in rows}


async def test_a_broadcast_over_its_daily_limit_goes_out_over_the_next_days(shop: Shop) -> None:
    rule = spring_news(2)
    shop.use(rule.model_dump(mode="json"))
    for n in range(1, 6):
        await shop.change(f"k{n}", value_score=float(n))
    # Five in the audience, two slots a day: the two most valuable today, the three others
    # wait in the rule's line for this launch (not suppressed, nothing recorded).
    shop.clock.set(TEN)
    assert await launch_now(shop, rule, "spring", "Sencha") == {
        "audience": 5,
        "pending": 2,
        "waiting": 3,
    }
    assert {c: s for c, (_, s, _) in (await bodies(shop)).items()} == {
        "k5": "pending",
        "k4": "pending",
    }
    assert await shop.line(rule.id) == {"k3": TEN, "k2": TEN, "k1": TEN}
    assert await shop.due_at(rule.id, "k3") == TOMORROW.replace(hour=0)
    # Launching again with the same id (a launch cut short) changes nothing.
    assert await launch_now(shop, rule, "spring", "Sencha") == {"audience": 5, "waiting": 3}
    # k1 is no longer key by tomorrow: they leave the line without a message.
    await shop.change("k1", value_score=1.0, tier="regular")
    # A run the next day: the next two by value, with the launch's content.
    shop.clock.set(TOMORROW)
    assert await shop.fire() == (3, 2)
    decided = await bodies(shop)
    assert decided["k3"] == ("spring", "pending", "Sencha")
    assert decided["k2"] == ("spring", "pending", "Sencha")
    assert "k1" not in decided
    assert await shop.line(rule.id) == {}
    async with shop.engine.connect() as conn:
        over = await conn.scalar(
            text("SELECT count(*) FROM outreach.actions WHERE reason = 'daily_limit'")
        )
    assert over == 0


async def test_a_later_launch_takes_the_place_of_one_a_customer_still_waits_for(
    shop: Shop,
) -> None:
    rule = spring_news(1)
    shop.use(rule.model_dump(mode="json"))
    for n in (1, 2):
        await shop.change(f"k{n}", value_score=float(n))
    shop.clock.set(TEN)
    assert await launch_now(shop, rule, "spring", "Sencha") == {
        "audience": 2,
        "pending": 1,
        "waiting": 1,
    }
    # The same day the summer news: the day is spent, and k1 now waits for it instead.
    shop.clock.set(TEN + timedelta(hours=1))
    assert await launch_now(shop, rule, "summer", "Matcha") == {"audience": 2, "waiting": 2}
    assert await shop.line(rule.id) == {"k1": TEN, "k2": TEN + timedelta(hours=1)}
    shop.clock.set(TOMORROW)
    assert await shop.fire() == (2, 1)
    # The day's one slot goes to the most valuable: k2, who had the spring news, gets the
    # summer's; k1 waits another day, for the summer news, never the spring's.
    assert await sent_of(shop) == [("k2", "spring", "Sencha"), ("k2", "summer", "Matcha")]
    assert await shop.line(rule.id) == {"k1": TEN}
    shop.clock.set(TOMORROW + timedelta(days=1))
    assert await shop.fire() == (1, 1)
    assert (await sent_of(shop))[0] == ("k1", "summer", "Matcha")


async def sent_of(shop: Shop) -> list[tuple[str, str, str]]:
    async with shop.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT customer_id, occurrence, body FROM outreach.actions "
                "WHERE rule_id = 'spring-news' ORDER BY customer_id, decided_at"
            )
        )
        return [(r.customer_id, r.occurrence, r.body.strip()) for r in rows]


async def test_a_customer_waiting_for_two_launches_gets_each_with_its_own_content(
    shop: Shop,
) -> None:
    spring = spring_news(1)
    autumn = spring_news(1).model_copy(update={"id": "autumn-news"})
    shop.use(spring.model_dump(mode="json"), autumn.model_dump(mode="json"))
    for n in (1, 2):
        await shop.change(f"k{n}", value_score=float(n))
    shop.clock.set(TEN)
    # Each rule's one slot today goes to k2; k1 waits in both lines.
    assert (await launch_now(shop, spring, "spring", "Sencha"))["waiting"] == 1
    assert (await launch_now(shop, autumn, "autumn", "Hojicha"))["waiting"] == 1
    shop.clock.set(TOMORROW)
    # One pass decides k1 with one card: the first launch now, the other at the next pass,
    # each message with its own launch's items.
    assert await shop.fire() == (2, 1)
    assert await shop.fire() == (1, 1)
    async with shop.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT rule_id, occurrence, body FROM outreach.actions WHERE customer_id = 'k1'")
        )
        got = sorted((r.rule_id, r.occurrence, r.body.strip()) for r in rows)
    assert got == [("autumn-news", "autumn", "Hojicha"), ("spring-news", "spring", "Sencha")]
    assert await shop.line(spring.id) == {} and await shop.line(autumn.id) == {}
