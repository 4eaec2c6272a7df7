"""Applying a merge (a change whose event is ``customer.merged``): the merged customers'
ledgers fold into the survivor's, in the consumer's transaction, so one person has one
history from the merge on.

What folds, and how:

- **Actions** become the survivor's (each keeps the id it was decided for in
  ``merged_from``), so frequency caps, ``once``, ``max_per_customer``, cooldowns and
  not-contacted days count every record's contacts. Two rows with one key (both records had
  the same birthday greeting, or the same stage episode's win-back) keep one: the survivor's,
  else the one that stands; a duplicate still waiting is suppressed (reason ``merged``), one
  already sent stays in the ledger under a key of its own and counts like any contact.
- **Stage episodes**: a merged record's action for the stage episode it was in counts for
  the survivor's episode of that same stage, so a win-back it had is not sent again because
  the union card dates the episode differently.
- **Waiting actions** (held, deferred, due and not yet taken by delivery) are decided again
  for the survivor, together, against the person's whole history, the union card and the
  survivor's suppression: nobody gets a second greeting because they had two records.
- **Arms**: decided actions keep the arm they were decided in (what happened happened: a
  control was never sent); waiting ones take the survivor's arm of their rule, and every
  decision from now on hashes the survivor's id — the person is in one arm of each rule.
- **Goal events** (their orders, visits...) are the survivor's: conversions count once, for
  the person.
- **Suppressions**: the most restrictive of the records' entries is the survivor's.
- **The actions stream** carries every moved action again as it now stands (the survivor's,
  under the key it kept or took), so its newest message of each says what the ledger says;
  the waiting ones decided again follow with their new decisions.
- **Replica and schedules**: the merged ids' cards and schedule entries are dropped; the
  survivor's schedules are recomputed from the union card with the change (by the consumer).
- **The alias map** records each merged id's survivor: a change still arriving under a merged
  id is the survivor's.

Everything moves what the merged ids still hold, so the same merge applied twice (a
redelivery, a replay of the topic) changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from services.outreach.core.arms import arm_of
from services.outreach.core.policy import Policy
from services.outreach.core.rules import Episode, Rule
from services.outreach.settings import OutreachSettings
from services.outreach.shell.decide import redecide_waiting
from services.outreach.store import aliases
from services.outreach.store import merge as store
from services.outreach.store.replica import cards_of
from shared.changes import Change
from shared.events import EventType, MergeData
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Folded:
    """What one merge did: the survivor, the ids folded into it, how many of their actions
    moved (and of those, duplicates), and how many waiting actions were decided again."""

    survivor: str
    merged: tuple[str, ...]
    moved: int
    duplicates: int
    redecided: int


def merged_ids(change: Change) -> list[str] | None:
    """The ids a change merges into its customer, or None when it is not a merge."""
    event = change.event
    if event is None or event.event_type is not EventType.CUSTOMER_MERGED:
        return None
    assert isinstance(event.data, MergeData)
    return list(event.data.merged_ids)


async def fold(
    conn: AsyncConnection,
    change: Change,
    *,
    rules: Mapping[str, Rule],
    policy: Policy,
    settings: OutreachSettings,
    now: datetime,
) -> Folded | None:
    """Fold the customers a merge change names into its survivor (see the module docstring);
    None when the change is no merge. The caller holds the customers' replica locks."""
    named = merged_ids(change)
    if named is None:
        return None
    # A merge replayed after its survivor was merged in turn folds into the newer survivor.
    survivor = await aliases.survivor_of(conn, change.customer_id)
    merged = sorted({m for m in named if m != survivor})
    if not merged:
        return None
    cards = await cards_of(conn, [survivor, *merged])
    await aliases.record(conn, survivor, merged, change.at, change.change_id)
    moved = await store.move_actions(conn, survivor, merged, now)
    await store.move_goal_events(conn, survivor, merged)
    newly_suppressed = await store.fold_suppressions(conn, survivor, merged)
    await store.drop_merged(conn, merged)
    card = change.card if survivor == change.customer_id else cards.get(survivor)
    if card is not None and moved:
        await _fold_episodes(conn, survivor, card, cards, moved, rules)
    await store.publish_moved(conn, moved, now)
    redecided = 0
    if (moved or newly_suppressed) and card is not None:
        redecided = await _redecide(conn, survivor, card, rules, policy, settings, now)
    folded = Folded(
        survivor,
        tuple(merged),
        len(moved),
        sum(1 for m in moved if m.duplicate),
        redecided,
    )
    log.info(
        "customers_merged",
        change_id=change.change_id,
        moved=folded.moved,
        duplicates=folded.duplicates,
        redecided=folded.redecided,
    )
    return folded


async def _fold_episodes(
    conn: AsyncConnection,
    survivor: str,
    card: Mapping[str, Any],
    cards: Mapping[str, Any],
    moved: Sequence[store.MovedAction],
    rules: Mapping[str, Rule],
) -> None:
    """A merged record's actions for the episode it was in count for the survivor's episode
    of the same stage."""
    stage_rules = [r.id for r in rules.values() if r.trigger.type == "stage"]
    if not stage_rules:
        return
    now_in = Episode.of(card)
    for alias, alias_card in cards.items():
        if alias == survivor or alias_card is None:
            continue
        was_in = Episode.of(alias_card)
        if was_in.stage == now_in.stage and was_in.key != now_in.key:
            theirs = [m.id for m in moved if m.customer_id == alias and not m.duplicate]
            await store.rekey_episode(conn, survivor, theirs, stage_rules, was_in.key, now_in.key)


async def _redecide(
    conn: AsyncConnection,
    survivor: str,
    card: Mapping[str, Any],
    rules: Mapping[str, Rule],
    policy: Policy,
    settings: OutreachSettings,
    now: datetime,
) -> int:
    """Decide the survivor's waiting actions again, in the survivor's arms."""
    waiting = await store.waiting(conn, survivor, now)
    if not waiting:
        return 0
    arms: dict[str, str | None] = {}
    for row in waiting:
        rule = rules.get(row.rule_id)
        if rule is None:
            continue
        arm = arm_of(
            rule.id,
            survivor,
            kind=row.kind,
            audience=row.audience,
            control_percent=rule.control_percent,
            global_percent=settings.global_control_percent,
            global_kinds=policy.held_out_kinds,
        )
        if arm != row.arm:
            arms[row.id] = arm
    await store.set_arms(conn, arms)
    if arms:
        waiting = await store.waiting(conn, survivor, now)
    return await redecide_waiting(conn, waiting, {survivor: card}, rules, policy=policy, now=now)
