"""Deciding actions in the database: the one place where a rule's match becomes a ledger row.

Every path that fires rules (changes, schedules, broadcasts) comes here, inside its own
transaction. The customers' replica rows are locked first (in key order), so two decisions for
one customer never run at once: the frequency cap is counted and taken under that lock, and
concurrent evaluations cannot race past it. The ledger's unique (rule, customer, occurrence)
makes a second decision of the same action impossible even across crashes and replays.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core import templates
from services.outreach.core.arms import in_rule_control
from services.outreach.core.goals import predicted_probability
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
from services.outreach.core.template_limits import RenderLimits
from services.outreach.core.unsubscribe import LINK_PLACEHOLDER
from services.outreach.settings import OutreachSettings
from services.outreach.store import ledger
from services.outreach.store.ledger import Recorded
from services.outreach.store.replica import card_of, lock_customers

# How long deciding may hold the event loop between two renders before it lets others run.
YIELD_SECONDS = 0.02

_STATUS = {
    Outcome.SEND: "pending",
    Outcome.DEFER: "scheduled",
    Outcome.HOLD: "held",
    Outcome.SUPPRESS: "suppressed",
}


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
    existing = await ledger.decided_already(
        conn, [(m.rule.id, m.customer_id, m.occurrence) for m in matches]
    )
    # Already decided (a replay, a retry): they neither act again nor compete.
    todo = [m for m in matches if (m.rule.id, m.customer_id, m.occurrence) not in existing]
    if not todo:
        return []
    # ``once`` and ``max_per_customer`` count a rule's messages over all time.
    forever = any(m.rule.limits.once or m.rule.limits.max_per_customer for m in todo)
    days = max(history_days(m.rule.limits, policy) for m in todo)
    since = None if forever else now - timedelta(days=days)
    history = await ledger.contact_history(conn, customers, since)
    suppressed = await ledger.suppressed_among(conn, customers)

    rows: list[dict[str, Any]] = []
    limits = render_limits(settings)
    # Rendering is the costly step here (each render within ``limits``): let the event loop
    # answer others (health checks, heartbeats) between renders when it has waited this long.
    yielded = time.perf_counter()
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
            rows.append(_row(match_of[id(candidate)], card, decision, settings, now, limits))
        if time.perf_counter() - yielded > YIELD_SECONDS:
            await asyncio.sleep(0)
            yielded = time.perf_counter()
    return await ledger.record(conn, rows)


def render_limits(settings: OutreachSettings) -> RenderLimits:
    """The hard limits a template renders within, with this service's time budget."""
    return RenderLimits(seconds=settings.template_render_ms / 1000)


def _row(
    match: Match,
    card: Mapping[str, Any],
    decision: Decision,
    settings: OutreachSettings,
    now: datetime,
    limits: RenderLimits,
) -> dict[str, Any]:
    rule = match.rule
    status = _STATUS[decision.outcome]
    reason = decision.reason.value if decision.reason else None
    subject = body = None
    offer = rule.action.offer.model_dump(mode="json") if rule.action.offer else None
    if decision.goes_out or decision.outcome is Outcome.HOLD:
        # The link is minted when the message is sent (it expires, and a held message may
        # wait for weeks): delivery puts it in the placeholder's place.
        try:
            subject, body = templates.render(
                rule.action.template,
                templates.build_context(card, offer, LINK_PLACEHOLDER),
                limits,
            )
        except templates.TemplateError as exc:
            # This customer's card took the template over a limit, or it does not render:
            # the action fails, the batch goes on.
            limited = isinstance(exc, templates.TemplateLimit)
            status, reason, decision = (
                "failed",
                templates.TEMPLATE_LIMIT if limited else "template_error",
                Decision(Outcome.SUPPRESS, detail=str(exc)[:500]),
            )
    arm = None
    if rule.action.audience == "customer":
        control = in_rule_control(rule.id, match.customer_id, rule.control_percent)
        arm = "control" if control else "treatment"
        if control and status in ("pending", "scheduled"):
            # Held out: decided exactly like the sent ones (the instant it would have gone
            # out stays in not_before), never delivered.
            status = "control"
    goal = rule.measured_goal
    baseline = (
        predicted_probability(card, goal.within_days or 30)
        if goal.event == "order.placed" and goal.filters is None
        else None
    )
    return {
        "id": str(uuid.uuid4()),
        "rule": rule.id,
        "customer": match.customer_id,
        "occ": match.occurrence,
        "kind": rule.action.kind,
        "channel": rule.action.channel,
        "channel_id": rule.action.channel_id,
        "audience": rule.action.audience,
        "priority": rule.priority,
        "status": status,
        "reason": reason,
        "detail": decision.detail or None,
        "decided": now,
        "not_before": decision.until if status in ("scheduled", "control") else None,
        "next": now if status == "pending" else None,
        "subject": subject,
        "body": body,
        "offer": orjson.dumps(offer).decode() if offer is not None else None,
        "arm": arm,
        "tier": card.get("tier"),
        "strategy": card.get("strategy"),
        "baseline": baseline,
        "goal": orjson.dumps(goal.model_dump(mode="json")).decode(),
    }


async def recheck(
    conn: AsyncConnection, action: Any, *, policy: Policy, now: datetime
) -> str | None:
    """Just before delivery: is this action still allowed? Returns the suppression reason
    (the customer unsubscribed, withdrew consent) or None."""
    card = await card_of(conn, action.customer_id)
    suppressed = bool(await ledger.suppressed_among(conn, [action.customer_id]))
    if card is None:
        return "suppressed" if suppressed else None
    candidate = Candidate(
        action.rule_id, action.kind, action.channel, action.priority, NO_LIMITS, action.audience
    )
    decision = decide(card, candidate, [], suppressed=suppressed, policy=policy, now=now)
    if decision.outcome is Outcome.SUPPRESS and decision.reason is not None:
        return decision.reason.value
    return None


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
    held = await ledger.held_actions(conn, customers)
    if not held:
        return 0
    history = await ledger.contact_history(conn, customers, None)
    suppressed = await ledger.suppressed_among(conn, customers)
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
    await ledger.redecide(
        conn,
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
