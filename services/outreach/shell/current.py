"""The rules and the contact policy in force, and where they are kept.

Rules are versioned: every save writes a new version row beside the current definition, so
``GET /v1/rules/{id}/versions`` shows what a rule said when it acted. Each process keeps the
enabled rules compiled in a :class:`~services.outreach.core.rules.RuleSet` and reloads it when it
changes them itself, and every few seconds for changes made by other instances.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.outreach.core.policy import Policy
from services.outreach.core.rules import Rule, RuleSet


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


async def load_rules(conn: AsyncConnection) -> list[Rule]:
    rows = await conn.execute(
        text("SELECT definition, enabled FROM outreach.rules WHERE deleted_at IS NULL ORDER BY id")
    )
    return [Rule.model_validate({**r.definition, "enabled": r.enabled}) for r in rows]


async def save_rule(conn: AsyncConnection, rule: Rule, actor: str, now: datetime) -> int:
    """Insert or replace ``rule``; returns its new version number."""
    definition = rule.model_dump(mode="json", by_alias=True)
    version = await conn.scalar(
        text(
            """
            INSERT INTO outreach.rules AS r (id, version, definition, enabled, created_at,
                                             updated_at, deleted_at)
            VALUES (:id, 1, CAST(:d AS jsonb), :enabled, :now, :now, NULL)
            ON CONFLICT (id) DO UPDATE SET version = r.version + 1,
                definition = EXCLUDED.definition, enabled = EXCLUDED.enabled,
                updated_at = EXCLUDED.updated_at, deleted_at = NULL
            RETURNING version
            """
        ),
        {"id": rule.id, "d": _json(definition), "enabled": rule.enabled, "now": now},
    )
    await conn.execute(
        text(
            "INSERT INTO outreach.rule_versions (rule_id, version, definition, enabled, actor, "
            "created_at) VALUES (:id, :v, CAST(:d AS jsonb), :enabled, :actor, :now)"
        ),
        {
            "id": rule.id,
            "v": version,
            "d": _json(definition),
            "enabled": rule.enabled,
            "actor": actor,
            "now": now,
        },
    )
    return int(version)


async def load_policy(conn: AsyncConnection) -> Policy:
    raw = await conn.scalar(text("SELECT definition FROM outreach.policy WHERE id = 1"))
    return Policy.model_validate(raw) if raw is not None else Policy()


async def save_policy(conn: AsyncConnection, policy: Policy, now: datetime) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO outreach.policy (id, definition, updated_at)
            VALUES (1, CAST(:d AS jsonb), :now)
            ON CONFLICT (id) DO UPDATE SET definition = EXCLUDED.definition,
                updated_at = EXCLUDED.updated_at
            """
        ),
        {"d": _json(policy.model_dump(mode="json")), "now": now},
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
