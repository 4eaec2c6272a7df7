"""Outreach's change consumer locks a customer (their replica row, ``FOR UPDATE``: the decision
path's lock, which broadcasts, the scheduler and opt-outs take too) only when the batch decides
an action for them: a batch in which no rule fires, or whose matches the ledger already holds,
takes no such lock, and one that decides for one customer locks that customer alone. Held
actions are still released when a later card shows the complaint closed.

On the real PostgreSQL, through the consumer's own write path (``ChangeApplier.apply``); the
statements each batch sends are watched on the engine.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.core.policy import Policy
from services.outreach.core.rules import Rule, RuleSet
from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.settings import OutreachSettings
from services.outreach.shell.consumer import ChangeApplier
from services.outreach.shell.current import Current
from shared.changes import Change
from shared.clock import FixedClock

pytestmark = pytest.mark.integration

# 12:00 UTC: 13:00 in London (the sample card's zone), outside quiet hours.
NOW = datetime(2030, 6, 14, 12, tzinfo=UTC)


class Shop:
    """This test's customers and rules, marked with one token (the session's database is
    shared with other tests)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.engine = engine
        self.current = Current()
        self.applier = ChangeApplier(engine, OutreachSettings(), FixedClock(NOW), self.current)

    def cid(self, n: int) -> str:
        return f"lk-{self.tag}-{n:02d}"

    def use(self, *rules: dict[str, Any]) -> None:
        """Put these rules (and the default policy) in force for this shop's applier."""
        validated = [
            Rule.model_validate(
                {
                    "id": f"lk-{self.tag}-{r['id']}",
                    "name": r["id"],
                    "conditions": {"eq": ["profile.attributes.run", self.tag]},
                    **{k: v for k, v in r.items() if k != "id"},
                }
            )
            for r in rules
        ]
        self.current.rules = {r.id: r for r in validated}
        self.current.ruleset = RuleSet(validated)
        self.current.policy = Policy()

    def change(self, n: int, *, stage: str = "mature", complaints_open: int = 0) -> Change:
        """A visit of customer ``n``, with their card."""
        card = copy.deepcopy(dict(SAMPLE_CARD))
        card.update(customer_id=self.cid(n), stage=stage)
        card["profile"]["attributes"] = {"run": self.tag}
        card["complaints"] = {**card["complaints"], "open": complaints_open}
        event_id = str(uuid.uuid4())
        at = NOW.isoformat()
        return Change.model_validate(
            {
                "change_id": f"event:{event_id}",
                "customer_id": self.cid(n),
                "cause": "event",
                "at": at,
                "event": {
                    "event_id": event_id,
                    "event_type": "visit.recorded",
                    "customer_id": self.cid(n),
                    "occurred_at": at,
                    "received_at": at,
                    "source": "test",
                    "data": {"visit_id": f"v-{event_id}", "channel": "web"},
                },
                "card": card,
                "stage_change": None,
            }
        )

    async def actions(self) -> list[tuple[str, str, str]]:
        """(customer, rule, status) of this shop's ledger rows."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT customer_id, rule_id, status FROM outreach.actions "
                    "WHERE customer_id LIKE :p ORDER BY customer_id, rule_id"
                ),
                {"p": f"lk-{self.tag}-%"},
            )
            return [(r.customer_id, r.rule_id, r.status) for r in rows]


@contextmanager
def locks_taken(engine: AsyncEngine) -> Iterator[list[str]]:
    """The parameters of every ``FOR UPDATE`` statement sent while the block runs, as text."""
    seen: list[str] = []

    def watch(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        if "FOR UPDATE" in statement:
            seen.append(repr(params))

    event.listen(engine.sync_engine, "before_cursor_execute", watch)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", watch)


def _customers_in(locks: Sequence[str], shop: Shop, customers: range) -> list[str]:
    return [shop.cid(n) for n in customers if any(shop.cid(n) in lock for lock in locks)]


def _stage_rule(rule_id: str, kind: str = "care") -> dict[str, Any]:
    return {
        "id": rule_id,
        "trigger": {"type": "stage", "to": ["mature"]},
        "action": {"kind": kind, "channel": "webhook", "template": {"body": "Hello"}},
    }


_ON_COMPLAINT = {
    "id": "on-complaint",
    "trigger": {"type": "event", "event": "complaint.opened"},
    "action": {"kind": "care", "channel": "webhook", "template": {"body": "Sorry"}},
}


async def test_a_batch_in_which_no_rule_fires_locks_no_customer(engine: AsyncEngine) -> None:
    shop = Shop(engine)
    shop.use(_ON_COMPLAINT)
    with locks_taken(engine) as locks:
        recorded = await shop.applier.apply([shop.change(n) for n in range(5)])
    assert recorded == []
    assert locks == []
    async with engine.connect() as conn:
        saved = await conn.scalar(
            text("SELECT count(*) FROM outreach.cards WHERE customer_id LIKE :p"),
            {"p": f"lk-{shop.tag}-%"},
        )
    assert saved == 5  # the batch did its work: every card is in the replica


async def test_matches_the_ledger_already_holds_lock_no_customer(engine: AsyncEngine) -> None:
    shop = Shop(engine)
    shop.use(_stage_rule("mature-care"))
    first = await shop.applier.apply([shop.change(n) for n in range(3)])
    assert len(first) == 3
    # The stage rule matches every change of the episode; the ledger's key makes it act once,
    # and the customers it already acted for are not locked to find that out.
    with locks_taken(engine) as locks:
        again = await shop.applier.apply([shop.change(n) for n in range(3)])
    assert again == []
    assert locks == []
    assert len(await shop.actions()) == 3


async def test_a_batch_locks_only_the_customers_it_decides_for(engine: AsyncEngine) -> None:
    shop = Shop(engine)
    shop.use(_stage_rule("mature-care"))
    batch = [shop.change(0), *(shop.change(n, stage="growing") for n in range(1, 6))]
    with locks_taken(engine) as locks:
        recorded = await shop.applier.apply(batch)
    assert [r.customer_id for r in recorded] == [shop.cid(0)]
    assert _customers_in(locks, shop, range(6)) == [shop.cid(0)]


async def test_a_held_action_is_still_released_when_the_complaint_closes(
    engine: AsyncEngine,
) -> None:
    shop = Shop(engine)
    shop.use(_stage_rule("mature-news", kind="announcement"))
    await shop.applier.apply([shop.change(0, complaints_open=1), shop.change(1)])
    rule = f"lk-{shop.tag}-mature-news"
    assert await shop.actions() == [(shop.cid(0), rule, "held"), (shop.cid(1), rule, "pending")]
    # Customer 0's complaint closes, customer 1 merely visits again: 0 alone is locked, and
    # their held announcement is decided again, now.
    with locks_taken(engine) as locks:
        await shop.applier.apply([shop.change(0), shop.change(1)])
    assert await shop.actions() == [(shop.cid(0), rule, "pending"), (shop.cid(1), rule, "pending")]
    assert _customers_in(locks, shop, range(2)) == [shop.cid(0)]
