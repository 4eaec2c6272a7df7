"""Applying a batch of changes: the card replica, the schedule index, the goal events, and the
actions that event and stage rules fire — one transaction per batch, offsets committed after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.outreach.core.changes import read_change
from services.outreach.core.goals import GoalEvent, goal_event_of
from services.outreach.core.rules import (
    EPISODE_TRIGGERS,
    TIME_DRIVEN_STAGES,
    Match,
    RuleFailure,
    RuleSet,
    redated,
    waits_in_line,
)
from services.outreach.core.schedules import CatchUp
from services.outreach.core.tagging import Cause, cause_of, may_fire
from services.outreach.settings import OutreachSettings
from services.outreach.shell import merge
from services.outreach.shell.current import Current
from services.outreach.shell.decide import Lease, decide_and_record, line_up, release_held
from services.outreach.shell.delivery import DeliveryWorker, Fresh
from services.outreach.shell.merge import merged_ids
from services.outreach.shell.rule_health import record_failures
from services.outreach.shell.tagging import record_tags
from services.outreach.store import aliases, erasure, goal_events, inbox, ledger, schedule
from services.outreach.store.ledger import Recorded
from services.outreach.store.replica import cards_of, episodes_of, lock_customers, save_cards
from services.outreach.store.schedule import reschedule
from shared.changes import Change
from shared.clock import Clock
from shared.consumer import Message
from shared.logging import get_logger
from shared.settings import inbox_retention

log = get_logger(__name__)


class ChangeApplier:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: OutreachSettings,
        clock: Clock,
        current: Current,
        *,
        inbox_retention: timedelta = inbox_retention(),
    ) -> None:
        """``inbox_retention``: how long an applied change's id is remembered
        (:func:`shared.settings.inbox_retention`)."""
        self._inbox_retention = inbox_retention
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._current = current
        # The service's delivery worker, when it runs in this process: the webhook actions a
        # batch decides due now are leased to it as they are written, and their sends start
        # once the batch commits (no pick).
        self.delivery: DeliveryWorker | None = None

    async def prune_inbox(self) -> int:
        """Forget the changes older than the inbox retention; returns how many."""
        async with self._engine.begin() as conn:
            removed = await inbox.prune(conn, self._inbox_retention)
        if removed:
            log.info("inbox_pruned", removed=removed)
        return removed

    async def handle(self, records: Sequence[Message]) -> list[tuple[Message, Exception]]:
        changes: list[Change] = []
        rejected: list[tuple[Message, Exception]] = []
        for record in records:
            try:
                change = read_change(record.value)
            except ValueError as exc:  # not JSON, not a change (ValidationError is one too)
                rejected.append((record, exc))
                continue
            changes.append(change)
        if changes:
            await self.apply(changes)
        return rejected

    async def apply(self, changes: Sequence[Change]) -> list[Recorded]:
        delivery = self.delivery
        if delivery is None:
            return await self._apply(changes, None)
        leased: list[Fresh] = []

        def lease(rows: list[dict[str, Any]], at: datetime) -> None:
            fresh = delivery.lease_fresh(rows, at)
            if fresh is not None:
                leased.append(fresh)

        try:
            recorded = await self._apply(changes, lease)
        except BaseException:
            for fresh in leased:
                delivery.release(fresh)
            raise
        written = {r.action_id for r in recorded}
        for fresh in leased:
            await delivery.adopt(fresh, written)
        return recorded

    async def _save_cards(
        self,
        conn: AsyncConnection,
        fresh: Sequence[Change],
        latest: Mapping[str, Change],
        now: datetime,
    ) -> None:
        """Write the customers' newest cards. A customer still in the stage time moved them
        to, with no purchase since, whose card dates it anew (a population refit's new
        rhythm, a late order) is in the same episode: the stage rules' decisions for it are
        re-keyed to the new day first, so a win-back sent for a churn is not sent again
        when the churn is re-dated."""
        moved = {c.customer_id for c in fresh if c.stage_change is not None}
        candidates = [
            cid
            for cid, change in latest.items()
            if cid not in moved and change.card.get("stage") in TIME_DRIVEN_STAGES
        ]
        before = await episodes_of(conn, candidates) if candidates else {}
        await save_cards(conn, latest)
        redated_keys = []
        for cid, was in before.items():
            now_in = redated(was, latest[cid].card)
            if now_in is not None:
                redated_keys.append((cid, was.key, now_in.key))
        if redated_keys:
            stage_rules = [r.id for r in self._current.rules.values() if r.trigger.type == "stage"]
            await ledger.redate_episodes(conn, redated_keys, stage_rules, now)

    async def _apply(self, changes: Sequence[Change], lease: Lease | None) -> list[Recorded]:
        """The batch in one transaction; ``lease`` sees the actions decided before they are
        written (:func:`~services.outreach.shell.decide.decide_and_record`)."""
        ruleset: RuleSet = self._current.ruleset
        policy = self._current.policy
        now = self._clock.now()
        disabled: list[str] = []
        async with self._engine.begin() as conn:
            fresh_ids = await inbox.claim(
                conn,
                [c.change_id for c in changes],
                [c.event.received_at if c.event is not None else c.at for c in changes],
                self._inbox_retention,
            )
            fresh = []
            for change in changes:
                if change.change_id in fresh_ids:
                    fresh_ids.discard(change.change_id)
                    fresh.append(change)
            await self._merge(conn, changes, fresh, now)
            # A change still arriving under a merged id is the survivor's.
            survivors = await aliases.survivors(conn, {c.customer_id for c in changes})
            changes = [_as_survivor(c, survivors) for c in changes]
            forwarded = {c.change_id for c in fresh if c.customer_id in survivors}
            fresh = [_as_survivor(c, survivors) for c in fresh]
            # When each customer of the batch was erased, if they were (this batch's erasures
            # are added as they are applied).
            cutoff = await erasure.erased(conn, {c.customer_id for c in changes})
            fresh = await self._erase(conn, fresh, cutoff)
            # Every change's event, fresh or already seen: kept by event id, so a redelivery
            # adds nothing, and one from before the table existed fills it in.
            await goal_events.record(conn, _goal_events(changes, cutoff))
            if not fresh:
                return []
            latest: dict[str, Change] = {}
            for change in fresh:
                if change.change_id in forwarded:
                    continue  # a merged record's card: the survivor's own card stands
                seen = latest.get(change.customer_id)
                if seen is None or seen.at <= change.at:
                    latest[change.customer_id] = change
            # The event rules that read the card as it stood before the event find it in the
            # replica, as it was before this batch (then each change's is the one before it).
            before = await _cards_before(conn, fresh, ruleset.before_events)
            await self._save_cards(conn, fresh, latest, now)
            cards = {cid: c.card for cid, c in latest.items()}
            # A forwarded change is matched on the survivor's card (the union of the records).
            known = {**await cards_of(conn, {c.customer_id for c in fresh} - set(cards)), **cards}
            fresh = [
                _with_card(c, known[c.customer_id]) if c.change_id in forwarded else c
                for c in fresh
                if c.customer_id in known
            ]
            # A rule that raises is skipped for that change and counted, never the batch's end.
            failures = [RuleFailure(r, error) for r, error in ruleset.broken.items()]
            matches: list[Match] = []
            tagging: list[tuple[Match, Cause]] = []
            for change in fresh:
                cause = cause_of(change)
                was = before.get(change.customer_id)
                for m in ruleset.match(change, failures, before=was):
                    if not m.rule.action.is_tag:
                        matches.append(m)
                    elif may_fire(m, cause):
                        tagging.append((m, cause))
                if ruleset.before_events:
                    before[change.customer_id] = change.card
            # Tags against the newest card too: a tag it already shows is not set again.
            await record_tags(conn, tagging, known, now)
            # Matches are decided against the customer's newest card in the batch (consent,
            # complaints and time zone as they stand now).
            match_cards = {m.customer_id: known[m.customer_id] for m in matches}
            # A stage or membership match its rule's spent daily limit passes over waits in the
            # rule's line for the next day; one decided leaves the line it may have been in.
            passed_over: list[Match] = []
            recorded = await decide_and_record(
                conn,
                matches,
                match_cards,
                policy=policy,
                settings=self._settings,
                now=now,
                rules=self._current.rules,
                lease=lease,
                passed_over=passed_over,
            )
            await line_up(conn, passed_over, policy, now)
            lined = {
                m.rule.id
                for m in matches
                if waits_in_line(m.rule) and m.rule.trigger.type in EPISODE_TRIGGERS
            }
            await schedule.leave_line(
                conn, [(r.rule_id, r.customer_id) for r in recorded if r.rule_id in lined]
            )
            # Held actions wait for a customer's complaints to close: only a customer who has
            # some is locked and decided again. Reading without the decision lock is safe here:
            # saving the cards above row-locked each of these customers until the batch commits,
            # so a decision that held an action for them has committed, and a later one sees
            # the complaint closed.
            resolved = await ledger.holding(
                conn,
                sorted(
                    cid
                    for cid, card in cards.items()
                    if not (card.get("complaints") or {}).get("open")
                ),
            )
            if resolved:
                await release_held(
                    conn,
                    {cid: cards[cid] for cid in sorted(resolved)},
                    self._current.rules,
                    policy=policy,
                    now=now,
                )
            if ruleset.schedules:
                await reschedule(
                    conn,
                    ruleset.schedules,
                    cards,
                    now,
                    policy.schedule_context,
                    failures,
                    CatchUp(self._settings.days_after_grace_days),
                )
            if failures:
                disabled = await record_failures(
                    conn, failures, limit=self._settings.rule_failure_limit, now=now
                )
        if disabled:
            await self._current.reload(self._engine)
        return recorded

    async def _merge(
        self,
        conn: AsyncConnection,
        changes: Sequence[Change],
        fresh: Sequence[Change],
        now: datetime,
    ) -> None:
        """Fold the merged customers of the batch's merges into their survivors, in batch
        order, before anything else of the batch is applied (so its changes for the merged
        ids are the survivor's). A merge from before its survivor's erasure (a replay) is
        not applied: it would bring the erased back."""
        merges = [(c, ids) for c in fresh if (ids := merged_ids(c))]
        if not merges:
            return
        # Every customer the batch decides for, in one lock in key order (the decision path's
        # lock, taken once so two consumers never wait on each other in turn).
        everyone = {c.customer_id for c in changes} | {i for _, ids in merges for i in ids}
        await lock_customers(conn, sorted(everyone))
        cutoff = await erasure.erased(conn, {c.customer_id for c, _ in merges})
        for change, _ in merges:
            erased_at = cutoff.get(change.customer_id)
            if erased_at is not None and change.at <= erased_at:
                continue
            await merge.fold(
                conn,
                change,
                rules=self._current.rules,
                policy=self._current.policy,
                settings=self._settings,
                now=now,
            )

    async def _erase(
        self, conn: AsyncConnection, changes: list[Change], cutoff: dict[str, datetime]
    ) -> list[Change]:
        """Apply the batch's erasures (adding them to ``cutoff``, when each customer was
        erased) and return the changes left to act on: none from before a customer's erasure
        (in this batch or an earlier one) survives."""
        if not changes:
            return changes
        for change in changes:
            if change.cause == "erasure":
                await erasure.forget(conn, change)
                cid = change.customer_id
                cutoff[cid] = max(change.at, cutoff.get(cid, change.at))
        if not cutoff:
            return changes
        return [
            c
            for c in changes
            if c.cause != "erasure"
            and (c.customer_id not in cutoff or c.at > cutoff[c.customer_id])
        ]


async def _cards_before(
    conn: AsyncConnection, fresh: Sequence[Change], event_types: Set[str]
) -> dict[str, Any]:
    """The stored cards of the customers whose changes carry an event of ``event_types`` (an
    event rule reads the card before it), read before the batch's cards are saved; empty
    when no rule reads one (the common case costs nothing)."""
    if not event_types:
        return {}
    wanted = {
        c.customer_id
        for c in fresh
        if c.event is not None and c.event.event_type.value in event_types
    }
    return dict(await cards_of(conn, wanted)) if wanted else {}


def _with_card(change: Change, card: dict[str, Any]) -> Change:
    return change.model_copy(update={"card": card})


def _as_survivor(change: Change, survivors: Mapping[str, str]) -> Change:
    """The change as its customer's survivor's, when its customer was merged."""
    survivor = survivors.get(change.customer_id)
    return change if survivor is None else change.model_copy(update={"customer_id": survivor})


def _goal_events(changes: Sequence[Change], cutoff: Mapping[str, datetime]) -> list[GoalEvent]:
    """The goal events the changes carry, none of a customer from before their erasure."""
    out = []
    for change in changes:
        event = change.event
        if event is None or change.cause != "event":
            continue
        erased_at = cutoff.get(change.customer_id)
        if erased_at is not None and change.at <= erased_at:
            continue
        kept = goal_event_of(change.customer_id, event)
        if kept is not None:
            out.append(kept)
    return out
