"""Rules that raise are isolated: each failure is counted against its rule (in the batch's
transaction, so a retried batch counts nothing twice), and a rule that reaches
``rule_failure_limit`` failures since it was last saved is disabled by outreach itself — a new
version saved by the actor ``outreach``, the reason in the audit log and on
``GET /v1/rules/{id}``, and a metric."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.rules import RuleFailure
from services.outreach.store.rule_health import add_failures, set_disabled_reason
from services.outreach.store.rules import lock_rule, save_rule, stored_rule
from shared import audit
from shared.logging import get_logger

log = get_logger(__name__)

RULE_FAILURES = Counter(
    "tend_outreach_rule_failures_total",
    "Times a rule raised while matching or scheduling a change (it was skipped for it)",
    ["rule"],
)
RULES_DISABLED = Counter(
    "tend_outreach_rules_disabled_total",
    "Rules outreach disabled because they kept failing",
    ["rule"],
)
OUTREACH = audit.Actor("outreach")


async def record_failures(
    conn: AsyncConnection, failures: Iterable[RuleFailure], *, limit: int, now: datetime
) -> list[str]:
    """Count ``failures`` and disable the rules that reached ``limit``; returns their ids (the
    caller reloads its rules once the transaction has committed)."""
    by_rule: dict[str, tuple[int, str]] = {}
    for failure in failures:
        times, _ = by_rule.get(failure.rule_id, (0, ""))
        by_rule[failure.rule_id] = (times + 1, failure.error)
    if not by_rule:
        return []
    for rule_id in sorted(by_rule):  # the lock every writer of a rule takes, in one order
        await lock_rule(conn, rule_id)
    for rule_id, (times, error) in by_rule.items():
        RULE_FAILURES.labels(rule_id).inc(times)
        log.warning("rule_failed", rule_id=rule_id, times=times, error=error)
    disabled = []
    for rule_id, (total, enabled) in (await add_failures(conn, by_rule, now)).items():
        if enabled and total >= limit:
            reason = f"disabled by outreach after {total} failures; last: {by_rule[rule_id][1]}"
            await _disable(conn, rule_id, reason[:1000], now)
            disabled.append(rule_id)
    return disabled


async def _disable(conn: AsyncConnection, rule_id: str, reason: str, now: datetime) -> None:
    before = await stored_rule(conn, rule_id)
    if before is None:
        return
    disabled = before.rule.model_copy(update={"enabled": False})
    await save_rule(conn, disabled, OUTREACH.name, now, keep_health=True)
    await set_disabled_reason(conn, rule_id, reason)
    after = await stored_rule(conn, rule_id)
    await audit.record(
        conn,
        actor=OUTREACH,
        service="outreach",
        action="rule.disabled",
        subject=rule_id,
        before=before,
        after=after,
    )
    RULES_DISABLED.labels(rule_id).inc()
    log.error("rule_disabled", rule_id=rule_id, reason=reason)
