"""Deciding actions in the database: the one place where a rule's match becomes a ledger row.

Every path that fires rules (changes, schedules, broadcasts) comes here, inside its own
transaction. The customers' replica rows are locked first (in key order), so two decisions for
one customer never run at once: the frequency cap is counted and taken under that lock, and
concurrent evaluations cannot race past it. The ledger's unique (rule, customer, occurrence)
makes a second decision of the same action impossible even across crashes and replays.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core import templates
from services.outreach.core.policy import (
    NO_LIMITS,
    Candidate,
    Decision,
    Outcome,
    Policy,
    decide,
    decide_all,
    history_days,
)
from services.outreach.core.rules import Match, Rule
from services.outreach.core.unsubscribe import unsubscribe_url
from services.outreach.settings import OutreachSettings

# Statuses that occupy a frequency-cap slot: sent, or on its way.
COUNTING = ("pending", "sent", "scheduled", "unknown")


@dataclass(frozen=True, slots=True)
class Recorded:
    """A new ledger row (returned for logging, tests and the actions stream)."""

    action_id: str
    rule_id: str
    customer_id: str
    occurrence: str
    status: str
    reason: str | None


_LOCK = text(
    "SELECT customer_id FROM outreach.cards WHERE customer_id = ANY(CAST(:ids AS text[])) "
    "ORDER BY customer_id FOR UPDATE"
)
_HISTORY = text(
    f"""
    SELECT customer_id, coalesce(sent_at, not_before, decided_at) AS at, kind, rule_id
    FROM outreach.actions
    WHERE customer_id = ANY(CAST(:ids AS text[])) AND decided_at >= :since
      AND status IN ({", ".join(f"'{s}'" for s in COUNTING)})
    """
)
_SUPPRESSED = text(
    "SELECT customer_id FROM outreach.suppressions WHERE customer_id = ANY(CAST(:ids AS text[]))"
)
_EXISTING = text(
    """
    SELECT a.rule_id, a.customer_id, a.occurrence FROM outreach.actions a
    JOIN unnest(CAST(:rules AS text[]), CAST(:customers AS text[]), CAST(:occ AS text[]))
        AS t(rule_id, customer_id, occurrence)
      USING (rule_id, customer_id, occurrence)
    """
)
_INSERT = text(
    """
    INSERT INTO outreach.actions (id, rule_id, customer_id, occurrence, kind, channel,
        priority, status, reason, detail, decided_at, not_before, next_attempt_at, subject,
        body, offer)
    SELECT * FROM unnest(CAST(:id AS text[]), CAST(:rule AS text[]), CAST(:customer AS text[]),
        CAST(:occ AS text[]), CAST(:kind AS text[]), CAST(:channel AS text[]),
        CAST(:priority AS smallint[]), CAST(:status AS text[]), CAST(:reason AS text[]),
        CAST(:detail AS text[]), CAST(:decided AS timestamptz[]),
        CAST(:not_before AS timestamptz[]), CAST(:next AS timestamptz[]),
        CAST(:subject AS text[]), CAST(:body AS text[]), CAST(:offer AS jsonb[]))
    ON CONFLICT (rule_id, customer_id, occurrence) DO NOTHING
    RETURNING id, rule_id, customer_id, occurrence, status, reason, kind, channel, decided_at,
        not_before
    """
)
_OUTBOX = text(
    """
    INSERT INTO outreach.outbox (customer_id, payload, created_at)
    SELECT c, p, now() FROM unnest(CAST(:customers AS text[]), CAST(:payloads AS bytea[]))
        AS t(c, p)
    """
)

_STATUS = {
    Outcome.SEND: "pending",
    Outcome.DEFER: "scheduled",
    Outcome.HOLD: "held",
    Outcome.SUPPRESS: "suppressed",
}


async def lock_customers(conn: AsyncConnection, customer_ids: Sequence[str]) -> None:
    await conn.execute(_LOCK, {"ids": sorted(set(customer_ids))})


async def contact_history(
    conn: AsyncConnection, customer_ids: Sequence[str], since: datetime | None
) -> dict[str, list[tuple[datetime, str, str]]]:
    """Each customer's contacts decided since ``since`` (None: ever)."""
    out: dict[str, list[tuple[datetime, str, str]]] = {c: [] for c in customer_ids}
    params = {"ids": list(customer_ids), "since": since or datetime(1970, 1, 1, tzinfo=UTC)}
    for row in await conn.execute(_HISTORY, params):
        out[row.customer_id].append((row.at, row.kind, row.rule_id))
    return out


async def suppressed_among(conn: AsyncConnection, customer_ids: Sequence[str]) -> set[str]:
    return set((await conn.execute(_SUPPRESSED, {"ids": list(customer_ids)})).scalars())


async def decide_and_record(
    conn: AsyncConnection,
    matches: Sequence[Match],
    cards: Mapping[str, Mapping[str, Any]],
    *,
    policy: Policy,
    settings: OutreachSettings,
    now: datetime,
) -> list[Recorded]:
    """Decide every match under the contact policy and write the new ledger rows."""
    if not matches:
        return []
    customers = sorted({m.customer_id for m in matches})
    await lock_customers(conn, customers)
    existing = {
        (r.rule_id, r.customer_id, r.occurrence)
        for r in await conn.execute(
            _EXISTING,
            {
                "rules": [m.rule.id for m in matches],
                "customers": [m.customer_id for m in matches],
                "occ": [m.occurrence for m in matches],
            },
        )
    }
    # Already decided (a replay, a retry): they neither act again nor compete.
    todo = [m for m in matches if (m.rule.id, m.customer_id, m.occurrence) not in existing]
    if not todo:
        return []
    # ``once`` and ``max_per_customer`` count a rule's messages over all time.
    forever = any(m.rule.limits.once or m.rule.limits.max_per_customer for m in todo)
    days = max(history_days(m.rule.limits, policy) for m in todo)
    since = None if forever else now - timedelta(days=days)
    history = await contact_history(conn, customers, since)
    suppressed = await suppressed_among(conn, customers)

    rows: list[dict[str, Any]] = []
    by_customer: dict[str, list[Match]] = {}
    for m in todo:
        by_customer.setdefault(m.customer_id, []).append(m)
    for customer_id, ms in by_customer.items():
        card = cards[customer_id]
        candidates = [Candidate.of(m) for m in ms]
        # One rule can match several times in a batch (two events of one customer): those
        # candidates are equal values, so each is paired with its match by identity (decide_all
        # hands back the objects it was given), never by rule id, or occurrences would be lost.
        match_of = {id(c): m for c, m in zip(candidates, ms, strict=True)}
        decisions = decide_all(
            card,
            candidates,
            history[customer_id],
            suppressed=customer_id in suppressed,
            policy=policy,
            now=now,
        )
        for candidate, decision in decisions:
            rows.append(_row(match_of[id(candidate)], card, decision, settings, now))
    return await _insert(conn, rows)


def _row(
    match: Match,
    card: Mapping[str, Any],
    decision: Decision,
    settings: OutreachSettings,
    now: datetime,
) -> dict[str, Any]:
    rule = match.rule
    status = _STATUS[decision.outcome]
    reason = decision.reason.value if decision.reason else None
    subject = body = None
    offer = rule.action.offer.model_dump(mode="json") if rule.action.offer else None
    if decision.goes_out or decision.outcome is Outcome.HOLD:
        link = unsubscribe_url(
            settings.public_base_url,
            match.customer_id,
            settings.unsubscribe_secret.get_secret_value(),
        )
        try:
            subject, body = templates.render(
                rule.action.template, templates.build_context(card, offer, link)
            )
        except templates.TemplateError as exc:
            status, reason, decision = (
                "failed",
                "template_error",
                Decision(Outcome.SUPPRESS, detail=str(exc)[:500]),
            )
    return {
        "id": str(uuid.uuid4()),
        "rule": rule.id,
        "customer": match.customer_id,
        "occ": match.occurrence,
        "kind": rule.action.kind,
        "channel": rule.action.channel,
        "priority": rule.priority,
        "status": status,
        "reason": reason,
        "detail": decision.detail or None,
        "decided": now,
        "not_before": decision.until if status == "scheduled" else None,
        "next": now if status == "pending" else None,
        "subject": subject,
        "body": body,
        "offer": orjson.dumps(offer).decode() if offer is not None else None,
    }


async def _insert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[Recorded]:
    if not rows:
        return []
    columns = [
        "id",
        "rule",
        "customer",
        "occ",
        "kind",
        "channel",
        "priority",
        "status",
        "reason",
        "detail",
        "decided",
        "not_before",
        "next",
        "subject",
        "body",
        "offer",
    ]
    inserted = (await conn.execute(_INSERT, {c: [r[c] for r in rows] for c in columns})).all()
    if inserted:
        await conn.execute(
            _OUTBOX,
            {
                "customers": [r.customer_id for r in inserted],
                "payloads": [
                    orjson.dumps(
                        {
                            "action_id": r.id,
                            "rule_id": r.rule_id,
                            "customer_id": r.customer_id,
                            "occurrence": r.occurrence,
                            "kind": r.kind,
                            "channel": r.channel,
                            "status": r.status,
                            "reason": r.reason,
                            "decided_at": r.decided_at.isoformat(),
                            "not_before": r.not_before.isoformat() if r.not_before else None,
                        }
                    )
                    for r in inserted
                ],
            },
        )
    return [
        Recorded(r.id, r.rule_id, r.customer_id, r.occurrence, r.status, r.reason) for r in inserted
    ]


async def recheck(
    conn: AsyncConnection, action: Any, *, policy: Policy, now: datetime
) -> str | None:
    """Just before delivery: is this action still allowed? Returns the suppression reason
    (the customer unsubscribed, withdrew consent) or None."""
    card = await conn.scalar(
        text("SELECT card FROM outreach.cards WHERE customer_id = :c"),
        {"c": action.customer_id},
    )
    suppressed = bool(await suppressed_among(conn, [action.customer_id]))
    if card is None:
        return "suppressed" if suppressed else None
    candidate = Candidate(action.rule_id, action.kind, action.channel, action.priority, NO_LIMITS)
    decision = decide(card, candidate, [], suppressed=suppressed, policy=policy, now=now)
    if decision.outcome is Outcome.SUPPRESS and decision.reason is not None:
        return decision.reason.value
    return None


_HELD = text(
    """
    SELECT id, rule_id, customer_id, kind, channel, priority FROM outreach.actions
    WHERE status = 'held' AND customer_id = ANY(CAST(:ids AS text[]))
    ORDER BY customer_id, priority DESC, decided_at
    FOR UPDATE
    """
)
_REDECIDE = text(
    """
    UPDATE outreach.actions a SET status = v.status, reason = v.reason, detail = v.detail,
        not_before = v.not_before, next_attempt_at = v.next
    FROM unnest(CAST(:ids AS text[]), CAST(:status AS text[]), CAST(:reason AS text[]),
                CAST(:detail AS text[]), CAST(:not_before AS timestamptz[]),
                CAST(:next AS timestamptz[])) AS v(id, status, reason, detail, not_before, next)
    WHERE a.id = v.id
    """
)


async def release_held(
    conn: AsyncConnection,
    cards: Mapping[str, Mapping[str, Any]],
    rules: Mapping[str, Rule],
    *,
    policy: Policy,
    now: datetime,
) -> int:
    """The customers' complaints are resolved: decide their held actions again, now — so a
    released recall still meets quiet hours, the frequency cap and the rule's limits."""
    customers = sorted(cards)
    await lock_customers(conn, customers)
    held = (await conn.execute(_HELD, {"ids": customers})).all()
    if not held:
        return 0
    history = await contact_history(conn, customers, None)
    suppressed = await suppressed_among(conn, customers)
    updates: list[tuple[str, Decision]] = []
    for customer_id in {row.customer_id for row in held}:
        rows = [r for r in held if r.customer_id == customer_id]
        candidates = [
            Candidate(
                r.rule_id,
                r.kind,
                r.channel,
                r.priority,
                rules[r.rule_id].limits if r.rule_id in rules else NO_LIMITS,
            )
            for r in rows
        ]
        by_candidate = {id(c): r.id for c, r in zip(candidates, rows, strict=True)}
        for candidate, decision in decide_all(
            cards[customer_id],
            candidates,
            history[customer_id],
            suppressed=customer_id in suppressed,
            policy=policy,
            now=now,
        ):
            updates.append((by_candidate[id(candidate)], decision))
    await conn.execute(
        _REDECIDE,
        {
            "ids": [i for i, _ in updates],
            "status": [_STATUS[d.outcome] for _, d in updates],
            "reason": [d.reason.value if d.reason else None for _, d in updates],
            "detail": [d.detail or None for _, d in updates],
            "not_before": [d.until if d.outcome is Outcome.DEFER else None for _, d in updates],
            "next": [now if d.outcome is Outcome.SEND else None for _, d in updates],
        },
    )
    return len(updates)
