"""Dry runs and audiences: which customers of the card replica a rule reaches now, and what the
contact policy would do with each of them.

Pure functions over cards, contact histories and suppressions the caller loads (the caller
streams the replica in chunks), so a preview runs the very
:func:`~services.outreach.core.policy.decide` the live path runs, and nothing here touches the
database or the clock.

A card is in a rule's *audience* when the rule's conditions hold for it and, for a stage
trigger with a non-empty ``to``, when the customer is in one of those stages now (for a
membership trigger, holds one of those tiers now). A schedule
rule's audience is the customers whose next date falls within the next ``within_days`` days,
each judged by the policy at that instant (and listed, earliest first). Event triggers are
judged by their conditions alone (the event is not known in advance); a broadcast's audience
is exactly its conditions. A rule with a daily limit keeps each day's slots for that day's
most valuable customers (:mod:`services.outreach.core.daily_limit`), today's less what the
caller says the ledger already spent. Each customer falls in the arm the live path would draw
(:func:`~services.outreach.core.policy.arm_of_rule`): of those the policy lets go out, a control
arm's are counted as held out, decided and never sent. A customer whose frequency cap is
filled by lower-priority messages still waiting to go out takes a slot from them, as the live
decision does (:func:`~services.outreach.core.policy.yield_slots`), and the preview counts the
messages that would give theirs up.
"""

from __future__ import annotations

from bisect import insort
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from services.outreach.core import conditions
from services.outreach.core.arms import HELD_OUT
from services.outreach.core.budgets import GUARANTEED_ROWS, CutBy
from services.outreach.core.conditions import Predicate
from services.outreach.core.daily_limit import DaySlots, value_rank
from services.outreach.core.policy import (
    Candidate,
    Decision,
    Outcome,
    Policy,
    Reason,
    Waiting,
    arm_of_rule,
    decide,
    history_days,
    yield_slots,
)
from services.outreach.core.rules import EventTrigger, MembershipTrigger, Rule, StageTrigger
from services.outreach.core.schedules import day_start, next_due

SAMPLE_SIZE = 10
# A rule limited to `once` or `max_per_customer` counts every message it ever sent.
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


def audience(rule: Rule) -> Predicate:
    """Whether a card is in ``rule``'s audience now (see the module docstring)."""
    trigger = rule.trigger
    schema = conditions.EVENT_CARD if isinstance(trigger, EventTrigger) else conditions.CARD
    when = conditions.compile_expr(rule.conditions, schema) if rule.conditions else None
    # An event rule's conditions on the card before the event: were the event to come now,
    # the card before it is the card as it stands.
    now_before = conditions.names_before(rule.conditions)
    stages = frozenset(audience_stages(rule) or ())
    member_tiers = frozenset(trigger.to if isinstance(trigger, MembershipTrigger) else ())

    def holds(card: Mapping[str, Any]) -> bool:
        if stages and card.get("stage") not in stages:
            return False
        if member_tiers and (card.get("membership") or {}).get("tier") not in member_tiers:
            return False
        try:
            if now_before:
                card = {**card, conditions.BEFORE_KEY: card}
            return when is None or when(card)
        except Exception:  # a stored rule that raises on this card: not in its audience
            return False

    return holds


def audience_stages(rule: Rule) -> list[str] | None:
    """The stages a card must be in to be in the audience, or None when any stage will do
    (lets the caller narrow the replica scan in SQL)."""
    trigger = rule.trigger
    if isinstance(trigger, StageTrigger) and trigger.to:
        return sorted(trigger.to)
    return None


def history_since(rule: Rule, policy: Policy, now: datetime) -> datetime:
    """How far back the contact history must reach for :func:`decide` to judge ``rule``."""
    if rule.limits.once or rule.limits.max_per_customer is not None:
        return _BEGINNING
    return now - timedelta(days=history_days(rule.limits, policy))


class SampleCustomer(BaseModel):
    customer_id: str
    name: str | None = None


class Upcoming(BaseModel):
    """A customer a schedule rule reaches soon, and when."""

    customer_id: str
    name: str | None = None
    due_at: datetime = Field(description="the instant the schedule fires for them (UTC)")
    outcome: Outcome = Field(description="what the contact policy would decide then")


class PreviewCoverage(BaseModel):
    """How much of the replica a preview examined (customers in id order from the first)."""

    customers: int = Field(description="customers of the replica examined")
    complete: bool = Field(description="the whole replica was examined")
    cut_by: CutBy | None = Field(
        description="the budget that stopped the scan: `row_budget` "
        "(`TEND_OUTREACH_READ_ROW_BUDGET`) or `time_budget` "
        "(`TEND_OUTREACH_READ_TIME_BUDGET_SECONDS`); null when complete. No budget stops it "
        f"before {GUARANTEED_ROWS:,} customers"
    )


class PreviewResult(BaseModel):
    """What a rule would do if it fired for its whole audience now."""

    rule_id: str
    as_of: datetime = Field(description="the instant the policy was evaluated at")
    matched: int = Field(description="customers in the rule's audience now")
    sample: list[SampleCustomer] = Field(
        description=f"up to {SAMPLE_SIZE} of them, in customer id order"
    )
    outcomes: dict[Outcome, int] = Field(
        description="what the contact policy would decide: `send` now, `defer` (quiet hours), "
        "`hold` (an open complaint) or `suppress`"
    )
    held_back: int = Field(description="customers not sent to now: deferred, held or suppressed")
    gives_way: int = Field(
        0,
        description="messages of other rules, of lower priority, decided and still waiting to "
        "go out (quiet hours, the cap), whose frequency-cap slot this rule would take: each "
        "waits for the cap's next free slot within its kind's horizon, or is suppressed "
        "(`lower_priority`)",
    )
    held_out: int = Field(
        0,
        description="of the customers the policy lets go out (`send` and `defer`), those in a "
        "control arm (the rule's hold-out, or the global control group for its kinds): "
        "decided and recorded `control`, never sent",
    )
    reasons: dict[str, int] = Field(
        description="why those are held back: no_consent, suppressed, reduce_cost, limit, "
        "daily_limit (each day's most valuable customers keep the rule's slots; a schedule, "
        "stage, membership or broadcast rule's others would wait in its line for a later "
        "day), "
        "frequency_cap, open_complaint (held), balance and quiet_hours (deferred)"
    )
    within_days: int | None = Field(
        None, description="for a schedule rule: the window after `as_of` its audience is due in"
    )
    upcoming: list[Upcoming] | None = Field(
        None,
        description=f"for a schedule rule: the first {SAMPLE_SIZE} customers due, earliest "
        "first, with when and what the policy would decide then",
    )
    coverage: PreviewCoverage


class Tally:
    """Accumulates a preview chunk by chunk, so the replica never has to fit in memory (one
    chunk at a time: not for concurrent use)."""

    def __init__(
        self,
        rule: Rule,
        policy: Policy,
        now: datetime,
        sample_size: int = SAMPLE_SIZE,
        within_days: int = 30,
        spent_today: int = 0,
        global_control_percent: float = 0,
    ) -> None:
        self.rule = rule
        self.policy = policy
        self.now = now
        self._global_control_percent = global_control_percent
        # A rule with a daily limit: the slots of each day the preview reaches, today's less
        # the ``spent_today`` the ledger counts (see services.outreach.core.daily_limit).
        per_day = rule.limits.max_per_day
        self._zone = policy.schedule_context.default_timezone
        self._slots = (
            DaySlots(per_day, {day_start(now, self._zone): spent_today})
            if per_day is not None
            else None
        )
        self._candidate = Candidate.of(rule)
        self._sample_size = sample_size
        self._scheduled = rule.trigger.type == "schedule"
        self.within_days = within_days
        self._until = now + timedelta(days=within_days)
        self.matched = 0
        self.sample: list[SampleCustomer] = []
        self.upcoming: list[Upcoming] = []
        self.outcomes: Counter[Outcome] = Counter({o: 0 for o in Outcome})
        self.reasons: Counter[str] = Counter()
        self.held_out = 0
        # Who would take slots from waiting messages, with the day judged and how many: with
        # a daily limit, only those who keep one of its slots do.
        self._gave: dict[str, tuple[datetime, int]] = {}
        # A waiting message of this rule keeps its slot when the rule has a daily limit, as
        # in the live decision (it holds its day's slot); the limit itself is the DaySlots'.
        self._day_bound = {rule.id: 1 << 62} if per_day is not None else None

    def add(
        self,
        customer_id: str,
        card: Mapping[str, Any],
        history: Sequence[tuple[datetime, str, str]],
        *,
        suppressed: bool,
        waiting: Sequence[Waiting] = (),
    ) -> Decision | None:
        """Count one customer of the audience; returns the policy's decision for them (None:
        a schedule rule that is not due for them within the window). ``waiting``: their
        messages decided to go out later, which a higher priority may take the cap slot of."""
        at = self.now
        if self._scheduled:
            try:
                due = next_due(
                    self.rule,
                    card,
                    self.now - timedelta(microseconds=1),
                    context=self.policy.schedule_context,
                )
            except Exception:  # a stored rule that raises on this card: not in its audience
                return None
            if due is None or due > self._until:
                return None
            at = due
        decision = decide(
            card, self._candidate, history, suppressed=suppressed, policy=self.policy, now=at
        )
        # Those going out before the instant judged have gone by then: no slot to give.
        later = [w for w in waiting if w.at > at]
        if later:
            decision, gave = self._taking_a_slot(card, decision, history, later, suppressed, at)
            if gave:
                self._gave[customer_id] = (day_start(at, self._zone), gave)
        held_out = decision.goes_out and self._held_out(customer_id)
        self.held_out += held_out
        if self._slots is not None and (decision.goes_out or decision.outcome is Outcome.HOLD):
            day = day_start(at, self._zone)
            self._slots.claim(day, value_rank(card), customer_id, decision, held_out=held_out)
        if self._scheduled:
            name = (card.get("profile") or {}).get("name")
            insort(
                self.upcoming,
                Upcoming(
                    customer_id=customer_id,
                    name=name if isinstance(name, str) else None,
                    due_at=at,
                    outcome=decision.outcome,
                ),
                key=lambda u: (u.due_at, u.customer_id),
            )
            del self.upcoming[self._sample_size :]
        self.matched += 1
        if len(self.sample) < self._sample_size:
            name = (card.get("profile") or {}).get("name")
            self.sample.append(
                SampleCustomer(
                    customer_id=customer_id, name=name if isinstance(name, str) else None
                )
            )
        self.outcomes[decision.outcome] += 1
        if decision.reason is not None:
            self.reasons[decision.reason.value] += 1
        return decision

    def result(self, coverage: PreviewCoverage) -> PreviewResult:
        outcomes, reasons, upcoming = self.outcomes.copy(), self.reasons.copy(), self.upcoming
        held_out = self.held_out
        gives_way = sum(n for _, n in self._gave.values())
        if self._slots is not None:
            slots = self._slots
            gives_way = sum(n for c, (day, n) in self._gave.items() if slots.keeps(day, c))
            held_out -= self._slots.over_held_out
            # Those pushed out of a day's slots by more valuable customers are held back.
            for (outcome, reason), n in self._slots.over.items():
                outcomes[outcome] -= n
                outcomes[Outcome.SUPPRESS] += n
                if reason is not None:
                    reasons[reason.value] -= n
                reasons[Reason.DAILY_LIMIT.value] += n
            upcoming = [self._in_slots(u) for u in upcoming]
        return PreviewResult(
            rule_id=self.rule.id,
            as_of=self.now,
            matched=self.matched,
            sample=list(self.sample),
            outcomes=dict(outcomes),
            held_back=self.matched - outcomes[Outcome.SEND],
            gives_way=gives_way,
            held_out=held_out,
            reasons=dict(sorted((r, n) for r, n in reasons.items() if n)),
            within_days=self.within_days if self._scheduled else None,
            upcoming=list(upcoming) if self._scheduled else None,
            coverage=coverage,
        )

    def _taking_a_slot(
        self,
        card: Mapping[str, Any],
        decision: Decision,
        history: Sequence[tuple[datetime, str, str]],
        waiting: Sequence[Waiting],
        suppressed: bool,
        at: datetime,
    ) -> tuple[Decision, int]:
        """``decision``, or the slot the live decision would take from lower-priority waiting
        messages when the cap stopped or pushed it back; with how many gave theirs up."""
        candidate = self._candidate
        joint = yield_slots(
            card,
            [candidate],
            [(candidate, decision)],
            history,
            waiting,
            suppressed=suppressed,
            policy=self.policy,
            now=at,
            daily_left=dict(self._day_bound) if self._day_bound is not None else None,
        )
        if joint is None:
            return decision, 0
        decided, gave_up = joint
        return decided[0][1], len(gave_up)

    def _held_out(self, customer_id: str) -> bool:
        """Whether the live path would hold the customer out of this rule (a control arm)."""
        arm = arm_of_rule(self.rule, customer_id, self.policy, self._global_control_percent)
        return arm in HELD_OUT

    def slot_holders(self) -> list[str]:
        """Who would hold today's slots of a rule with a daily limit, the most valuable first
        (none without a limit)."""
        if self._slots is None:
            return []
        return self._slots.holders(day_start(self.now, self._zone))

    def _in_slots(self, upcoming: Upcoming) -> Upcoming:
        """``upcoming`` as the daily limit leaves it: suppressed when it would have taken a
        slot of its day and a more valuable customer holds every one."""
        slots = self._slots
        claimed = upcoming.outcome in (Outcome.SEND, Outcome.DEFER, Outcome.HOLD)
        if slots is None or not claimed:
            return upcoming
        if slots.keeps(day_start(upcoming.due_at, self._zone), upcoming.customer_id):
            return upcoming
        return upcoming.model_copy(update={"outcome": Outcome.SUPPRESS})
