"""Backtesting a rule: what it would have sent over the recorded history, after the policy.

The recorded history is the change stream itself (``crm.customer-changes.v1``, kept 35 days),
read by :mod:`services.outreach.shell.backtest` a chunk at a time. :class:`Replay` takes those
chunks and replays them through the same pure pieces the live path uses — the rule index, the
schedule maths and the contact policy — with each customer's simulated contact history, the
schedule firing between a customer's changes, and today's suppression list. Only this rule
acts, as if it had been the only rule live over the window, so its counts equal what a replay
of that history with this rule sends.

Each decision is placed at the instant it would have happened. Live traffic is judged when
it was recorded, as the pipeline judged it. A change recorded more than a day after what it
reports (an imported history, whose changes were all recorded within minutes) is judged at
the event's own time, or at the stage move — the quiet hours, the cap and the rule's limits of
those days. Schedules fire at their instants within the span the change stream covers (what
outreach has lived through).

Everything a decision reads belongs to one customer (their card, their contact history, their
schedule), so customers are replayed independently: each customer's changes in the order they
were recorded (the order the live consumer applies them), with no need to hold the whole
window in memory or to sort it. What the replay keeps between chunks is small per customer:
for a schedule rule, the customer's latest card as JSON bytes; for every rule, the actions it
let out (the frequency cap reads them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.outreach.core.arms import HELD_OUT
from services.outreach.core.policy import Candidate, Outcome, Policy, arm_of_rule, decide_all
from services.outreach.core.rules import (
    TIME_DRIVEN_STAGES,
    Episode,
    Match,
    Rule,
    RuleSet,
    redated,
)
from services.outreach.core.schedules import day_start, next_due, occurrence_key
from shared.changes import Change


@dataclass
class BacktestResult:
    changes: int = 0
    customers: int = 0
    decided: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    held_out: int = 0  # of the decisions let through, those a control arm holds out
    first_at: datetime | None = None  # the earliest change time replayed
    last_at: datetime | None = None  # the latest
    first_decision_at: datetime | None = None  # when the earliest decision would have been
    last_decision_at: datetime | None = None


# A change recorded longer than this after what it reports happened is history being loaded.
BACKFILL_AFTER = timedelta(days=1)


def _placed(happened: datetime, recorded: datetime) -> datetime:
    """When a decision on a change is placed: live traffic when it was recorded (as the
    pipeline decided it), an imported history when its event or stage move happened."""
    return happened if recorded - happened > BACKFILL_AFTER else recorded


class Replay:
    """A backtest in progress: :meth:`feed` it chunks of changes (each customer's in the order
    recorded), then :meth:`finish` it at the end of the window."""

    def __init__(
        self,
        rule: Rule,
        *,
        policy: Policy,
        suppressed: set[str],
        global_control_percent: float = 0,
    ) -> None:
        self._live = rule.model_copy(update={"enabled": True})
        self._global_control_percent = global_control_percent
        self._ruleset = RuleSet([self._live])
        self._scheduled = self._live.trigger.type == "schedule"
        self._policy = policy
        self._suppressed = suppressed
        self.result = BacktestResult()
        self._customers: set[str] = set()
        self._cards: dict[str, bytes] = {}  # schedule rules only: the latest card, as JSON
        # An event rule that reads the card before the event: each customer's latest card
        # replayed, as JSON (None: the rule reads none).
        self._before: dict[str, bytes] | None = {} if self._ruleset.before_events else None
        self._next_at: dict[str, datetime] = {}  # schedule rules only: the next firing
        self._history: dict[str, list[tuple[datetime, str, str]]] = {}
        # Hashes, not the ids themselves: two hundred thousand of them stay a few megabytes.
        # A collision (odds about 1 in 10^9 over a window) would skip one change or action.
        self._seen: set[int] = set()  # change ids applied (a change delivered twice: once)
        self._kept: set[int] = set()  # (customer, occurrence) decided: the ledger's unique key
        # A rule with a ``max_per_day``: its slots used by day (the day's start). The replay
        # walks customer by customer, so a day's slots go to whoever comes first, not to the
        # most valuable as live: the counts hold, the chosen customers may differ.
        self._per_day = self._live.limits.max_per_day
        self._used: dict[datetime, int] = {}
        # Stage rules only: each customer's episode in a stage time entered, as live keeps it
        # to recognise the episode dated anew (:func:`~services.outreach.core.rules.redated`).
        self._staged = self._live.trigger.type == "stage"
        self._silent: dict[str, Episode] = {}

    def feed(self, changes: Iterable[Change]) -> None:
        """Replay these changes, oldest first within each customer."""
        result = self.result
        for change in changes:
            seen = hash(change.change_id)
            if seen in self._seen:
                continue
            self._seen.add(seen)
            at, customer = change.at, change.customer_id
            result.changes += 1
            if result.first_at is None or at < result.first_at:
                result.first_at = at
            if result.last_at is None or at > result.last_at:
                result.last_at = at
            self._customers.add(customer)
            if self._scheduled:
                self._fire_until(customer, at)
                self._cards[customer] = orjson.dumps(change.card)
                self._plan(customer, change.card, at)
            if self._staged:
                self._follow_episode(customer, change)
            before = None
            if self._before is not None:
                was = self._before.get(customer)
                if was is not None and change.event is not None:
                    before = orjson.loads(was)
                self._before[customer] = orjson.dumps(change.card)
            matches = self._ruleset.match(change, before=before)
            if matches:
                event, moved = change.event, change.stage_change
                for match in matches:
                    when = at
                    if event is not None and match.occurrence == event.event_id:
                        when = _placed(event.occurred_at, at)
                    elif moved is not None:
                        when = _placed(moved.at, at)
                    self._act([match], change.card, when)

    def _follow_episode(self, customer: str, change: Change) -> None:
        """As live: an episode dated anew keeps what was decided for it."""
        was = self._silent.pop(customer, None)
        if was is not None and change.stage_change is None:
            now_in = redated(was, change.card)
            if now_in is not None and hash((customer, was.key)) in self._kept:
                self._kept.add(hash((customer, now_in.key)))
        if change.card.get("stage") in TIME_DRIVEN_STAGES:
            self._silent[customer] = Episode.of(change.card)

    def finish(self, until: datetime) -> BacktestResult:
        """Fire every schedule due up to ``until``; the result of the whole replay."""
        for customer in list(self._next_at):
            self._fire_until(customer, until)
        self.result.customers = len(self._customers)
        return self.result

    def _act(self, matches: list[Match], card: Mapping[str, Any], at: datetime) -> None:
        result = self.result
        for match in matches:
            key = hash((match.customer_id, match.occurrence))
            if key in self._kept:
                continue  # the ledger's unique key: decided once
            self._kept.add(key)
            past = self._history.setdefault(match.customer_id, [])
            per_day, day, left = self._per_day, None, None
            if per_day is not None:
                day = day_start(at, self._policy.schedule_context.default_timezone)
                left = {self._live.id: per_day - self._used.get(day, 0)}
            held_out = self._arm(match.customer_id) in HELD_OUT
            [(candidate, decision)] = decide_all(
                card,
                [Candidate.of(match, held_out=held_out)],
                past,
                suppressed=match.customer_id in self._suppressed,
                policy=self._policy,
                now=at,
                daily_left=left,
            )
            if per_day is not None and day is not None and left is not None:
                self._used[day] = per_day - left[self._live.id]
            result.decided += 1
            if result.first_decision_at is None or at < result.first_decision_at:
                result.first_decision_at = at
            if result.last_decision_at is None or at > result.last_decision_at:
                result.last_decision_at = at
            result.outcomes[decision.outcome.value] += 1
            if decision.reason is not None and decision.outcome is not Outcome.SEND:
                result.reasons[decision.reason.value] += 1
            if decision.goes_out:
                result.held_out += held_out
                past.append((decision.until or at, candidate.contact_kind, candidate.rule_id))

    def _arm(self, customer_id: str) -> str | None:
        """The arm the live decision draws for the customer."""
        return arm_of_rule(self._live, customer_id, self._policy, self._global_control_percent)

    def _fire_until(self, customer: str, moment: datetime) -> None:
        """Fire the customer's schedule at every instant it came due up to ``moment``."""
        when = self._next_at.get(customer)
        if when is None or when > moment:
            return
        card = orjson.loads(self._cards[customer])
        live, context = self._live, self._policy.schedule_context
        while when is not None and when <= moment:
            if self._ruleset.conditions_hold(live, card):
                key = occurrence_key(live, card, when, context=context)
                self._act([Match(live, customer, key)], card, when)
            when = self._plan(customer, card, when + timedelta(minutes=1))

    def _plan(self, customer: str, card: Mapping[str, Any], after: datetime) -> datetime | None:
        try:
            at = next_due(self._live, card, after, context=self._policy.schedule_context)
        except Exception:  # a stored schedule that raises (a cron that never fires): no firing
            at = None
        if at is None:
            self._next_at.pop(customer, None)
        else:
            self._next_at[customer] = at
        return at
