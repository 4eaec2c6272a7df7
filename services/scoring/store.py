"""How scoring reads and writes its tables: whole batches per statement.

Arrays go to PostgreSQL through ``unnest`` so a batch of a thousand customers is one
statement, not a thousand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scoring.card import Card, Population
from services.scoring.lifecycle import Transition
from services.scoring.state import CustomerState
from shared.privacy import anonymous_id, customer_digest, erased_at


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """A customer as stored: their facts, their card and the columns the read API filters
    and sorts on."""

    customer_id: str
    state: bytes
    card: bytes
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
    next_transition_at: datetime | None
    search: str | None

    @classmethod
    def of(cls, state: CustomerState, card: Card, card_json: bytes) -> CustomerRow:
        p = card.profile
        search = " ".join(x for x in (p.name, p.email, p.phone) if x).lower() or None
        return cls(
            customer_id=state.customer_id,
            state=state.to_json(),
            card=card_json,
            stage=card.stage,
            stage_since=card.stage_since,
            tier=card.tier,
            segment=card.rfm.segment if card.rfm else None,
            strategy=card.strategy,
            value_score=card.value_score,
            lifetime_spend=card.value.lifetime_spend,
            clv=card.prediction.clv_365d if card.prediction else None,
            p_alive=card.prediction.p_alive if card.prediction else None,
            last_order_at=card.value.last_order_at,
            next_transition_at=card.next_transition_at,
            search=search[:600] if search else None,
        )


_CLAIM = text(
    """
    INSERT INTO scoring.inbox (event_id, customer_id, applied_at)
    SELECT e, c, now() FROM unnest(CAST(:ids AS text[]), CAST(:customers AS text[])) AS t(e, c)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
    """
)

_LOCK = text(
    """
    SELECT customer_id, state, stage FROM scoring.customers
    WHERE customer_id = ANY(CAST(:ids AS text[]))
    ORDER BY customer_id
    FOR UPDATE
    """
)

_UPSERT = text(
    """
    INSERT INTO scoring.customers AS c (customer_id, state, card, stage, stage_since, tier,
        segment, strategy, value_score, lifetime_spend, clv, p_alive, last_order_at,
        next_transition_at, search, updated_at)
    SELECT id, CAST(st AS jsonb), CAST(cd AS jsonb), sg, ss, ti, se, sr, vs, ls, cl, pa, lo,
        nt, q, now()
    FROM unnest(CAST(:ids AS text[]), CAST(:states AS text[]), CAST(:cards AS text[]),
        CAST(:stages AS text[]), CAST(:since AS date[]), CAST(:tiers AS text[]),
        CAST(:segments AS text[]), CAST(:strategies AS text[]), CAST(:scores AS float8[]),
        CAST(:spend AS numeric[]), CAST(:clv AS float8[]), CAST(:alive AS float8[]),
        CAST(:last_order AS timestamptz[]), CAST(:next AS timestamptz[]),
        CAST(:search AS text[]))
        AS t(id, st, cd, sg, ss, ti, se, sr, vs, ls, cl, pa, lo, nt, q)
    ON CONFLICT (customer_id) DO UPDATE SET
        state = EXCLUDED.state, card = EXCLUDED.card, stage = EXCLUDED.stage,
        stage_since = EXCLUDED.stage_since, tier = EXCLUDED.tier, segment = EXCLUDED.segment,
        strategy = EXCLUDED.strategy, value_score = EXCLUDED.value_score,
        lifetime_spend = EXCLUDED.lifetime_spend, clv = EXCLUDED.clv,
        p_alive = EXCLUDED.p_alive, last_order_at = EXCLUDED.last_order_at,
        next_transition_at = EXCLUDED.next_transition_at, search = EXCLUDED.search,
        updated_at = EXCLUDED.updated_at
    """
)

_CLEAR_HISTORY = text(
    "DELETE FROM scoring.stage_history WHERE customer_id = ANY(CAST(:ids AS text[]))"
)
_ADD_HISTORY = text(
    """
    INSERT INTO scoring.stage_history (customer_id, from_stage, to_stage, at)
    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:froms AS text[]), CAST(:tos AS text[]),
                         CAST(:ats AS date[]))
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
    conn: AsyncConnection, event_ids: Sequence[str], customer_ids: Sequence[str]
) -> set[str]:
    """Record the events in the inbox; returns the ids seen for the first time."""
    result = await conn.execute(_CLAIM, {"ids": list(event_ids), "customers": list(customer_ids)})
    return set(result.scalars())


async def lock(
    conn: AsyncConnection, customer_ids: Iterable[str]
) -> dict[str, tuple[CustomerState, str]]:
    """The stored state and stage of each customer, locked until the transaction ends (rows
    are locked in key order so concurrent batches cannot deadlock)."""
    rows = await conn.execute(_LOCK, {"ids": sorted(set(customer_ids))})
    return {r.customer_id: (CustomerState.from_json(r.state), r.stage) for r in rows}


async def save(conn: AsyncConnection, rows: Sequence[CustomerRow]) -> None:
    if not rows:
        return
    await conn.execute(
        _UPSERT,
        {
            "ids": [r.customer_id for r in rows],
            "states": [r.state.decode() for r in rows],
            "cards": [r.card.decode() for r in rows],
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
        },
    )


async def replace_history(conn: AsyncConnection, history: dict[str, list[Transition]]) -> None:
    """Rewrite the stage history of these customers (their facts changed, so may their past)."""
    if not history:
        return
    await conn.execute(_CLEAR_HISTORY, {"ids": list(history)})
    flat = [(cid, t) for cid, ts in history.items() for t in ts]
    if flat:
        await conn.execute(
            _ADD_HISTORY,
            {
                "ids": [cid for cid, _ in flat],
                "froms": [t.from_stage for _, t in flat],
                "tos": [t.to_stage for _, t in flat],
                "ats": [t.at for _, t in flat],
            },
        )


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
    # Changes not yet relayed carry the card; the erasure change that follows replaces them.
    text("DELETE FROM scoring.outbox WHERE customer_id = :id"),
    # Stage transitions stay for the flow figures, under a label that leads nowhere.
    text("UPDATE scoring.stage_history SET customer_id = :anonymous WHERE customer_id = :id"),
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
