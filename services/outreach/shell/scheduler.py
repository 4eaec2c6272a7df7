"""What time alone sets off: schedule rules coming due (birthdays, follow-ups, cron...) and
deferred actions whose quiet hours are over.

Due schedules are found through the ``schedule`` index (``due_at``), never by scanning
customers; each is decided through :mod:`services.outreach.shell.decide` under the customer's
lock, with the customer's local date as the occurrence, then rescheduled — a customer the
rule's own ``cooldown_days`` or ``not_contacted_days`` hold back is not decided (nothing is
recorded: they do not qualify yet) and rests until the first occurrence the limits allow
(:func:`_resting`), not tomorrow's. A rule with a daily
limit and a backlog larger than a pass takes its day's first pass from its most valuable due
customers (:func:`_most_valuable_first`); the customers its spent day leaves out are not
recorded but wait in the rule's line (the schedule row's ``waiting_since``) for its next run;
a disabled rule's rows are kept, due never, until it is enabled again (:func:`rules_saved`).
A broadcast's line is of customers waiting for a launch (the row's ``launch_id``): each is
judged again, with the launch's content beside their card, when their row comes due.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.outreach.core.conditions import LAUNCH_KEY
from services.outreach.core.policy import Policy, limits_free_at
from services.outreach.core.preview import audience
from services.outreach.core.rules import (
    EPISODE_TRIGGERS,
    LINED_TRIGGERS,
    Match,
    Rule,
    RuleFailure,
)
from services.outreach.core.schedules import (
    CatchUp,
    ScheduleContext,
    day_of,
    next_due,
    occurrence_key,
)
from services.outreach.settings import OutreachSettings
from services.outreach.shell.current import Current
from services.outreach.shell.decide import decide_and_record, line_up
from services.outreach.shell.rule_health import record_failures
from services.outreach.store import launches, ledger, schedule
from services.outreach.store.ledger import Recorded
from services.outreach.store.replica import cards_after
from shared.clock import Clock


async def fire_due(
    engine: AsyncEngine, clock: Clock, current: Current, settings: OutreachSettings
) -> tuple[int, list[Recorded]]:
    """One round of due schedules (at most ``scheduler_batch``): (due rows, decided)."""
    now = clock.now()
    policy = current.policy
    rules = current.rules
    failures: list[RuleFailure] = []
    disabled: list[str] = []
    async with engine.begin() as conn:
        due = await schedule.due(conn, now, settings.scheduler_batch)
        if not due:
            return 0, []
        if len(due) == settings.scheduler_batch:
            due = await _most_valuable_first(conn, due, rules, policy, now, settings)
        matches: list[Match] = []
        cards: dict[str, Any] = {}
        live_rules = []
        # Rows of a stage or membership rule's line: the customer is decided again if the
        # episode still holds (and leaves the line unless the day is spent again).
        lined: set[tuple[str, str]] = set()
        # Rows of a broadcast's line: the customer waits for a launch.
        launched: list[Any] = []
        for row in due:
            rule = rules.get(row.rule_id)
            if rule is None or not rule.enabled:
                continue
            if rule.trigger.type in EPISODE_TRIGGERS:
                cards[row.customer_id] = row.card
                matches += [
                    m
                    for m in current.ruleset.match_parts(
                        row.customer_id, row.card, failures=failures
                    )
                    if m.rule.id == rule.id
                ]
                lined.add((row.rule_id, row.customer_id))
                continue
            if rule.trigger.type == "broadcast":
                launched.append(row)
                lined.add((row.rule_id, row.customer_id))
                continue
            if rule.trigger.type != "schedule":
                continue
            cards[row.customer_id] = row.card
            if current.ruleset.conditions_hold(rule, row.card, failures):
                key = occurrence_key(rule, row.card, row.due_at, context=policy.schedule_context)
                matches.append(Match(rule, row.customer_id, key))
            live_rules.append(rule)
        if launched:
            judged, later = await _launch_matches(conn, launched, rules, cards)
            matches += judged
            lined -= later  # they keep their place, due still: the next pass takes them
        # A customer a schedule rule's own time-bound limits hold back (its cooldown, their
        # last contact) is not decided: a ``limit`` suppression would read as a refusal where
        # they simply do not qualify yet. Their row rests until the limits let the rule act.
        held_back = await _resting(
            conn, [m for m in matches if m.rule.trigger.type == "schedule"], now
        )
        if held_back:
            matches = [m for m in matches if (m.rule.id, m.customer_id) not in held_back]
        # A customer the rule's daily limit leaves out today is not recorded (a suppression
        # a day each, for a backlog that drains over weeks): they wait in the rule's line.
        passed_over: list[Match] = []
        recorded = await decide_and_record(
            conn,
            matches,
            cards,
            policy=policy,
            settings=settings,
            now=now,
            rules=rules,
            passed_over=passed_over,
        )
        waiting = {(m.rule.id, m.customer_id) for m in passed_over}
        if lined:
            await schedule.leave_line(conn, sorted(lined - waiting))
            await line_up(
                conn, [m for m in passed_over if (m.rule.id, m.customer_id) in lined], policy, now
            )
        # Those decided now rest too when what was decided (a contact) holds them back.
        resting = held_back | await _resting(
            conn, [m for m in matches if m.rule.trigger.type == "schedule"], now
        )
        # Next occurrence: strictly after this one, so it can never fire twice; this one is
        # remembered as handled, so a recomputation never moves the row back onto it. A
        # customer the rule's own limits hold back rests until they let it act again: the
        # next occurrence is the first after that, and the rest counts as handled.
        live = {r.id for r in live_rules}
        handled = []
        for row in due:
            if row.rule_id not in live:
                continue
            after, until = row.due_at + timedelta(minutes=1), row.due_at
            rest = resting.get((row.rule_id, row.customer_id))
            if rest is not None and rest > after:
                after = until = rest - timedelta(microseconds=1)
            try:
                next_at = next_due(
                    rules[row.rule_id], row.card, after, context=policy.schedule_context
                )
            except Exception as exc:  # one rule never stops the others; the row stays due
                failures.append(RuleFailure.of(row.rule_id, exc, "schedule"))
                continue
            in_line = now if (row.rule_id, row.customer_id) in waiting else None
            handled.append(schedule.Handled(row.rule_id, row.customer_id, until, next_at, in_line))
        await schedule.advance(conn, handled)
        # A disabled rule's rows wait, due never, for it to be enabled again; a deleted
        # rule's, or one whose trigger keeps no rows (an event), go.
        gone = {
            row.rule_id
            for row in due
            if (rule := rules.get(row.rule_id)) is None
            or not rule.enabled
            or rule.trigger.type not in LINED_TRIGGERS
        }
        off = sorted(r for r in gone if r in rules and not rules[r].enabled)
        if off:
            await schedule.park_rules(conn, off)
        if gone - set(off):
            await schedule.drop_rules(conn, sorted(gone - set(off)))
        if failures:
            disabled = await record_failures(
                conn, failures, limit=settings.rule_failure_limit, now=now
            )
    if disabled:
        await current.reload(engine)
    return len(due), recorded


async def _launch_matches(
    conn: AsyncConnection,
    rows: Sequence[Any],
    rules: Mapping[str, Rule],
    cards: dict[str, Any],
) -> tuple[list[Match], set[tuple[str, str]]]:
    """The customers of broadcasts' lines still in their audience, judged (and their messages
    to be rendered) with the launch's content beside their card as it is now; one whose launch
    is unknown, or who no longer matches, leaves the line. A pass decides a customer with one
    card: one waiting for two launches at once is decided for the first here, and for the
    other (returned, as ``(rule, customer)``) by the next pass."""
    keys = {(r.rule_id, r.launch_id) for r in rows if r.launch_id is not None}
    found = await launches.contents(conn, sorted(keys))
    matches = []
    taken: set[str] = set()
    later: set[tuple[str, str]] = set()
    for row in rows:
        key = (row.rule_id, row.launch_id)
        if key not in found:
            continue
        if row.customer_id in taken:
            later.add((row.rule_id, row.customer_id))
            continue
        view = found[key]
        card = row.card if view is None else {**row.card, LAUNCH_KEY: view}
        rule = rules[row.rule_id]
        if audience(rule)(card):
            cards[row.customer_id] = card
            taken.add(row.customer_id)
            matches.append(Match(rule, row.customer_id, row.launch_id))
    return matches, later


async def _resting(
    conn: AsyncConnection, matches: Sequence[Match], now: datetime
) -> dict[tuple[str, str], datetime]:
    """Until when each matched customer rests from its rule (its ``cooldown_days`` after the
    rule's last decision for them, its ``not_contacted_days`` after their last contact), for
    those the limits hold back beyond ``now``: firing for them before then would only record
    a ``limit`` suppression a day."""
    bound = [m for m in matches if m.rule.limits.cooldown_days or m.rule.limits.not_contacted_days]
    if not bound:
        return {}
    last = await ledger.last_instants(conn, [(m.rule.id, m.customer_id) for m in bound])
    out: dict[tuple[str, str], datetime] = {}
    for m in bound:
        own, contact = last.get((m.rule.id, m.customer_id), (None, None))
        free = limits_free_at(m.rule.limits, own, contact)
        if free is not None and free > now:
            out[m.rule.id, m.customer_id] = free
    return out


async def _most_valuable_first(
    conn: AsyncConnection,
    due: Sequence[Any],
    rules: Mapping[str, Rule],
    policy: Policy,
    now: datetime,
    settings: OutreachSettings,
) -> Sequence[Any]:
    """A pass that is full may leave more due rows than it takes. When some of them belong to
    a rule with a daily limit that has used none of today's slots, the pass takes that rule's
    most valuable due customers instead, so the day's slots go to the best of its whole
    backlog, not of the rows that happened to come first. Once the rule has used a slot today
    the passes go on in due order (everyone after finds the day spent, or takes what is left)."""
    budgeted = sorted(
        {
            row.rule_id
            for row in due
            if (rule := rules.get(row.rule_id)) is not None and rule.limits.max_per_day
        }
    )
    if not budgeted:
        return due
    today = day_of(now, policy.schedule_context.default_timezone)
    spent = await ledger.spent_on(conn, budgeted, today, lock=False)
    for rule_id in budgeted:
        if not spent.get(rule_id):
            ranked = await schedule.due_most_valuable(conn, rule_id, now, settings.scheduler_batch)
            if ranked:
                return ranked
    return due


async def release_deferred(engine: AsyncEngine, now: datetime, hold_max_days: int) -> int:
    """Deferred actions whose instant came become pending; promotions held longer than
    ``hold_max_days`` for an open complaint are dropped (reason ``hold_expired``)."""
    async with engine.begin() as conn:
        await ledger.expire_holds(conn, now - timedelta(days=hold_max_days), now)
        return await ledger.release_deferred(conn, now)


async def tick(
    engine: AsyncEngine, clock: Clock, current: Current, settings: OutreachSettings
) -> int:
    """Everything time sets off now; returns how many actions were decided."""
    decided = 0
    while True:
        due, batch = await fire_due(engine, clock, current, settings)
        decided += len(batch)
        if due < settings.scheduler_batch:
            break
    await release_deferred(engine, clock.now(), settings.hold_max_days)
    return decided


async def rules_saved(
    engine: AsyncEngine, saved: Sequence[Rule], policy: Policy, now: datetime
) -> None:
    """After rules were saved (created, changed, enabled): when the enabled schedule rules
    among them next fire for every customer known, and the customers waiting in the line of
    an enabled stage, membership or broadcast rule (parked while it was disabled) are due
    now. A rule saved with a trigger that keeps no schedule rows (an event) loses any it
    had."""
    unscheduled = [r.id for r in saved if r.trigger.type not in LINED_TRIGGERS]
    if unscheduled:
        async with engine.begin() as conn:
            await schedule.drop_rules(conn, unscheduled)
    enabled = [r for r in saved if r.enabled]
    schedules = [r for r in enabled if r.trigger.type == "schedule"]
    if schedules:
        await reindex_schedule(engine, schedules, policy.schedule_context, now)
    episodes = [r.id for r in enabled if r.trigger.type in LINED_TRIGGERS - {"schedule"}]
    if episodes:
        async with engine.begin() as conn:
            await schedule.recall_lines(conn, episodes, now)


async def reindex_schedule(
    engine: AsyncEngine,
    rules: Sequence[Rule],
    context: ScheduleContext,
    now: datetime,
    chunk: int = 2000,
) -> int:
    """When each of ``rules`` next fires for every customer in the replica (a rule was saved):
    an instant that passed within the rule's catch-up window is due at once. Returns how many
    customers were looked at."""
    after = ""
    seen = 0
    while True:
        async with engine.begin() as conn:
            rows = await cards_after(conn, after, chunk)
            if not rows:
                return seen
            await schedule.reschedule(
                conn,
                rules,
                {r.customer_id: r.card for r in rows},
                now,
                context,
                catch_up=CatchUp(rule_catch_up=True),
            )
        after = rows[-1].customer_id
        seen += len(rows)
