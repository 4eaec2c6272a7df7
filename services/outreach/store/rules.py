"""Where rules are kept. Rules are versioned: every save writes a new version row beside the
current definition, so ``GET /v1/rules/{id}/versions`` shows what a rule said when it acted.
A deleted rule keeps its versions; creating it again continues their numbers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.rules import Rule
from services.outreach.core.trust import TRUSTED
from services.outreach.schemas import RuleDefinition, RuleHealth, RuleOut, RuleVersion
from shared.logging import get_logger

log = get_logger(__name__)

# With how many customers wait in the rule's line for a day with a slot (its daily limit
# passed them over; the partial index ix_schedule_waiting).
_SELECT = (
    "SELECT id, version, definition, enabled, created_at, updated_at, failures, last_error, "
    "last_error_at, disabled_reason, (SELECT count(*) FROM outreach.schedule s "
    "WHERE s.rule_id = r.id AND s.waiting_since IS NOT NULL) AS waiting "
    "FROM outreach.rules r WHERE deleted_at IS NULL"
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
    """The stored rules, trusted (checked when saved: nothing is compiled or rendered here).
    A row that no longer reads as a rule is left out and logged, never the others with it."""
    rows = await conn.execute(
        text(
            "SELECT id, definition, enabled FROM outreach.rules WHERE deleted_at IS NULL "
            "ORDER BY id"
        )
    )
    rules = []
    for r in rows:
        try:
            rules.append(
                Rule.model_validate({**r.definition, "enabled": r.enabled}, context=TRUSTED)
            )
        except ValidationError as exc:
            log.error("rule_unreadable", rule_id=r.id, error=str(exc)[:500])
    return rules


async def save_rule(
    conn: AsyncConnection, rule: Rule, actor: str, now: datetime, *, keep_health: bool = False
) -> int:
    """Insert or replace ``rule``; returns its new version number. A save starts the rule's
    health afresh (no failures, no disabled reason) unless ``keep_health`` (outreach itself
    disabling a failing rule); its last error stays visible either way."""
    definition = rule.model_dump(mode="json", by_alias=True)
    version = await conn.scalar(
        text(
            """
            INSERT INTO outreach.rules AS r (id, version, definition, enabled, created_at,
                                             updated_at, deleted_at)
            VALUES (:id, 1, CAST(:d AS jsonb), :enabled, :now, :now, NULL)
            ON CONFLICT (id) DO UPDATE SET version = r.version + 1,
                definition = EXCLUDED.definition, enabled = EXCLUDED.enabled,
                updated_at = EXCLUDED.updated_at, deleted_at = NULL,
                failures = CASE WHEN :keep THEN r.failures ELSE 0 END,
                disabled_reason = CASE WHEN :keep THEN r.disabled_reason END
            RETURNING version
            """
        ),
        {
            "id": rule.id,
            "d": _json(definition),
            "enabled": rule.enabled,
            "now": now,
            "keep": keep_health,
        },
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
    rule = RuleDefinition.model_validate(
        {**row.definition, "enabled": row.enabled}, context=TRUSTED
    )
    return RuleOut(
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
        rule=rule,
        health=RuleHealth(
            failures=row.failures,
            last_error=row.last_error,
            last_error_at=row.last_error_at,
            disabled_reason=row.disabled_reason,
        ),
        waiting_for_a_slot=row.waiting,
    )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
