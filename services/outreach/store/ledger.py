"""The actions ledger: the rows decisions write (with their message on the actions outbox),
and what deciding reads back: contact histories, suppressions, actions already decided and
actions waiting to be decided again (held for an open complaint, deferred for the balance)."""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

# Statuses that occupy a frequency-cap slot: sent, or on its way.
COUNTING = ("pending", "sent", "scheduled", "unknown")
# A control-arm decision: never sent, so never a contact; in a contact history it shows as
# kind ``control``, which only its own rule's limits count.
CONTROL = "control"


@dataclass(frozen=True, slots=True)
class Recorded:
    """A new ledger row (returned for logging, tests and the actions stream)."""

    action_id: str
    rule_id: str
    customer_id: str
    occurrence: str
    status: str
    reason: str | None


_HISTORY = text(
    f"""
    SELECT customer_id, coalesce(sent_at, not_before, decided_at) AS at,
        CASE WHEN audience = 'team' THEN 'team' WHEN status = '{CONTROL}' THEN '{CONTROL}'
             ELSE kind END AS kind, rule_id, id, channel, priority, status = 'scheduled' AS waits
    FROM outreach.actions
    WHERE customer_id = ANY(CAST(:ids AS text[])) AND decided_at >= :since
      AND status IN ({", ".join(f"'{s}'" for s in (*COUNTING, CONTROL))})
      AND id <> ALL(CAST(:skip AS text[]))
    """
)
_SUPPRESSED = text(
    "SELECT customer_id FROM outreach.suppressions WHERE customer_id = ANY(CAST(:ids AS text[]))"
)
# Both in one round trip: a suppression is a row without an instant (a contact always has
# one: it was decided).
_CONTACT_STATE = text(
    f"""
    {_HISTORY.text}
    UNION ALL
    SELECT customer_id, CAST(NULL AS timestamptz), NULL, NULL, NULL, NULL, NULL, NULL
    FROM outreach.suppressions WHERE customer_id = ANY(CAST(:ids AS text[]))
    """
)
_EXISTING = text(
    """
    SELECT a.rule_id, a.customer_id, a.occurrence FROM outreach.actions a
    JOIN unnest(CAST(:rules AS text[]), CAST(:customers AS text[]), CAST(:occ AS text[]))
        AS t(rule_id, customer_id, occurrence)
      USING (rule_id, customer_id, occurrence)
    """
)
# The batch's rows travel as one JSON array (a row per object, keyed as ``record`` takes
# them): one parameter for the driver to encode, not 23 arrays walked item by item.
_INSERT = text(
    """
    INSERT INTO outreach.actions (id, rule_id, customer_id, occurrence, kind, channel,
        channel_id, audience, priority, status, reason, detail, decided_at, not_before,
        next_attempt_at, subject, body, offer, arm, tier, strategy, baseline, goal)
    SELECT id, rule, customer, occ, kind, channel, channel_id, audience, priority, status,
        reason, detail, decided, not_before, next, subject, body, offer, arm, tier, strategy,
        baseline, goal
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS t(id text, rule text, customer text,
        occ text, kind text, channel text, channel_id text, audience text, priority smallint,
        status text, reason text, detail text, decided timestamptz, not_before timestamptz,
        next timestamptz, subject text, body text, offer jsonb, arm text, tier text,
        strategy text, baseline float8, goal jsonb)
    ON CONFLICT (rule_id, customer_id, occurrence) DO NOTHING
    RETURNING id
    """
)
# The rows and their messages on the actions outbox in one statement: a message for each row
# inserted (a row already there has its own), in the batch's order.
_INSERT_AND_QUEUE = text(
    f"""
    WITH inserted AS ({_INSERT.text}),
    queued AS (
        INSERT INTO outreach.outbox (customer_id, payload, created_at)
        SELECT m.customer, convert_to(m.payload, 'UTF8'), now()
        FROM jsonb_to_recordset(CAST(:messages AS jsonb))
            AS m(id text, n integer, customer text, payload text)
        JOIN inserted USING (id)
        ORDER BY m.n
    )
    SELECT id FROM inserted
    """
)

_HELD = text(
    """
    SELECT id, rule_id, customer_id, kind, channel, priority, audience, arm
    FROM outreach.actions
    WHERE status = 'held' AND customer_id = ANY(CAST(:ids AS text[]))
    ORDER BY customer_id, priority DESC, decided_at
    FOR UPDATE
    """
)
_HOLDING = text(
    """
    SELECT DISTINCT customer_id FROM outreach.actions
    WHERE status = 'held' AND customer_id = ANY(CAST(:ids AS text[]))
    """
)
_BALANCE_DEFERRED = text(
    """
    SELECT id, rule_id, customer_id, kind, channel, priority, audience, arm
    FROM outreach.actions
    WHERE status = 'scheduled' AND reason = 'balance'
      AND customer_id = ANY(CAST(:ids AS text[]))
    ORDER BY customer_id, priority DESC, decided_at
    FOR UPDATE
    """
)
# What a message on the actions stream says of a row (see ``_message``).
AS_PUBLISHED = (
    "id, rule_id, customer_id, occurrence, kind, channel, status, reason, decided_at, "
    "not_before, arm, sent_at, attempts"
)
# The same columns of ``outreach.actions AS a`` (an update joined to a list of values).
A_AS_PUBLISHED = ", ".join(f"a.{c}" for c in AS_PUBLISHED.split(", "))
_REDECIDE = text(
    """
    UPDATE outreach.actions a SET status = v.status,
        -- Released to go out now: the reason it waited stays readable.
        reason = CASE WHEN v.status IN ('pending', 'control') AND v.reason IS NULL THEN a.reason
                      ELSE v.reason END,
        detail = CASE WHEN v.status IN ('pending', 'control') AND v.reason IS NULL THEN a.detail
                      ELSE v.detail END,
        not_before = v.not_before, next_attempt_at = v.next
    FROM unnest(CAST(:ids AS text[]), CAST(:status AS text[]), CAST(:reason AS text[]),
                CAST(:detail AS text[]), CAST(:not_before AS timestamptz[]),
                CAST(:next AS timestamptz[])) AS v(id, status, reason, detail, not_before, next)
    WHERE a.id = v.id
    RETURNING """
    + A_AS_PUBLISHED
)
# Decisions made again, on the actions outbox in the order given.
_REQUEUE = text(
    """
    INSERT INTO outreach.outbox (customer_id, payload, created_at)
    SELECT m.customer, convert_to(m.payload, 'UTF8'), now()
    FROM jsonb_to_recordset(CAST(:messages AS jsonb)) AS m(n integer, customer text, payload text)
    ORDER BY m.n
    """
)


_RELEASE_DEFERRED = text(
    """
    UPDATE outreach.actions SET status = 'pending', next_attempt_at = not_before
    WHERE status = 'scheduled' AND not_before <= :now
    """
)
_ALL_SUPPRESSED = text("SELECT customer_id FROM outreach.suppressions")


async def contact_history(
    conn: AsyncConnection,
    customer_ids: Sequence[str],
    since: datetime | None,
    *,
    excluding: Sequence[str] = (),
) -> dict[str, list[tuple[datetime, str, str]]]:
    """Each customer's contacts decided since ``since`` (None: ever), with their rules'
    control-arm decisions (kind ``control``), leaving out the actions ``excluding`` names
    (those being decided again)."""
    out: dict[str, list[tuple[datetime, str, str]]] = {c: [] for c in customer_ids}
    params = {
        "ids": list(customer_ids),
        "since": since or datetime(1970, 1, 1, tzinfo=UTC),
        "skip": list(excluding),
    }
    for row in await conn.execute(_HISTORY, params):
        out[row.customer_id].append((row.at, row.kind, row.rule_id))
    return out


@dataclass(frozen=True, slots=True)
class WaitingRow:
    """A contact decided to go out later (status ``scheduled``), holding its cap slot."""

    action_id: str
    rule_id: str
    kind: str
    channel: str
    priority: int
    at: datetime


class ContactState(NamedTuple):
    """What deciding for customers needs of the ledger: each one's contact history, who is
    suppressed, and each one's contacts waiting to go out after the instant asked for."""

    history: dict[str, list[tuple[datetime, str, str]]]
    suppressed: set[str]
    waiting: dict[str, list[WaitingRow]]


async def contact_state(
    conn: AsyncConnection,
    customer_ids: Sequence[str],
    since: datetime | None,
    *,
    excluding: Sequence[str] = (),
    waiting_after: datetime | None = None,
) -> ContactState:
    """:func:`contact_history` and :func:`suppressed_among` of these customers, in one
    statement, with (given ``waiting_after``) their contacts waiting to go out after it."""
    history: dict[str, list[tuple[datetime, str, str]]] = {c: [] for c in customer_ids}
    suppressed: set[str] = set()
    waiting: dict[str, list[WaitingRow]] = {}
    params = {
        "ids": list(customer_ids),
        "since": since or datetime(1970, 1, 1, tzinfo=UTC),
        "skip": list(excluding),
    }
    for row in await conn.execute(_CONTACT_STATE, params):
        if row.at is None:
            suppressed.add(row.customer_id)
            continue
        history[row.customer_id].append((row.at, row.kind, row.rule_id))
        holds_slot = row.waits and row.kind not in ("team", CONTROL)
        if holds_slot and waiting_after is not None and row.at > waiting_after:
            waiting.setdefault(row.customer_id, []).append(
                WaitingRow(row.id, row.rule_id, row.kind, row.channel, row.priority, row.at)
            )
    return ContactState(history, suppressed, waiting)


async def suppressed_among(conn: AsyncConnection, customer_ids: Sequence[str]) -> set[str]:
    return set((await conn.execute(_SUPPRESSED, {"ids": list(customer_ids)})).scalars())


async def all_suppressed(conn: AsyncConnection) -> set[str]:
    """Every customer on the suppression list."""
    return set((await conn.execute(_ALL_SUPPRESSED)).scalars())


async def decided_already(
    conn: AsyncConnection, keys: Sequence[tuple[str, str, str]]
) -> set[tuple[str, str, str]]:
    """Which of these (rule, customer, occurrence) the ledger already holds."""
    return {
        (r.rule_id, r.customer_id, r.occurrence)
        for r in await conn.execute(
            _EXISTING,
            {
                "rules": [k[0] for k in keys],
                "customers": [k[1] for k in keys],
                "occ": [k[2] for k in keys],
            },
        )
    }


# For each (rule, customer): the instant of the rule's last decision that counts for its own
# limits (sent, going out, or held out as control), and of the customer's last contact (any
# rule's message, at the instant it went or goes out; team alerts and hold-outs are none).
_LAST_INSTANTS = text(
    f"""
    SELECT t.r AS rule_id, t.c AS customer_id,
        (SELECT max(coalesce(a.sent_at, a.not_before, a.decided_at)) FROM outreach.actions a
         WHERE a.customer_id = t.c AND a.rule_id = t.r
           AND a.status IN ({", ".join(f"'{s}'" for s in (*COUNTING, CONTROL))})) AS own,
        (SELECT max(coalesce(a.sent_at, a.not_before, a.decided_at)) FROM outreach.actions a
         WHERE a.customer_id = t.c AND a.audience = 'customer'
           AND a.status IN ({", ".join(f"'{s}'" for s in COUNTING)})) AS contact
    FROM unnest(CAST(:rules AS text[]), CAST(:customers AS text[])) AS t(r, c)
    """
)


async def last_instants(
    conn: AsyncConnection, pairs: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[datetime | None, datetime | None]]:
    """For each ``(rule_id, customer_id)``: (the rule's last decision for the customer that
    its own limits count, the customer's last contact by any rule), each None when there is
    none."""
    if not pairs:
        return {}
    params = {"rules": [p[0] for p in pairs], "customers": [p[1] for p in pairs]}
    return {
        (r.rule_id, r.customer_id): (r.own, r.contact)
        for r in await conn.execute(_LAST_INSTANTS, params)
    }


# A rule's day is counted under a lock of its own, taken after the customers' (never
# before), so two transactions deciding for the same rule cannot both spend its last slots.
_LOCK_RULE_DAY = text(
    "SELECT pg_advisory_xact_lock(hashtext('outreach.daily_limit'), hashtext(r)) "
    "FROM unnest(CAST(:rules AS text[])) AS r ORDER BY r"
)
# Today's rows of these rules that took a slot of the day: went out or will (sent, due,
# deferred), wait for a complaint to close, or were held out as the control arm.
_SPENT_SINCE = text(
    f"""
    SELECT rule_id, count(*) AS n FROM outreach.actions
    WHERE decided_at >= :since AND decided_at < :until AND rule_id = ANY(CAST(:rules AS text[]))
      AND status IN ({", ".join(f"'{s}'" for s in (*COUNTING, "held", CONTROL))})
    GROUP BY rule_id
    """
)


async def spent_on(
    conn: AsyncConnection, rule_ids: Sequence[str], day: tuple[datetime, datetime], *, lock: bool
) -> dict[str, int]:
    """How many slots of ``day`` (its start and end) these rules have used, counted under
    each rule's lock (held until the transaction ends) when they are to take more; a dry run,
    which takes none, reads without it."""
    rules = sorted(rule_ids)
    if lock:
        await conn.execute(_LOCK_RULE_DAY, {"rules": rules})
    since, until = day
    rows = await conn.execute(_SPENT_SINCE, {"rules": rules, "since": since, "until": until})
    return {r.rule_id: r.n for r in rows}


async def record(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[Recorded]:
    """Insert new ledger rows (a row already there is skipped) and put each on the actions
    outbox; returns the rows inserted. ``offer`` and ``goal`` are JSON text."""
    if not rows:
        return []
    document = orjson.dumps(
        [
            {
                **r,
                "offer": orjson.Fragment(r["offer"]) if r["offer"] is not None else None,
                "goal": orjson.Fragment(r["goal"]) if r["goal"] is not None else None,
            }
            for r in rows
        ]
    )
    messages = orjson.dumps(
        [
            {"id": r["id"], "n": n, "customer": r["customer"], "payload": _message(r)}
            for n, r in enumerate(rows)
        ]
    )
    params = {"rows": document.decode(), "messages": messages.decode()}
    fresh = set((await conn.execute(_INSERT_AND_QUEUE, params)).scalars())
    # The rows as written (the database keeps the values given, so they are not read back).
    return [
        Recorded(r["id"], r["rule"], r["customer"], r["occ"], r["status"], r["reason"])
        for r in rows
        if r["id"] in fresh
    ]


def _message(
    row: dict[str, Any], *, updated_at: datetime | None = None, decided_again: bool = False
) -> str:
    """An action as the actions stream carries it. ``updated_at``: when the row came to say
    what it says now (a first message's: its decision); ``decided_again``: that change is a
    new decision (``decided_again_at``; null on a first message and on delivery's outcomes)."""
    updated_at = updated_at or row["decided"]
    return orjson.dumps(
        {
            "action_id": row["id"],
            "rule_id": row["rule"],
            "customer_id": row["customer"],
            "occurrence": row["occ"],
            "kind": row["kind"],
            "channel": row["channel"],
            "status": row["status"],
            "reason": row["reason"],
            "decided_at": _instant(row["decided"]),
            "not_before": _instant(row["not_before"]),
            "arm": row["arm"],
            "decided_again_at": _instant(updated_at) if decided_again else None,
            "sent_at": _instant(row.get("sent_at")),
            "attempts": row.get("attempts", 0),
            "updated_at": _instant(updated_at),
        }
    ).decode()


def _as_it_stands(r: Any, at: datetime, *, decided_again: bool) -> str:
    """The message of a row as ``AS_PUBLISHED`` reads it, changed at ``at``."""
    return _message(
        {
            "id": r.id,
            "rule": r.rule_id,
            "customer": r.customer_id,
            "occ": r.occurrence,
            "kind": r.kind,
            "channel": r.channel,
            "status": r.status,
            "reason": r.reason,
            "decided": r.decided_at,
            "not_before": r.not_before,
            "arm": r.arm,
            "sent_at": r.sent_at,
            "attempts": r.attempts,
        },
        updated_at=at,
        decided_again=decided_again,
    )


async def _requeue(conn: AsyncConnection, messages: Sequence[tuple[str, str]]) -> None:
    """Put (customer, payload) messages on the actions outbox, in the order given."""
    if messages:
        rows = [{"n": n, "customer": c, "payload": p} for n, (c, p) in enumerate(messages)]
        await conn.execute(_REQUEUE, {"messages": orjson.dumps(rows).decode()})


async def publish_as_they_stand(
    conn: AsyncConnection,
    rows: Sequence[Any],
    at: datetime,
    *,
    decided_again: Set[str] = frozenset(),
) -> None:
    """Put the rows (``AS_PUBLISHED`` reads them) on the actions outbox as they stand at
    ``at``, in the order given: an action that moved (its customer, its occurrence) without
    being decided again, except those in ``decided_again``."""
    await _requeue(
        conn,
        [(r.customer_id, _as_it_stands(r, at, decided_again=r.id in decided_again)) for r in rows],
    )


async def publish_decisions(conn: AsyncConnection, rows: Sequence[Any], at: datetime) -> None:
    """Put the rows' new decisions on the actions outbox (``rows`` as ``AS_PUBLISHED`` reads
    them), so the stream's newest message for an action says what the ledger says."""
    await _requeue(conn, [(r.customer_id, _as_it_stands(r, at, decided_again=True)) for r in rows])


# What delivery writes that the stream carries: the message went out, failed for good, or its
# answer was lost; or the policy, asked again when it came due, suppressed or held it.
DELIVERED = ("sent", "failed", "unknown")
DECIDED_AT_SEND = ("suppressed", "held")


async def publish_outcomes(conn: AsyncConnection, rows: Sequence[Any], at: datetime) -> None:
    """Put what delivery wrote at ``at`` (``rows`` as ``AS_PUBLISHED`` reads them) on the
    actions outbox, in the order given: each action sent, failed or left unknown, and each the
    policy suppressed or held when it came due (a new decision, ``decided_again_at``). A retry
    still to come, or a deferral to the end of quiet hours, is no change of the action's: it
    stays pending, and says nothing."""
    await _requeue(
        conn,
        [
            (r.customer_id, _as_it_stands(r, at, decided_again=r.status in DECIDED_AT_SEND))
            for r in rows
            if r.status in DELIVERED or r.status in DECIDED_AT_SEND
        ],
    )


def _instant(at: datetime | None) -> str | None:
    """An instant as the database gives it back (UTC), in ISO 8601."""
    return at.astimezone(UTC).isoformat() if at is not None else None


async def held_actions(conn: AsyncConnection, customer_ids: Sequence[str]) -> Sequence[Any]:
    """The customers' held actions, locked, best first within each customer."""
    return (await conn.execute(_HELD, {"ids": list(customer_ids)})).all()


async def holding(conn: AsyncConnection, customer_ids: Sequence[str]) -> set[str]:
    """Which of these customers have actions held for an open complaint (nothing locked)."""
    if not customer_ids:
        return set()
    return set((await conn.execute(_HOLDING, {"ids": list(customer_ids)})).scalars())


async def balance_deferred(conn: AsyncConnection, customer_ids: Sequence[str]) -> Sequence[Any]:
    """The customers' promotions deferred for the balance, locked, best first within each
    customer."""
    return (await conn.execute(_BALANCE_DEFERRED, {"ids": list(customer_ids)})).all()


async def redecide(conn: AsyncConnection, columns: dict[str, list[Any]], now: datetime) -> None:
    """Write new decisions over waiting actions: ``ids`` with their ``status``, ``reason``,
    ``detail``, ``not_before`` and ``next`` (attempt), column by column; each goes on the
    actions stream again."""
    rows = (await conn.execute(_REDECIDE, columns)).all()
    order = {action_id: n for n, action_id in enumerate(columns["ids"])}
    await publish_decisions(conn, sorted(rows, key=lambda r: order[r.id]), now)


_EXPIRE_HOLDS = text(
    f"""
    UPDATE outreach.actions SET status = 'suppressed', reason = 'hold_expired',
        detail = 'held for an open complaint longer than the policy allows'
    WHERE status = 'held' AND decided_at < :before
    RETURNING {AS_PUBLISHED}
    """
)


async def expire_holds(conn: AsyncConnection, before: datetime, now: datetime) -> int:
    """Drop the held actions decided before ``before``: a promotion held for a complaint
    that stays open does not go out weeks later (each goes on the actions stream again).
    Returns how many."""
    rows = (await conn.execute(_EXPIRE_HOLDS, {"before": before})).all()
    await publish_decisions(conn, sorted(rows, key=lambda r: (r.decided_at, r.id)), now)
    return len(rows)


async def release_deferred(conn: AsyncConnection, now: datetime) -> int:
    """Deferred actions whose quiet hours are over become pending; returns how many."""
    result = await conn.execute(_RELEASE_DEFERRED, {"now": now})
    return int(result.rowcount)


_SUPPRESS_QUEUED = text(
    f"""
    UPDATE outreach.actions SET status = 'suppressed', reason = 'unsubscribed',
        detail = 'the customer unsubscribed', next_attempt_at = NULL
    WHERE customer_id = :c AND status = ANY(CAST(:queued AS text[])) AND audience = 'customer'
    RETURNING {AS_PUBLISHED}
    """
)
# Actions still to go out: deferred, held, or waiting for delivery.
QUEUED = ("pending", "scheduled", "held")


async def suppress_unsubscribed(conn: AsyncConnection, customer_id: str, now: datetime) -> int:
    """The customer unsubscribed: suppress every action still waiting for them (each goes on
    the actions stream again); how many."""
    params = {"c": customer_id, "queued": list(QUEUED)}
    rows = (await conn.execute(_SUPPRESS_QUEUED, params)).all()
    await publish_decisions(conn, sorted(rows, key=lambda r: (r.decided_at, r.id)), now)
    return len(rows)


_REDATE = text(
    f"""
    UPDATE outreach.actions AS a SET occurrence = t.new
    FROM unnest(CAST(:customers AS text[]), CAST(:old AS text[]), CAST(:new AS text[]))
        AS t(customer_id, old, new)
    WHERE a.customer_id = t.customer_id AND a.occurrence = t.old
      AND a.rule_id = ANY(CAST(:rules AS text[]))
      AND NOT EXISTS (
          SELECT 1 FROM outreach.actions AS b
          WHERE b.rule_id = a.rule_id AND b.customer_id = a.customer_id AND b.occurrence = t.new
      )
    RETURNING {A_AS_PUBLISHED}
    """
)


async def redate_episodes(
    conn: AsyncConnection,
    moved: Sequence[tuple[str, str, str]],
    rule_ids: Sequence[str],
    now: datetime,
) -> int:
    """The stage rules' (``rule_ids``) decisions for each customer's episode ``old`` belong
    to the same episode dated anew, ``new`` (``moved``: (customer, old, new)), so a rule
    that acted once for it does not act again; each re-keyed action goes on the actions
    stream with its new occurrence (not a new decision). Returns how many were re-keyed."""
    if not moved or not rule_ids:
        return 0
    rows = (
        await conn.execute(
            _REDATE,
            {
                "customers": [c for c, _, _ in moved],
                "old": [o for _, o, _ in moved],
                "new": [n for _, _, n in moved],
                "rules": list(rule_ids),
            },
        )
    ).all()
    await publish_as_they_stand(conn, sorted(rows, key=lambda r: (r.decided_at, r.id)), now)
    return len(rows)
