"""Applying a batch of changes: the card replica, the schedule index, and the actions that
event and stage rules fire — one transaction per batch, offsets committed after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.outreach.core.rules import Rule, RuleSet
from services.outreach.core.schedules import next_due
from services.outreach.settings import OutreachSettings
from services.outreach.shell.current import Current
from services.outreach.shell.decide import Recorded, decide_and_record, release_held
from services.outreach.store import erasure
from shared.clock import Clock
from shared.consumer import Message
from shared.logging import get_logger

log = get_logger(__name__)

_CLAIM = text(
    """
    INSERT INTO outreach.inbox (change_id, received_at)
    SELECT c, now() FROM unnest(CAST(:ids AS text[])) AS t(c)
    ON CONFLICT (change_id) DO NOTHING
    RETURNING change_id
    """
)
# Newer changes win; an older change arriving late never overwrites a newer card.
_REPLICA = text(
    """
    INSERT INTO outreach.cards AS k (customer_id, card, complaint_open, change_at)
    SELECT c, CAST(d AS jsonb), o, a
    FROM unnest(CAST(:ids AS text[]), CAST(:cards AS text[]), CAST(:open AS boolean[]),
                CAST(:at AS timestamptz[])) AS t(c, d, o, a)
    ON CONFLICT (customer_id) DO UPDATE SET card = EXCLUDED.card,
        complaint_open = EXCLUDED.complaint_open, change_at = EXCLUDED.change_at
    WHERE k.change_at <= EXCLUDED.change_at
    """
)
_SCHEDULE = text(
    """
    INSERT INTO outreach.schedule (rule_id, customer_id, due_at)
    SELECT * FROM unnest(CAST(:rules AS text[]), CAST(:customers AS text[]),
                         CAST(:due AS timestamptz[]))
    ON CONFLICT (rule_id, customer_id) DO UPDATE SET due_at = EXCLUDED.due_at
    """
)
_UNSCHEDULE = text(
    """
    DELETE FROM outreach.schedule s
    USING unnest(CAST(:rules AS text[]), CAST(:customers AS text[])) AS t(r, c)
    WHERE s.rule_id = t.r AND s.customer_id = t.c
    """
)


async def reschedule(
    conn: AsyncConnection,
    schedules: Sequence[Rule],
    cards: Mapping[str, Mapping[str, Any]],
    after: datetime,
    default_timezone: str,
) -> None:
    """Recompute when each schedule rule next fires for each of these customers."""
    due: list[tuple[str, str, datetime]] = []
    gone: list[tuple[str, str]] = []
    for customer_id, card in cards.items():
        for rule in schedules:
            at = next_due(rule, card, after, default_timezone=default_timezone)
            if at is None:
                gone.append((rule.id, customer_id))
            else:
                due.append((rule.id, customer_id, at))
    if due:
        await conn.execute(
            _SCHEDULE,
            {
                "rules": [d[0] for d in due],
                "customers": [d[1] for d in due],
                "due": [d[2] for d in due],
            },
        )
    if gone:
        await conn.execute(
            _UNSCHEDULE, {"rules": [g[0] for g in gone], "customers": [g[1] for g in gone]}
        )


class ChangeApplier:
    def __init__(
        self, engine: AsyncEngine, settings: OutreachSettings, clock: Clock, current: Current
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._clock = clock
        self._current = current

    async def handle(self, records: Sequence[Message]) -> list[tuple[Message, Exception]]:
        changes: list[dict[str, Any]] = []
        rejected: list[tuple[Message, Exception]] = []
        for record in records:
            try:
                change = orjson.loads(record.value)
                if not isinstance(change, dict) or not isinstance(change.get("card"), dict):
                    raise ValueError("not a change: no card")
                for field in ("change_id", "customer_id", "at"):
                    if not isinstance(change.get(field), str):
                        raise ValueError(f"not a change: {field} missing")
                datetime.fromisoformat(change["at"])
            except (orjson.JSONDecodeError, ValueError) as exc:
                rejected.append((record, exc))
                continue
            changes.append(change)
        if changes:
            await self.apply(changes)
        return rejected

    async def apply(self, changes: Sequence[dict[str, Any]]) -> list[Recorded]:
        ruleset: RuleSet = self._current.ruleset
        policy = self._current.policy
        now = self._clock.now()
        async with self._engine.begin() as conn:
            fresh_ids = set(
                (await conn.execute(_CLAIM, {"ids": [c["change_id"] for c in changes]})).scalars()
            )
            fresh = []
            for change in changes:
                if change["change_id"] in fresh_ids:
                    fresh_ids.discard(change["change_id"])
                    fresh.append(change)
            fresh = await self._erase(conn, fresh)
            if not fresh:
                return []
            latest: dict[str, dict[str, Any]] = {}
            for change in fresh:
                seen = latest.get(change["customer_id"])
                if seen is None or seen["at"] <= change["at"]:
                    latest[change["customer_id"]] = change
            await conn.execute(
                _REPLICA,
                {
                    "ids": list(latest),
                    "cards": [orjson.dumps(c["card"]).decode() for c in latest.values()],
                    "open": [
                        bool((c["card"].get("complaints") or {}).get("open"))
                        for c in latest.values()
                    ],
                    "at": [datetime.fromisoformat(c["at"]) for c in latest.values()],
                },
            )
            cards = {cid: c["card"] for cid, c in latest.items()}
            matches = [m for change in fresh for m in ruleset.match(change)]
            # Matches are decided against the customer's newest card in the batch (consent,
            # complaints and time zone as they stand now).
            match_cards = {m.customer_id: cards[m.customer_id] for m in matches}
            recorded = await decide_and_record(
                conn, matches, match_cards, policy=policy, settings=self._settings, now=now
            )
            resolved = [
                cid for cid, card in cards.items() if not (card.get("complaints") or {}).get("open")
            ]
            if resolved:
                await release_held(
                    conn,
                    {cid: cards[cid] for cid in resolved},
                    self._current.rules,
                    policy=policy,
                    now=now,
                )
            if ruleset.schedules:
                await reschedule(conn, ruleset.schedules, cards, now, policy.default_timezone)
        return recorded

    async def _erase(
        self, conn: AsyncConnection, changes: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Apply the batch's erasures and return the changes left to act on: none from
        before a customer's erasure (in this batch or an earlier one) survives."""
        if not changes:
            return changes
        cutoff = await erasure.erased(conn, (c["customer_id"] for c in changes))
        for change in changes:
            if change.get("cause") == "erasure":
                at = datetime.fromisoformat(change["at"])
                await erasure.forget(conn, change, at)
                cid = change["customer_id"]
                cutoff[cid] = max(at, cutoff.get(cid, at))
        if not cutoff:
            return changes
        return [
            c
            for c in changes
            if c.get("cause") != "erasure"
            and (
                c["customer_id"] not in cutoff
                or datetime.fromisoformat(c["at"]) > cutoff[c["customer_id"]]
            )
        ]
