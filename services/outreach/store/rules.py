"""Where rules are kept. Rules are versioned: every save writes a new version row beside the
current definition, so ``GET /v1/rules/{id}/versions`` shows what a rule said when it acted.
A deleted rule keeps its versions; creating it again continues their numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.rules import Rule
from services.outreach.schemas import RuleDefinition, RuleOut, RuleVersion

_SELECT = (
    "SELECT id, version, definition, enabled, created_at, updated_at FROM outreach.rules "
    "WHERE deleted_at IS NULL"
)
_ONE = text(f"{_SELECT} AND id = :id")
_ALL = text(f"{_SELECT} ORDER BY id")
_VERSIONS = text(
    "SELECT version, definition, enabled, actor, created_at FROM outreach.rule_versions "
    "WHERE rule_id = :id ORDER BY version"
)
_DELETE = text(
    "UPDATE outreach.rules SET deleted_at = :now, updated_at = :now "
    "WHERE id = :id AND deleted_at IS NULL"
)


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


async def lock_rule(conn: AsyncConnection, rule_id: str) -> None:
    """Serialise writes to one rule until the transaction ends (two creates of one id cannot
    both succeed, and versions never interleave)."""
    await conn.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"outreach.rule:{rule_id}"},
    )


async def stored_rule(conn: AsyncConnection, rule_id: str) -> RuleOut | None:
    """The rule ``rule_id`` as stored, or None when there is none (or it was deleted)."""
    row = (await conn.execute(_ONE, {"id": rule_id})).first()
    return _out(row) if row is not None else None


async def stored_rules(conn: AsyncConnection) -> list[RuleOut]:
    """Every rule not deleted, in id order."""
    return [_out(r) for r in (await conn.execute(_ALL)).all()]


async def rule_versions(conn: AsyncConnection, rule_id: str) -> list[RuleVersion]:
    """Every version of the rule, oldest first (empty: there never was such a rule)."""
    return [
        RuleVersion(
            version=r.version,
            definition=r.definition,
            enabled=r.enabled,
            actor=r.actor,
            created_at=r.created_at,
        )
        for r in (await conn.execute(_VERSIONS, {"id": rule_id})).all()
    ]


async def delete_rule(conn: AsyncConnection, rule_id: str, now: datetime) -> None:
    """Mark the rule deleted; its versions stay."""
    await conn.execute(_DELETE, {"id": rule_id, "now": now})


def _out(row: Row[Any]) -> RuleOut:
    rule = RuleDefinition.model_validate({**row.definition, "enabled": row.enabled})
    return RuleOut(
        version=row.version, created_at=row.created_at, updated_at=row.updated_at, rule=rule
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
