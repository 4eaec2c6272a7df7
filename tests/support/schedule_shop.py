"""A shop for outreach's scheduler tests: its own database, a fixed clock, the rules in force
set by the test, customers' changes applied through the consumer's write path
(``ChangeApplier.apply``) and scheduler passes through ``fire_due``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.core.policy import Policy
from services.outreach.core.rule_pack import DEFAULT_PACK
from services.outreach.core.rules import Rule, RuleSet
from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.settings import OutreachSettings
from services.outreach.shell.consumer import ChangeApplier
from services.outreach.shell.current import Current
from services.outreach.shell.scheduler import fire_due
from shared.changes import Change
from shared.clock import FixedClock
from shared.db import make_engine
from shared.settings import CommonSettings
from tests.support.databases import fresh_settings


@dataclass
class Shop:
    engine: AsyncEngine
    clock: FixedClock
    current: Current
    applier: ChangeApplier
    settings: OutreachSettings

    def use(self, *rules: dict[str, Any]) -> None:
        validated = [Rule.model_validate(r) for r in rules]
        self.current.rules = {r.id: r for r in validated}
        self.current.ruleset = RuleSet(validated)
        self.current.policy = Policy()

    async def change(self, customer_id: str, **card: Any) -> None:
        """A visit of the customer at the clock's instant, with their (key, UTC) card."""
        await self.applier.apply([self.visit(customer_id, **card)])

    async def changes(self, cards: dict[str, dict[str, Any]]) -> None:
        """Visits of these customers in one batch, each with its card as :meth:`change`."""
        await self.applier.apply([self.visit(c, **card) for c, card in cards.items()])

    def visit(self, customer_id: str, **card: Any) -> Change:
        """The change of a visit of the customer at the clock's instant, with their card."""
        now = self.clock.now().isoformat()
        full = copy.deepcopy(dict(SAMPLE_CARD))
        full["customer_id"] = customer_id
        full["profile"]["timezone"] = "UTC"
        full.update(card)
        event_id = str(uuid.uuid4())
        change = Change.model_validate(
            {
                "change_id": f"event:{event_id}",
                "customer_id": customer_id,
                "cause": "event",
                "at": now,
                "event": {
                    "event_id": event_id,
                    "event_type": "visit.recorded",
                    "customer_id": customer_id,
                    "occurred_at": now,
                    "received_at": now,
                    "source": "test",
                    "data": {"visit_id": f"v-{event_id}", "channel": "web"},
                },
                "card": full,
                "stage_change": None,
            }
        )
        return change

    async def fire(self) -> tuple[int, int]:
        """One scheduler pass now: (rows due, actions decided)."""
        due, recorded = await fire_due(self.engine, self.clock, self.current, self.settings)
        return due, len(recorded)

    async def due_at(self, rule_id: str, customer_id: str) -> datetime | None:
        async with self.engine.connect() as conn:
            due: datetime | None = await conn.scalar(
                text(
                    "SELECT due_at FROM outreach.schedule WHERE rule_id = :r AND customer_id = :c"
                ),
                {"r": rule_id, "c": customer_id},
            )
        return due

    async def line(self, rule_id: str) -> dict[str, datetime]:
        """Who waits in the rule's line for a day with a slot, and since when."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT customer_id, waiting_since FROM outreach.schedule "
                    "WHERE rule_id = :r AND waiting_since IS NOT NULL"
                ),
                {"r": rule_id},
            )
            return {r.customer_id: r.waiting_since for r in rows}


@asynccontextmanager
async def opened_shop(settings: CommonSettings, at: datetime) -> AsyncIterator[Shop]:
    """A shop on a database of its own, its clock at ``at``."""
    async with fresh_settings(settings, topics=False) as own:
        engine = make_engine(own, pool_size=2)
        try:
            clock = FixedClock(at)
            current = Current()
            outreach = OutreachSettings()
            applier = ChangeApplier(engine, outreach, clock, current)
            yield Shop(engine, clock, current, applier, outreach)
        finally:
            await engine.dispose()


def pack(rule_id: str) -> dict[str, Any]:
    """The default pack's rule, as a document the test may change."""
    return copy.deepcopy(next(r for r in DEFAULT_PACK if r["id"] == rule_id))
