"""Deciding actions in the database: the one place where a rule's match becomes a ledger row.

Every path that fires rules (changes, schedules, broadcasts) comes here, inside its own
transaction. Matches the ledger already holds are dropped first (a stage rule matches every
change of its episode); the replica rows of the customers something is left to decide for are
then locked (in key order), so two decisions for one customer never run at once: the frequency
cap is counted and taken under that lock, and concurrent evaluations cannot race past it. A
customer nothing is decided for is not locked. The ledger's unique (rule, customer,
occurrence) makes a second decision of the same action impossible even across crashes and
replays.

Each action also falls in an arm (:func:`services.outreach.core.arms.arm_of`):
an action of a control arm — the rule's hold-out, or the global control group for the
policy's ``global_control_kinds`` — is decided exactly like the others and, where it would
have gone out (now or later), recorded with status ``control`` instead: never delivered, its
instant kept in ``not_before``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core import templates
from services.outreach.core.arms import GLOBAL_CONTROL, HELD_OUT
from services.outreach.core.daily_limit import value_rank
from services.outreach.core.goals import predicted_probability
from services.outreach.core.policy import (
    NO_LIMITS,
    Candidate,
    Decision,
    Outcome,
    Policy,
    Reason,
    Waiting,
    arm_of_rule,
    decide,
    decide_all,
    history_days,
    yield_slots,
)
from services.outreach.core.rules import (
    EPISODE_TRIGGERS,
    ActionKind,
    Channel,
    Match,
    Rule,
    channel_for,
    waits_in_line,
)
from services.outreach.core.schedules import day_of, holiday_of
from services.outreach.core.tagging import NO_CAUSE
from services.outreach.core.template_limits import RenderLimits
from services.outreach.core.unsubscribe import LINK_PLACEHOLDER
from services.outreach.settings import OutreachSettings
from services.outreach.shell.tagging import record_tags
from services.outreach.store import ledger, schedule
from services.outreach.store.ledger import Recorded
from services.outreach.store.replica import complaints_still_open, lock_customers, policy_state

# Sees a decision's new ledger rows before they are written, and may change them in place.
Lease = Callable[[list[dict[str, Any]], datetime], None]

# How long deciding may hold the event loop between two renders before it lets others run.
YIELD_SECONDS = 0.02
# How soon delivery judges again an action whose hold it could not confirm (the customer's
# card was being written as it looked).
HOLD_RECHECK = timedelta(seconds=1)
# A waiting action due this soon is left its cap slot: the periodic release may be handing it
# to delivery as this transaction runs.
SAFE_WAIT = timedelta(minutes=1)

TEMPLATE_FAILURES = Counter(
    "tend_outreach_template_failures_total",
    "Actions that failed because their template did not render for the customer "
    "(template_error) or went over a render limit (template_limit)",
    ["rule", "reason"],
)

SLOTS_GIVEN_UP = Counter(
    "tend_outreach_cap_slots_given_up_total",
    "Waiting actions that gave their frequency-cap slot to an action of higher priority "
    "decided before they went out (suppressed, or waiting for the next slot: lower_priority)",
)

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
    rules: Mapping[str, Rule] | None = None,
    lease: Lease | None = None,
    passed_over: list[Match] | None = None,
) -> list[Recorded]:
    """Decide every match under the contact policy and write the new ledger rows. A service
    contact decided for a customer (when the policy weighs promotions against service) has
    their balance-deferred promotions decided again; ``rules`` (the rules in force) gives
    those their limits. ``lease`` sees the new rows before they are written, and may lease
    the ones due now to a delivery worker in this process
    (:meth:`~services.outreach.shell.delivery.DeliveryWorker.lease_fresh`).

    ``passed_over``: the matches their rule's spent daily limit leaves out go there,
    undecided, instead of into the ledger as ``daily_limit`` suppressions, when the rule's
    customers wait in its line (:func:`~services.outreach.core.rules.waits_in_line`); the
    caller puts them in it (:func:`line_up`, or the scheduler's own row)."""
    # A tag action is not a contact: it becomes an event for scoring, never a ledger row.
    tagging = [(m, NO_CAUSE) for m in matches if m.rule.action.is_tag]
    if tagging:
        await record_tags(conn, tagging, cards, now)
        matches = [m for m in matches if not m.rule.action.is_tag]
    if not matches:
        return []
    # Already decided (a replay, a retry, a stage rule matching again within its episode):
    # they neither act again nor compete. A decided key stays decided, so the keys that come
    # back (every trigger's but an event's, whose occurrence is the id of an event the batch
    # has just claimed) are looked up before the lock, and only the customers something is
    # left to decide for are locked.
    recurring = [m for m in matches if m.rule.trigger.type != "event"]
    decided = await _decided(conn, recurring) if recurring else set()
    todo = [m for m in matches if _key(m) not in decided]
    if not todo:
        return []
    customers = sorted({m.customer_id for m in todo})
    await lock_customers(conn, customers)
    # Under the lock, for these alone: the event matches (a replay after the inbox forgot
    # the event), and any decided by another transaction since that read (two consumers of
    # one partition during a rebalance).
    todo = await _undecided(conn, todo)
    if not todo:
        return []
    # ``once`` and ``max_per_customer`` count a rule's messages over all time.
    forever = any(m.rule.limits.once or m.rule.limits.max_per_customer for m in todo)
    days = max(history_days(m.rule.limits, policy) for m in todo)
    since = None if forever else now - timedelta(days=days)
    # Contacts waiting to go out later hold cap slots a higher priority may take (those about
    # to be released to delivery are left alone).
    state = await ledger.contact_state(conn, customers, since, waiting_after=now + SAFE_WAIT)
    history, suppressed = state.history, state.suppressed
    gave_way: list[tuple[Waiting, Decision]] = []

    daily_left = await _daily_left(conn, todo, policy, now)
    rows: list[dict[str, Any]] = []
    limits = render_limits(settings)
    # What a rule's every row carries alike (its offer, its goal), worked out once a batch.
    fixed = {r.id: _RuleRows.of(r) for r in {m.rule.id: m.rule for m in todo}.values()}
    context = policy.schedule_context
    ids = iter(_action_ids(len(todo)))
    # Rendering is the costly step here (each render within ``limits``): let the event loop
    # answer others (health checks, heartbeats) between renders when it has waited this long.
    yielded = time.perf_counter()
    by_customer: dict[str, list[Match]] = {}
    for m in todo:
        by_customer.setdefault(m.customer_id, []).append(m)
    if daily_left:
        # A day's slots go to the most valuable customers first.
        by_customer = dict(
            sorted(by_customer.items(), key=lambda kv: _most_valuable_first(cards[kv[0]], kv[0]))
        )
    for customer_id, ms in by_customer.items():
        card = cards[customer_id]
        arms = [_arm(m, policy, settings) for m in ms]
        candidates = [
            Candidate.of(m, held_out=a in HELD_OUT) for m, a in zip(ms, arms, strict=True)
        ]
        # One rule can match several times in a batch (two events of one customer): those
        # candidates are equal values, so each is paired with its match by identity (decide_all
        # hands back the objects it was given), never by rule id, or occurrences would be lost.
        match_of = {id(c): (m, a) for c, m, a in zip(candidates, ms, arms, strict=True)}
        waiting = [waiting_of(w) for w in state.waiting.get(customer_id, ())]
        before = dict(daily_left) if waiting and daily_left is not None else None
        decisions = decide_all(
            card,
            candidates,
            history[customer_id],
            suppressed=customer_id in suppressed,
            policy=policy,
            now=now,
            daily_left=daily_left,
        )
        if waiting:
            left = dict(before) if before is not None else None
            joint = yield_slots(
                card,
                candidates,
                decisions,
                history[customer_id],
                waiting,
                suppressed=customer_id in suppressed,
                policy=policy,
                now=now,
                daily_left=left,
            )
            if joint is not None:
                decisions, gave_up = joint
                gave_way += gave_up
                if daily_left is not None and left is not None:
                    daily_left.update(left)
        for candidate, decision in decisions:
            match, arm = match_of[id(candidate)]
            over = decision.reason is Reason.DAILY_LIMIT and waits_in_line(match.rule)
            if over and passed_over is not None:
                passed_over.append(match)
                continue
            holiday = holiday_of(match.rule, card, match.occurrence, context=context)
            rows.append(
                _row(
                    next(ids),
                    match,
                    fixed[match.rule.id],
                    arm,
                    card,
                    decision,
                    now,
                    limits,
                    holiday,
                )
            )
        if time.perf_counter() - yielded > YIELD_SECONDS:
            await asyncio.sleep(0)
            yielded = time.perf_counter()
    if lease is not None:
        lease(rows, now)
    recorded = await ledger.record(conn, rows)
    if gave_way:
        await _give_up(conn, gave_way, now)
    balance = policy.balance
    if balance is not None and recorded:
        inserted = {r.action_id for r in recorded}
        served = sorted(
            {
                row["customer"]
                for row in rows
                if row["id"] in inserted
                and row["audience"] == "customer"
                and row["kind"] in balance.service_kinds
                and row["status"] in ("pending", "scheduled")
            }
        )
        if served:
            known = {m.rule.id: m.rule for m in todo} | dict(rules or {})
            await release_balanced(
                conn, {c: cards[c] for c in served}, known, policy=policy, now=now
            )
    return recorded


async def line_up(
    conn: AsyncConnection, passed_over: Sequence[Match], policy: Policy, now: datetime
) -> None:
    """Put the stage, membership and broadcast matches a spent daily limit passed over in
    their rules' lines: due again at the start of the shop's next day, the scheduler's to
    decide then (a schedule rule's customers wait in the row it already has); a broadcast's
    wait for the launch that passed them over (the match's occurrence)."""
    lined = [m for m in passed_over if m.rule.trigger.type in EPISODE_TRIGGERS]
    launched: dict[str, list[Match]] = {}
    for m in passed_over:
        if m.rule.trigger.type == "broadcast":
            launched.setdefault(m.occurrence, []).append(m)
    if not lined and not launched:
        return
    _, tomorrow = day_of(now, policy.schedule_context.default_timezone)
    if lined:
        await schedule.line_up(conn, [(m.rule.id, m.customer_id) for m in lined], tomorrow, now)
    for launch_id, waiting in launched.items():
        pairs = [(m.rule.id, m.customer_id) for m in waiting]
        await schedule.line_up(conn, pairs, tomorrow, now, launch_id=launch_id)


def waiting_of(row: ledger.WaitingRow) -> Waiting:
    """A waiting ledger row as the policy weighs it against a new candidate."""
    kind, channel = cast(ActionKind, row.kind), cast(Channel, row.channel)  # as recorded
    candidate = Candidate(row.rule_id, kind, channel, row.priority)
    return Waiting(row.action_id, candidate, row.at)


async def _give_up(
    conn: AsyncConnection, yielded: Sequence[tuple[Waiting, Decision]], now: datetime
) -> None:
    """Waiting actions that gave their cap slot to a higher priority: suppressed, or waiting
    for the next free slot, with why."""
    n = len(yielded)
    await ledger.redecide(
        conn,
        {
            "ids": [w.action_id for w, _ in yielded],
            "status": [_STATUS[d.outcome] for _, d in yielded],
            "reason": [d.reason.value if d.reason else None for _, d in yielded],
            "detail": [d.detail or None for _, d in yielded],
            "not_before": [d.until if d.outcome is Outcome.DEFER else None for _, d in yielded],
            "next": [None] * n,
        },
        now,
    )
    SLOTS_GIVEN_UP.inc(n)


async def _daily_left(
    conn: AsyncConnection, matches: Sequence[Match], policy: Policy, now: datetime
) -> dict[str, int] | None:
    """What is left today of the ``max_per_day`` of the matches' rules that have one (None:
    none has); the day is the shop's, in the policy's default time zone."""
    caps = {m.rule.id: m.rule.limits.max_per_day for m in matches if m.rule.limits.max_per_day}
    if not caps:
        return None
    today = day_of(now, policy.schedule_context.default_timezone)
    spent = await ledger.spent_on(conn, list(caps), today, lock=True)
    return {rule_id: max(0, cap - spent.get(rule_id, 0)) for rule_id, cap in caps.items()}


def _most_valuable_first(card: Mapping[str, Any], customer_id: str) -> tuple[float, str]:
    return (-value_rank(card), customer_id)


def _key(match: Match) -> tuple[str, str, str]:
    return match.rule.id, match.customer_id, match.occurrence


async def _decided(conn: AsyncConnection, matches: Sequence[Match]) -> set[tuple[str, str, str]]:
    """Which of the matches' (rule, customer, occurrence) the ledger holds."""
    return await ledger.decided_already(conn, [_key(m) for m in matches])


async def _undecided(conn: AsyncConnection, matches: Sequence[Match]) -> list[Match]:
    """The matches whose (rule, customer, occurrence) the ledger does not hold yet."""
    decided = await _decided(conn, matches)
    return [m for m in matches if _key(m) not in decided]


def _arm(match: Match, policy: Policy, settings: OutreachSettings) -> str | None:
    return arm_of_rule(match.rule, match.customer_id, policy, settings.global_control_percent)


def render_limits(settings: OutreachSettings) -> RenderLimits:
    """The hard limits a template renders within, with this service's time budget."""
    return RenderLimits(seconds=settings.template_render_ms / 1000)


@dataclass(frozen=True, slots=True)
class _RuleRows:
    """What every ledger row of one rule carries alike."""

    offer: dict[str, Any] | None
    offer_json: str | None
    goal_json: str
    # The days of the goal when it is an order with no filters: its baseline is the card's
    # own forecast of an order within them (None: no baseline).
    baseline_days: int | None

    @classmethod
    def of(cls, rule: Rule) -> _RuleRows:
        offer = rule.action.offer.model_dump(mode="json") if rule.action.offer else None
        goal = rule.measured_goal
        return cls(
            offer=offer,
            offer_json=orjson.dumps(offer).decode() if offer is not None else None,
            goal_json=orjson.dumps(goal.model_dump(mode="json")).decode(),
            baseline_days=(
                goal.within_days or 30
                if goal.event == "order.placed" and goal.filters is None
                else None
            ),
        )


def _action_ids(n: int) -> list[str]:
    """``n`` new random (version 4) UUIDs as text, from one read of the system's randomness
    (a ``uuid4()`` each costs more than the rest of a row)."""
    pool = os.urandom(16 * n)
    out = []
    for k in range(0, 16 * n, 16):
        b = bytearray(pool[k : k + 16])
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        h = b.hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def _row(
    action_id: str,
    match: Match,
    fixed: _RuleRows,
    arm: str | None,
    card: Mapping[str, Any],
    decision: Decision,
    now: datetime,
    limits: RenderLimits,
    holiday: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    rule = match.rule
    judged = dict(match.judged)
    status = _STATUS[decision.outcome]
    reason = decision.reason.value if decision.reason else None
    subject = body = None
    if decision.goes_out or decision.outcome is Outcome.HOLD:
        # The link is minted when the message is sent (it expires, and a held message may
        # wait for weeks): delivery puts it in the placeholder's place.
        try:
            subject, body = templates.render(
                rule.action.template,
                templates.build_context(card, fixed.offer, LINK_PLACEHOLDER, holiday),
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
            TEMPLATE_FAILURES.labels(rule.id, reason).inc()
    if arm in HELD_OUT and status in ("pending", "scheduled"):
        # Held out: decided exactly like the sent ones (the instant it would have gone out
        # stays in not_before), never delivered.
        status = "control"
        if arm == GLOBAL_CONTROL:
            reason = GLOBAL_CONTROL
    baseline = (
        predicted_probability(card, fixed.baseline_days)
        if fixed.baseline_days is not None
        else None
    )
    return {
        "id": action_id,
        "rule": rule.id,
        "customer": match.customer_id,
        "occ": match.occurrence,
        "kind": rule.action.kind,
        # A `preferred` rule's action takes the customer's own channel.
        "channel": channel_for(rule.action.channel, card),
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
        "offer": fixed.offer_json,
        "arm": arm,
        # As the rule judged them: the card's, or as they stood before the event.
        "tier": judged.get("tier", card.get("tier")),
        "strategy": judged.get("strategy", card.get("strategy")),
        "baseline": baseline,
        "goal": fixed.goal_json,
    }


async def recheck(
    conn: AsyncConnection, actions: Sequence[Any], *, policy: Policy, now: datetime
) -> list[Decision | None]:
    """Just before delivery: is each of these actions still allowed now? For each, in order,
    None when it is; else the policy's word: ``suppress`` (the customer unsubscribed,
    withdrew consent), ``hold`` (a promotion that came due while a complaint is open) or
    ``defer`` (it came due in the customer's quiet hours). The frequency cap and the rule's
    limits were judged when it was decided and hold their slot; they are not judged again.
    The cards and suppressions of the whole pick are read in one statement.

    A hold is confirmed on the card as last committed, its row share-locked: a batch closing
    the complaint meanwhile would otherwise miss the action (not yet held when it looked) and
    leave it held for ever. Unconfirmed, the action is deferred a moment and judged again."""
    if not actions:
        return []
    state = await policy_state(conn, [a.customer_id for a in actions])
    verdicts = [
        _still_allowed(a, *state.get(a.customer_id, (None, False)), policy, now) for a in actions
    ]
    holding = [a.customer_id for a, v in zip(actions, verdicts, strict=True) if _holds(v)]
    if holding:
        confirmed = await complaints_still_open(conn, holding)
        again = Decision(Outcome.DEFER, until=now + HOLD_RECHECK, detail="the card is changing")
        verdicts = [
            again if _holds(v) and a.customer_id not in confirmed else v
            for a, v in zip(actions, verdicts, strict=True)
        ]
    return verdicts


def _holds(verdict: Decision | None) -> bool:
    return verdict is not None and verdict.outcome is Outcome.HOLD


def _still_allowed(
    action: Any, card: Any, suppressed: bool, policy: Policy, now: datetime
) -> Decision | None:
    if card is None:
        return Decision(Outcome.SUPPRESS, Reason.SUPPRESSED) if suppressed else None
    candidate = Candidate(
        action.rule_id, action.kind, action.channel, action.priority, NO_LIMITS, action.audience
    )
    decision = decide(card, candidate, [], suppressed=suppressed, policy=policy, now=now)
    return None if decision.outcome is Outcome.SEND else decision


async def release_held(
    conn: AsyncConnection,
    cards: Mapping[str, Mapping[str, Any]],
    rules: Mapping[str, Rule],
    *,
    policy: Policy,
    now: datetime,
) -> int:
    """The customers' complaints are resolved: decide their held actions again, now — so a
    released recall still meets quiet hours, the frequency cap and the rule's limits, and one
    of a control arm becomes ``control``, never pending."""
    customers = sorted(cards)
    await lock_customers(conn, customers)
    held = await ledger.held_actions(conn, customers)
    return await redecide_waiting(conn, held, cards, rules, policy=policy, now=now)


async def release_balanced(
    conn: AsyncConnection,
    cards: Mapping[str, Mapping[str, Any]],
    rules: Mapping[str, Rule],
    *,
    policy: Policy,
    now: datetime,
) -> int:
    """A service contact was decided for these customers (their rows already locked): decide
    their balance-deferred promotions again, now, with that contact in their history — each
    goes out as soon as the balance (and the cap, and quiet hours) let it."""
    waiting = await ledger.balance_deferred(conn, sorted(cards))
    return await redecide_waiting(conn, waiting, cards, rules, policy=policy, now=now)


async def redecide_waiting(
    conn: AsyncConnection,
    waiting: Sequence[Any],
    cards: Mapping[str, Mapping[str, Any]],
    rules: Mapping[str, Rule],
    *,
    policy: Policy,
    now: datetime,
) -> int:
    """Decide these waiting actions again (their own rows left out of the history) and write
    the new decisions; returns how many."""
    if not waiting:
        return 0
    customers = sorted({row.customer_id for row in waiting})
    history, suppressed, _ = await ledger.contact_state(
        conn, customers, None, excluding=[row.id for row in waiting]
    )
    updates: list[tuple[str, Decision, str | None]] = []
    for customer_id in customers:
        rows = [r for r in waiting if r.customer_id == customer_id]
        candidates = [
            Candidate(
                r.rule_id,
                r.kind,
                r.channel,
                r.priority,
                rules[r.rule_id].limits if r.rule_id in rules else NO_LIMITS,
                r.audience,
                r.arm in HELD_OUT,
            )
            for r in rows
        ]
        by_candidate = {id(c): r for c, r in zip(candidates, rows, strict=True)}
        for candidate, decision in decide_all(
            cards[customer_id],
            candidates,
            history[customer_id],
            suppressed=customer_id in suppressed,
            policy=policy,
            now=now,
        ):
            row = by_candidate[id(candidate)]
            updates.append((row.id, decision, row.arm))
    statuses = [
        "control" if arm in HELD_OUT and d.goes_out else _STATUS[d.outcome] for _, d, arm in updates
    ]
    await ledger.redecide(
        conn,
        {
            "ids": [i for i, _, _ in updates],
            "status": statuses,
            "reason": [
                GLOBAL_CONTROL
                if arm == GLOBAL_CONTROL and d.goes_out
                else (d.reason.value if d.reason else None)
                for _, d, arm in updates
            ],
            "detail": [d.detail or None for _, d, _ in updates],
            "not_before": [d.until if d.outcome is Outcome.DEFER else None for _, d, _ in updates],
            "next": [now if status == "pending" else None for status in statuses],
        },
        now,
    )
    return len(updates)
