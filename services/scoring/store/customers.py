"""How scoring reads and writes its tables: whole batches per statement.

Arrays go to PostgreSQL through ``unnest`` so a batch of a thousand customers is one
statement, not a thousand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.core.card import Moving, Population, Scored, all_tags
from services.scoring.core.lifecycle import Transition
from services.scoring.core.state import CustomerState, rule_tags
from shared.card import Stage
from shared.privacy import anonymous_id, customer_digest, erased_at


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """A customer as stored: their facts and the columns the read API filters, sorts and
    lists by."""

    customer_id: str
    state: bytes
    name: str | None
    email: str | None
    stage: str
    stage_since: date | None
    tier: str | None
    segment: str | None
    strategy: str | None
    value_score: float
    lifetime_spend: Decimal
    clv: float | None
    p_alive: float | None
    last_order_at: datetime | None
    next_transition_at: datetime | None  # the sweep's due time (stage or membership)
    search: str | None
    tags: list[str]
    member_tier: str | None
    # What time moves on the last card published for the customer (Scored.moving; None:
    # none since the row was written without publishing, by a rebuild).
    published: Moving | None

    @classmethod
    def of(cls, state: CustomerState, card: Scored, published: Moving | None) -> CustomerRow:
        """The row of ``card``; ``published``: what time moves on the last card published
        for the customer (``card.moving`` when this one goes out)."""
        return cls(
            customer_id=state.customer_id,
            state=state.to_json(),
            name=card.name,
            email=card.email,
            stage=card.stage,
            stage_since=card.stage_since,
            tier=card.tier,
            segment=card.segment,
            strategy=card.strategy,
            value_score=card.value_score,
            lifetime_spend=card.lifetime_spend,
            clv=card.clv,
            p_alive=card.p_alive,
            last_order_at=card.last_order_at,
            next_transition_at=card.review_at,
            search=card.search,
            tags=_tags(state),
            member_tier=card.member_tier,
            published=published,
        )


def _tags(state: CustomerState) -> list[str]:
    """The customer's tags as the card shows them: the backend's own (the winning register)
    and those rules set, so the list's ``tag`` filter finds either."""
    entry = state.profile.get("tags")
    value = entry.value if entry is not None else None
    own = [str(t) for t in value] if isinstance(value, list) else []
    return all_tags(own, rule_tags(state))


# The batch's events go as one JSON document (written by orjson, read by PostgreSQL) rather
# than three arrays whose every element the driver would inspect and encode in Python.
# An id remembered from longer ago than the retention (by when ingest received the two
# events) is claimed again: ingest has forgotten it, so it is a new event. So is an event
# forwarded to a merge survivor, once: its copy comes under the survivor it was forwarded to
# (a repeat of the original, under the merged id, is not claimed).
_CLAIM = text(
    """
    INSERT INTO scoring.inbox AS i (event_id, customer_id, applied_at, received_at)
    SELECT DISTINCT ON (e) e, c, now(), r
    FROM json_to_recordset(CAST(:rows AS json)) AS t(e text, c text, r timestamptz)
    ORDER BY e, r
    ON CONFLICT (event_id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
        applied_at = EXCLUDED.applied_at, received_at = EXCLUDED.received_at,
        forwarded_to = NULL
    WHERE i.received_at < EXCLUDED.received_at - CAST(:keep AS interval)
        OR i.forwarded_to = EXCLUDED.customer_id
    RETURNING event_id
    """
)
_PRUNE_INBOX = text("DELETE FROM scoring.inbox WHERE received_at < now() - CAST(:keep AS interval)")


# A customer's stored stage history comes with their row, so the batch can write only what
# changed in it (an in-order purchase appends; only a late event rewrites the past). Facts and
# history come back only when they are not the version the caller already holds (``known``);
# a customer's history is read in one scan (both arrays from it), and only when it is sent.
_LOCK = text(
    """
    SELECT c.customer_id, c.version, c.stage, c.member_tier, c.published_drift,
        c.published_model, (c.version = k.v) IS TRUE AS held,
        CASE WHEN c.version = k.v THEN NULL ELSE c.state END AS state,
        h.ids AS history_ids, h.items AS history
    FROM unnest(CAST(:ids AS text[]), CAST(:known AS bigint[])) AS k(id, v)
    JOIN scoring.customers AS c ON c.customer_id = k.id
    LEFT JOIN LATERAL (
        SELECT array_agg(s.id ORDER BY s.id) AS ids,
            array_agg(s.from_stage || ' ' || s.to_stage || ' ' || s.at ORDER BY s.id) AS items
        FROM scoring.stage_history AS s
        WHERE s.customer_id = c.customer_id AND (c.version = k.v) IS NOT TRUE
    ) AS h ON true
    ORDER BY c.customer_id
    FOR UPDATE OF c
    """
)
# The sweep's: every due customer's facts and history. The history stays in the select list,
# worked out for the rows the limit keeps.
_DUE = text(
    """
    SELECT c.customer_id, c.version, c.stage, c.member_tier, c.published_drift,
        c.published_model, false AS held, c.state,
        (SELECT array_agg(h.id ORDER BY h.id) FROM scoring.stage_history AS h
            WHERE h.customer_id = c.customer_id) AS history_ids,
        (SELECT array_agg(h.from_stage || ' ' || h.to_stage || ' ' || h.at ORDER BY h.id)
            FROM scoring.stage_history AS h WHERE h.customer_id = c.customer_id) AS history
    FROM scoring.customers AS c
    WHERE c.next_transition_at <= :now
    ORDER BY c.next_transition_at
    LIMIT :limit
    FOR UPDATE OF c SKIP LOCKED
    """
)

_UPSERT = text(
    """
    INSERT INTO scoring.customers AS c (customer_id, state, name, email, stage, stage_since,
        tier, segment, strategy, value_score, lifetime_spend, clv, p_alive, last_order_at,
        next_transition_at, search, tags, member_tier, published_drift, published_model,
        updated_at, version)
    SELECT id, CAST(st AS json), nm, em, sg, ss, ti, se, sr, vs, ls, cl, pa, lo, nt, q,
        ARRAY(SELECT json_array_elements_text(CAST(tg AS json))), mt, pb, CAST(pm AS jsonb),
        now(), nextval('scoring.customer_versions')
    FROM unnest(CAST(:ids AS text[]), CAST(:states AS text[]), CAST(:names AS text[]),
        CAST(:emails AS text[]),
        CAST(:stages AS text[]), CAST(:since AS date[]), CAST(:tiers AS text[]),
        CAST(:segments AS text[]), CAST(:strategies AS text[]), CAST(:scores AS float8[]),
        CAST(:spend AS numeric[]), CAST(:clv AS float8[]), CAST(:alive AS float8[]),
        CAST(:last_order AS timestamptz[]), CAST(:next AS timestamptz[]),
        CAST(:search AS text[]), CAST(:tags AS text[]), CAST(:members AS text[]),
        CAST(:published AS bigint[]), CAST(:published_model AS text[]))
        AS t(id, st, nm, em, sg, ss, ti, se, sr, vs, ls, cl, pa, lo, nt, q, tg, mt, pb, pm)
    ON CONFLICT (customer_id) DO UPDATE SET
        state = EXCLUDED.state, name = EXCLUDED.name, email = EXCLUDED.email,
        stage = EXCLUDED.stage,
        stage_since = EXCLUDED.stage_since, tier = EXCLUDED.tier, segment = EXCLUDED.segment,
        strategy = EXCLUDED.strategy, value_score = EXCLUDED.value_score,
        lifetime_spend = EXCLUDED.lifetime_spend, clv = EXCLUDED.clv,
        p_alive = EXCLUDED.p_alive, last_order_at = EXCLUDED.last_order_at,
        next_transition_at = EXCLUDED.next_transition_at, search = EXCLUDED.search,
        tags = EXCLUDED.tags, member_tier = EXCLUDED.member_tier,
        published_drift = EXCLUDED.published_drift,
        published_model = EXCLUDED.published_model,
        updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
    RETURNING customer_id, version
    """
)

_DROP_HISTORY = text("DELETE FROM scoring.stage_history WHERE id = ANY(CAST(:ids AS bigint[]))")
_ADD_HISTORY = text(
    """
    INSERT INTO scoring.stage_history (customer_id, from_stage, to_stage, at)
    SELECT c, f, t, d FROM json_to_recordset(CAST(:rows AS json)) AS r(c text, f text, t text,
        d date)
    RETURNING id, customer_id
    """
)
_ADD_OUTBOX = text(
    """
    INSERT INTO scoring.outbox (customer_id, payload, created_at)
    SELECT c, p, now() FROM unnest(CAST(:customers AS text[]), CAST(:payloads AS bytea[]))
        AS t(c, p)
    """
)


async def claim(
    conn: AsyncConnection,
    event_ids: Sequence[str],
    customer_ids: Sequence[str],
    received_at: Sequence[datetime],
    keep: timedelta,
) -> set[str]:
    """Record the events in the inbox; returns the ids new to it: never seen, or seen only
    from an event received more than ``keep`` before this one."""
    rows = [
        {"e": e, "c": c, "r": r}
        for e, c, r in zip(event_ids, customer_ids, received_at, strict=True)
    ]
    result = await conn.execute(_CLAIM, {"rows": orjson.dumps(rows).decode(), "keep": keep})
    return set(result.scalars())


async def prune_inbox(conn: AsyncConnection, keep: timedelta) -> int:
    """Forget the events received more than ``keep`` ago; returns how many."""
    result = await conn.execute(_PRUNE_INBOX, {"keep": keep})
    return int(result.rowcount)


# A customer's stage transitions as stored, oldest first, each beside its row id.
StoredHistory = list[tuple[int, Transition]]


@dataclass(slots=True)
class Stored:
    """A customer as the batch found them: the row's version, stage and membership tier, and
    their facts and stage history, both None when the caller holds that version already
    (``held``)."""

    version: int
    stage: str
    member_tier: str | None
    published: Moving | None  # what time moves on the last card published for them
    held: bool
    state: CustomerState | None
    history: StoredHistory | None


def _history(row: Row[Any]) -> StoredHistory:
    history: StoredHistory = []
    for row_id, item in zip(row.history_ids or (), row.history or (), strict=True):
        before, after, at = item.split(" ")
        history.append((row_id, Transition(Stage(before), Stage(after), date.fromisoformat(at))))
    return history


def _stored(row: Row[Any]) -> Stored:
    if row.held:
        return Stored(row.version, row.stage, row.member_tier, _published(row), True, None, None)
    state = CustomerState.from_json(row.state)
    return Stored(
        row.version, row.stage, row.member_tier, _published(row), False, state, _history(row)
    )


def _published(row: Row[Any]) -> Moving | None:
    """What time moves on the last card published, as the row keeps it."""
    if row.published_drift is None:
        return None
    return Moving(row.published_drift, tuple(row.published_model or ()))


async def lock(
    conn: AsyncConnection, customer_ids: Iterable[str], known: Mapping[str, int] | None = None
) -> dict[str, Stored]:
    """These customers as stored, locked until the transaction ends (rows are locked in key
    order so concurrent batches cannot deadlock). ``known`` maps customers to the row version
    the caller holds their facts at: those facts are not sent again while still current."""
    ids = sorted(set(customer_ids))
    known = known or {}
    rows = await conn.execute(_LOCK, {"ids": ids, "known": [known.get(cid) for cid in ids]})
    return {r.customer_id: _stored(r) for r in rows}


async def lock_due(conn: AsyncConnection, now: datetime, limit: int) -> dict[str, Stored]:
    """Up to ``limit`` customers whose stage time may have moved by ``now``, most overdue
    first, locked; customers another transaction holds are left for the next round."""
    rows = await conn.execute(_DUE, {"now": now, "limit": limit})
    return {r.customer_id: _stored(r) for r in rows}


async def save(conn: AsyncConnection, rows: Sequence[CustomerRow]) -> dict[str, int]:
    """Write these customers; returns the new row version of each (every write takes a
    fresh number from one sequence, so a version never comes back, not even for a customer
    erased and recreated)."""
    if not rows:
        return {}
    result = await conn.execute(
        _UPSERT,
        {
            "ids": [r.customer_id for r in rows],
            "states": [r.state.decode() for r in rows],
            "names": [r.name for r in rows],
            "emails": [r.email for r in rows],
            "stages": [r.stage for r in rows],
            "since": [r.stage_since for r in rows],
            "tiers": [r.tier for r in rows],
            "segments": [r.segment for r in rows],
            "strategies": [r.strategy for r in rows],
            "scores": [r.value_score for r in rows],
            "spend": [r.lifetime_spend for r in rows],
            "clv": [r.clv for r in rows],
            "alive": [r.p_alive for r in rows],
            "last_order": [r.last_order_at for r in rows],
            "next": [r.next_transition_at for r in rows],
            "search": [r.search for r in rows],
            # As JSON text: a text[][] cannot hold rows of different lengths.
            "tags": [orjson.dumps(r.tags).decode() for r in rows],
            "members": [r.member_tier for r in rows],
            "published": [r.published.drift if r.published else None for r in rows],
            # As JSON text, as the tags: the figures are as many as the card has.
            "published_model": [
                orjson.dumps(r.published.model).decode() if r.published else None for r in rows
            ],
        },
    )
    return {r.customer_id: r.version for r in result}


async def sync_history(
    conn: AsyncConnection, history: Iterable[tuple[str, StoredHistory, list[Transition]]]
) -> dict[str, StoredHistory]:
    """Bring each customer's stored transitions (``(customer, stored, wanted)``) to the wanted
    ones: the rows after the first difference are replaced, a shared past is left alone.
    Returns each customer's history as now stored."""
    dropped: list[int] = []
    added: list[tuple[str, Transition]] = []
    now_stored: dict[str, StoredHistory] = {}
    for cid, stored, wanted in history:
        kept = [t for _, t in stored]
        if kept == wanted[: len(kept)]:  # the common case, compared at C speed
            same = len(kept)
        else:
            same = 0
            for old, new in zip(kept, wanted, strict=False):
                if old != new:
                    break
                same += 1
        now_stored[cid] = stored[:same]
        dropped += [row_id for row_id, _ in stored[same:]]
        added += [(cid, t) for t in wanted[same:]]
    if dropped:
        await conn.execute(_DROP_HISTORY, {"ids": dropped})
    if added:
        # One JSON document, as the claim's (a date is written as its ISO text).
        document = orjson.dumps(
            [{"c": cid, "f": t.from_stage, "t": t.to_stage, "d": t.at} for cid, t in added]
        )
        rows = await conn.execute(_ADD_HISTORY, {"rows": document.decode()})
        # Row ids rise in the order the rows were given: a customer's in their order.
        ids: dict[str, list[int]] = {}
        for row_id, cid in rows.tuples():
            ids.setdefault(cid, []).append(row_id)
        for row_ids in ids.values():
            row_ids.sort(reverse=True)  # popped from the end: smallest first
        for cid, t in added:
            now_stored[cid].append((ids[cid].pop(), t))
    return now_stored


_ALL_STATES = text("SELECT state FROM scoring.customers")
# The refit's: a page of customers with the figures a fit may move.
_PAGE = text(
    """
    SELECT customer_id, state, stage, tier, strategy, segment, member_tier, published_drift,
        published_model
    FROM scoring.customers WHERE customer_id > :after
    ORDER BY customer_id LIMIT :n FOR UPDATE
    """
)
# The outbox stays: its rows are changes the service made and the relay has not published
# yet; a rebuild does not announce the past again, but it must not swallow what is unsent.
_EMPTY = text(
    "TRUNCATE scoring.inbox, scoring.customers, scoring.stage_history, scoring.complaints, "
    "scoring.order_facts"
)


async def all_states(conn: AsyncConnection, chunk: int) -> AsyncIterator[CustomerState]:
    """Every customer's facts, streamed from the database ``chunk`` rows at a time."""
    result = await conn.stream(_ALL_STATES)
    async for rows in result.partitions(chunk):
        for (raw,) in rows:
            yield CustomerState.from_json(raw)


@dataclass(frozen=True, slots=True)
class Standing:
    """A customer's facts and the figures a population fit may move."""

    customer_id: str
    state: CustomerState
    stage: str
    tier: str | None
    strategy: str | None
    segment: str | None
    member_tier: str | None
    published: Moving | None


_HISTORIES = text(
    """
    SELECT customer_id, array_agg(id ORDER BY id) AS history_ids,
        array_agg(from_stage || ' ' || to_stage || ' ' || at ORDER BY id) AS history
    FROM scoring.stage_history WHERE customer_id = ANY(CAST(:ids AS text[]))
    GROUP BY customer_id
    """
)


async def histories(conn: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, StoredHistory]:
    """These customers' stored stage histories (an empty one for a customer without)."""
    ids = sorted(set(customer_ids))
    found = {r.customer_id: _history(r) for r in await conn.execute(_HISTORIES, {"ids": ids})}
    return {cid: found.get(cid, []) for cid in ids}


async def lock_page(conn: AsyncConnection, after: str, limit: int) -> list[Standing]:
    """Up to ``limit`` customers whose id sorts after ``after``, in id order, locked until the
    transaction ends."""
    rows = await conn.execute(_PAGE, {"after": after, "n": limit})
    return [
        Standing(
            r.customer_id,
            CustomerState.from_json(r.state),
            r.stage,
            r.tier,
            r.strategy,
            r.segment,
            r.member_tier,
            _published(r),
        )
        for r in rows
    ]


async def empty(conn: AsyncConnection) -> None:
    """Forget every customer, applied event, stage change, complaint and order fact (the
    population, the erasures and the changes not yet relayed stay)."""
    await conn.execute(_EMPTY)


async def add_outbox(conn: AsyncConnection, items: Sequence[tuple[str, bytes]]) -> None:
    if items:
        await conn.execute(
            _ADD_OUTBOX,
            {"customers": [c for c, _ in items], "payloads": [p for _, p in items]},
        )


@dataclass(frozen=True, slots=True)
class Erasure:
    """A customer to forget, and what they leave behind in the aggregates."""

    customer_id: str
    event_id: str
    erased_at: datetime
    lifetime_spend: Decimal
    orders: int


_FORGET = (
    text("DELETE FROM scoring.customers WHERE customer_id = :id"),
    text("DELETE FROM scoring.inbox WHERE customer_id = :id"),
    text("DELETE FROM scoring.complaints WHERE customer_id = :id"),
    # Changes not yet relayed carry the card; the erasure change that follows replaces them.
    text("DELETE FROM scoring.outbox WHERE customer_id = :id"),
    # Stage transitions and orders stay for the flow figures, under a label that leads
    # nowhere: the orders get the same label (so a churn still finds the spend it lost) and
    # ids numbered in purchase order in place of the shop's own.
    text("UPDATE scoring.stage_history SET customer_id = :anonymous WHERE customer_id = :id"),
    text(
        """
        UPDATE scoring.order_facts AS o SET customer_id = :anonymous, order_id = n.label
        FROM (SELECT order_id,
                  CAST(:anonymous AS text) || '/'
                      || row_number() OVER (ORDER BY at, order_id) AS label
              FROM scoring.order_facts WHERE customer_id = :id) AS n
        WHERE o.customer_id = :id AND o.order_id = n.order_id
        """
    ),
)
_REGISTER = text(
    """
    INSERT INTO scoring.erasures AS e (customer_digest, erased_at, event_id, lifetime_spend,
        orders)
    VALUES (:digest, :at, :event_id, :spend, :orders)
    ON CONFLICT (customer_digest) DO UPDATE SET
        erased_at = greatest(e.erased_at, EXCLUDED.erased_at),
        event_id = EXCLUDED.event_id,
        lifetime_spend = e.lifetime_spend + EXCLUDED.lifetime_spend,
        orders = e.orders + EXCLUDED.orders
    WHERE e.event_id <> EXCLUDED.event_id
    """
)
_DROP_INBOX = text("DELETE FROM scoring.inbox WHERE event_id = ANY(CAST(:ids AS text[]))")


async def erased(conn: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, datetime]:
    """When each of these customers was erased, for those who were."""
    return await erased_at(conn, "scoring", customer_ids)


async def forget(conn: AsyncConnection, erasure: Erasure) -> None:
    """Remove the customer's personal data from every scoring table and register the
    erasure, so that events from before it are dropped from now on."""
    cid = erasure.customer_id
    for statement in _FORGET:
        await conn.execute(statement, {"id": cid, "anonymous": anonymous_id(erasure.event_id)})
    await conn.execute(
        _REGISTER,
        {
            "digest": customer_digest(cid),
            "at": erasure.erased_at,
            "event_id": erasure.event_id,
            "spend": erasure.lifetime_spend,
            "orders": erasure.orders,
        },
    )


async def drop_inbox(conn: AsyncConnection, event_ids: Sequence[str]) -> None:
    """Forget inbox rows of events that were dropped (they name an erased customer)."""
    if event_ids:
        await conn.execute(_DROP_INBOX, {"ids": list(event_ids)})


async def load_population(conn: AsyncConnection) -> Population:
    row = (await conn.execute(text("SELECT params FROM scoring.population WHERE id = 1"))).first()
    return Population.model_validate(row.params) if row else Population()


async def walked_with(conn: AsyncConnection) -> str | None:
    """The fingerprint of what the stored stage histories were last walked with, if any."""
    found = await conn.scalar(text("SELECT walked_with FROM scoring.population WHERE id = 1"))
    return str(found) if found is not None else None


async def set_walked_with(conn: AsyncConnection, fingerprint: str) -> None:
    """Record that every stored stage history was walked with ``fingerprint``."""
    await conn.execute(
        text("UPDATE scoring.population SET walked_with = :f WHERE id = 1"), {"f": fingerprint}
    )


async def save_population(conn: AsyncConnection, population: Population) -> None:
    await conn.execute(
        text(
            """
            INSERT INTO scoring.population (id, params, fitted_at)
            VALUES (1, CAST(:params AS jsonb), now())
            ON CONFLICT (id) DO UPDATE SET params = EXCLUDED.params, fitted_at = now()
            """
        ),
        {"params": population.model_dump_json()},
    )
