"""After a scenario: wait until the pipeline has settled, then judge it against the promises.

* every event ingest answered 2xx for is applied by scoring, and nothing else is;
* every customer's facts and stage history equal a clean replay of the accepted events;
* every accepted event a rule matches is decided exactly once — one ledger row per
  (rule, customer, occurrence), none missing, none extra — and ends up sent;
* every delivery carries its action's id as ``webhook-id``: one id per decision, no id the
  ledger does not know, every signature valid, every sent action received. The same id
  arriving twice (a retry after a timeout) is allowed: the receiver drops repeats by id.

The figures are printed whatever the outcome, then asserted.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.scoring.settings import ScoringSettings
from services.scoring.shell.consumer import EventApplier
from services.scoring.shell.population import PopulationCache
from shared.changes import change_id_for
from shared.clock import SystemClock
from tests.chaos.load import Load
from tests.chaos.pipeline import RULES, Pipeline
from tests.support.pipeline import ScoringStates, scoring_states
from tests.support.receivers import ReceivedWebhook

Key = tuple[str, str, str]  # (rule, customer, occurrence)
States = ScoringStates


@dataclass
class Figures:
    scenario: str
    seed: int
    offered: int = 0
    accepted: int = 0
    applied: int = 0
    decided: int = 0
    delivered: int = 0
    duplicates: int = 0
    lost: int = 0
    cards_differing: int = 0
    webhook_attempts: int = 0
    redelivered: int = 0
    seconds: float = 0.0
    retries: Counter[str] = field(default_factory=Counter)
    faults: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        retries = ", ".join(f"{k}×{n}" for k, n in sorted(self.retries.items())) or "none"
        faults = ", ".join(f"{k}×{n}" for k, n in self.faults.items()) or "none"
        return (
            f"CHAOS {self.scenario} seed={self.seed}: events offered={self.offered} "
            f"accepted={self.accepted} applied={self.applied}; actions decided={self.decided} "
            f"delivered={self.delivered}; duplicates found={self.duplicates} "
            f"lost={self.lost} cards differing={self.cards_differing} | faults: {faults} | "
            f"client retries: {retries} | webhook attempts={self.webhook_attempts} "
            f"(same id again={self.redelivered}) | {self.seconds:.1f} s"
        )


async def until(
    condition: Callable[[], Awaitable[tuple[bool, str]]], timeout: float, what: str
) -> None:
    """Poll ``condition`` (done, how far) until done; a bounded wait, never a fixed sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done, progress = await condition()
        if done:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s ({progress})")
        await asyncio.sleep(0.25)


async def _count(engine: AsyncEngine, sql: str, ids: list[str]) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text(sql), {"ids": ids}) or 0)


async def settle(p: Pipeline, load: Load, timeout: float = 150) -> None:
    """Until scoring applied every accepted event, outreach applied each one's change, and
    no action is waiting to be sent."""
    events = sorted(load.accepted)
    changes = [change_id_for("event", e) for e in events]

    async def scored() -> tuple[bool, str]:
        n = await _count(
            p.engine,
            "SELECT count(*) FROM scoring.inbox WHERE event_id = ANY(CAST(:ids AS text[]))",
            events,
        )
        return n == len(events), f"{n} of {len(events)} applied"

    async def seen() -> tuple[bool, str]:
        n = await _count(
            p.engine,
            "SELECT count(*) FROM outreach.inbox WHERE change_id = ANY(CAST(:ids AS text[]))",
            changes,
        )
        return n == len(changes), f"{n} of {len(changes)} changes applied by outreach"

    async def delivered() -> tuple[bool, str]:
        n = await _count(
            p.engine, "SELECT count(*) FROM outreach.actions WHERE status = 'pending'", []
        )
        return n == 0, f"{n} actions still pending"

    await until(scored, timeout, "scoring applying every accepted event")
    await until(seen, timeout, "outreach applying every change")
    await until(delivered, timeout, "outreach delivering every action")


async def clean_replay(replay: AsyncEngine, load: Load) -> States:
    """What scoring holds after applying the accepted events once, in one clean pass."""
    async with replay.begin() as conn:
        await conn.execute(
            text("TRUNCATE scoring.inbox, scoring.customers, scoring.stage_history, scoring.outbox")
        )
    applier = EventApplier(
        replay, ScoringSettings(), SystemClock(), PopulationCache(), publish=False
    )
    envelopes = [load.offered[e].envelope() for e in sorted(load.accepted)]
    await applier.apply([(e, e.to_json()) for e in envelopes])
    return await scoring_states(replay)


def _key(payload: Any) -> Key:
    return (str(payload["rule_id"]), str(payload["customer_id"]), str(payload["occurrence"]))


def _processed(hook: Iterable[ReceivedWebhook]) -> list[ReceivedWebhook]:
    """The deliveries the receiver took (answered 2xx, at once or too late)."""
    return [w for w in hook if w.answer == "late" or (isinstance(w.answer, int) and w.answer < 300)]


async def judge(p: Pipeline, load: Load, replay: AsyncEngine, figures: Figures) -> Figures:
    """Fill ``figures`` in and list every broken promise in ``figures.problems``."""
    problems = figures.problems
    figures.offered, figures.accepted = len(load.offered), len(load.accepted)
    figures.retries = load.retries
    figures.faults = dict(p.faults)
    problems += load.errors[:10]
    if len(load.errors) > 10:
        problems.append(f"... {len(load.errors) - 10} more client errors")

    # Scoring: every accepted event applied, nothing else.
    async with p.engine.connect() as conn:
        applied = set((await conn.scalars(text("SELECT event_id FROM scoring.inbox"))).all())
    figures.applied = len(applied & load.accepted)
    unapplied = load.accepted - applied
    phantom = applied - load.accepted
    if unapplied:
        problems.append(f"{len(unapplied)} accepted events not applied: {sorted(unapplied)[:5]}")
    if phantom:
        problems.append(f"{len(phantom)} applied events never accepted: {sorted(phantom)[:5]}")

    # Cards: equal to a clean replay of the accepted events.
    actual, expected = await scoring_states(p.engine), await clean_replay(replay, load)
    differing = sorted(c for c in set(actual) | set(expected) if actual.get(c) != expected.get(c))
    figures.cards_differing = len(differing)
    for cid in differing[:3]:
        problems.append(f"card of {cid}: {actual.get(cid)} != clean replay {expected.get(cid)}")

    # Decisions: one ledger row per accepted event a rule matches.
    wanted: set[Key] = set()
    for event_id in load.accepted:
        offer = load.offered[event_id]
        if offer.event_type in RULES:
            wanted.add((RULES[offer.event_type][0], offer.customer_id, event_id))
    async with p.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT id, rule_id, customer_id, occurrence, status FROM outreach.actions")
            )
        ).all()
    figures.decided = len(rows)
    keys = Counter((r.rule_id, r.customer_id, r.occurrence) for r in rows)
    doubled = {k: n for k, n in keys.items() if n > 1}
    missing, extra = wanted - set(keys), set(keys) - wanted
    if doubled:
        problems.append(f"decided more than once: {list(doubled.items())[:5]}")
    if missing:
        problems.append(f"{len(missing)} matches never decided: {sorted(missing)[:5]}")
    if extra:
        problems.append(f"{len(extra)} decisions no accepted event asked for: {sorted(extra)[:5]}")
    unsent = Counter(r.status for r in rows if r.status != "sent")
    if unsent:
        problems.append(f"actions not sent: {dict(unsent)}")

    # Deliveries: one webhook id per decision, the action's own.
    by_id = {r.id: (r.rule_id, r.customer_id, r.occurrence) for r in rows}
    received = list(p.hook.received)
    figures.webhook_attempts = len(received)
    foreign = {w.webhook_id for w in received} - set(by_id)
    ids_of: dict[Key, set[str | None]] = {}
    for w in received:
        ids_of.setdefault(_key(w.payload), set()).add(w.webhook_id)
    several = {k: ids for k, ids in ids_of.items() if len(ids) > 1}
    mislabelled = [
        w for w in received if w.webhook_id in by_id and by_id[w.webhook_id] != _key(w.payload)
    ]
    unverified = [w for w in received if not w.verified]
    processed = _processed(received)
    took = {w.webhook_id for w in processed}
    figures.delivered = len(took & set(by_id))
    figures.redelivered = len(processed) - len(took)
    never = {r.id for r in rows if r.status == "sent"} - took
    if foreign:
        problems.append(f"webhook ids no action has: {sorted(map(str, foreign))[:5]}")
    if several:
        problems.append(f"decisions delivered under several ids: {list(several.items())[:3]}")
    if mislabelled:
        problems.append(f"webhook id of one action on another: {mislabelled[:3]}")
    if unverified:
        problems.append(f"{len(unverified)} bad signatures: {unverified[0].error}")
    if never:
        problems.append(f"{len(never)} actions marked sent never reached the receiver")

    figures.duplicates = sum(n - 1 for n in doubled.values()) + len(extra) + len(foreign)
    figures.duplicates += sum(len(ids) - 1 for ids in several.values()) + len(mislabelled)
    figures.lost = len(unapplied) + len(missing) + len(never) + sum(unsent.values())
    return figures
