"""Backtesting a rule: what it would have sent over the recorded history, after the policy.

The recorded history is the change stream itself (``crm.customer-changes.v1``, kept 35 days),
read from ``days`` ago to its current end by :mod:`services.outreach.shell.recorded`. The
backtest replays it through the same pure pieces the live path uses — the rule index, the
schedule maths and the contact policy — in time order, with each customer's simulated contact
history, the schedule firing between changes, and today's suppression list. Only this rule
acts, as if it had been the only rule live over the window, so its counts equal what a replay
of that history with this rule sends.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.outreach.core.policy import Candidate, Outcome, Policy, decide_all
from services.outreach.core.rules import Match, Rule, RuleSet
from services.outreach.core.schedules import next_due, occurrence_key
from shared.changes import Change


@dataclass
class BacktestResult:
    changes: int = 0
    customers: int = 0
    decided: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    kept: set[tuple[str, str]] = field(default_factory=set)  # (customer, occurrence)


def simulate(
    rule: Rule,
    changes: Iterable[Change],
    *,
    policy: Policy,
    suppressed: set[str],
    until: datetime,
) -> BacktestResult:
    """Replay ``changes`` (oldest first) with ``rule`` as the only live rule."""
    live = rule.model_copy(update={"enabled": True})
    ruleset = RuleSet([live])
    scheduled = live.trigger.type == "schedule"
    result = BacktestResult()
    cards: dict[str, Mapping[str, Any]] = {}
    history: dict[str, list[tuple[datetime, str, str]]] = {}
    due: list[tuple[datetime, str]] = []  # (when, customer): the schedule's next firings
    next_at: dict[str, datetime] = {}
    seen: set[str] = set()

    def act(matches: list[Match], card: Mapping[str, Any], at: datetime) -> None:
        for match in matches:
            key = (match.customer_id, match.occurrence)
            if key in result.kept:
                continue  # the ledger's unique key: decided once
            result.kept.add(key)
            past = history.setdefault(match.customer_id, [])
            [(candidate, decision)] = decide_all(
                card,
                [Candidate.of(match)],
                past,
                suppressed=match.customer_id in suppressed,
                policy=policy,
                now=at,
            )
            result.decided += 1
            result.outcomes[decision.outcome.value] += 1
            if decision.reason is not None and decision.outcome is not Outcome.SEND:
                result.reasons[decision.reason.value] += 1
            if decision.goes_out:
                past.append((decision.until or at, candidate.kind, candidate.rule_id))

    def fire_until(moment: datetime) -> None:
        while due and due[0][0] <= moment:
            when, customer = heapq.heappop(due)
            if next_at.get(customer) != when:
                continue  # superseded by a later change of this customer
            card = cards[customer]
            if ruleset.conditions_hold(live, card):
                key = occurrence_key(live, card, when, default_timezone=policy.default_timezone)
                act([Match(live, customer, key)], card, when)
            plan(customer, when + timedelta(minutes=1))

    def plan(customer: str, after: datetime) -> None:
        at = next_due(live, cards[customer], after, default_timezone=policy.default_timezone)
        if at is None:
            next_at.pop(customer, None)
        else:
            next_at[customer] = at
            heapq.heappush(due, (at, customer))

    for change in changes:
        if change.change_id in seen:
            continue  # a change delivered twice is applied once (the inbox)
        seen.add(change.change_id)
        at = change.at
        if scheduled:
            fire_until(at)
        customer = change.customer_id
        cards[customer] = change.card
        result.changes += 1
        act(ruleset.match(change), change.card, at)
        if scheduled:
            plan(customer, at)
    if scheduled:
        fire_until(until)
    result.customers = len(cards)
    return result
