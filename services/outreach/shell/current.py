"""The rules and the contact policy in force in this process.

Each process keeps the enabled rules compiled in a :class:`~services.outreach.core.rules.RuleSet`
and reloads them when it changes them itself, and every few seconds for changes made by other
instances (they are kept by :mod:`services.outreach.store.rules` and
:mod:`services.outreach.store.policy`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.core.policy import Policy
from services.outreach.core.rules import Rule, RuleSet
from services.outreach.store.policy import load_policy
from services.outreach.store.rules import load_rules


class Current:
    def __init__(self) -> None:
        self.rules: dict[str, Rule] = {}
        self.ruleset = RuleSet([])
        self.policy = Policy()

    async def reload(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            rules = await load_rules(conn)
            policy = await load_policy(conn)
        self.rules = {r.id: r for r in rules}
        self.ruleset = RuleSet(rules)
        self.policy = policy
